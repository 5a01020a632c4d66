"""Real irtt and sockperf output, made here by the tools, imported through the CLI and used by other verbs.

Loopback tests need no root. The namespace tests put the servers behind a
veth pair in namespaces they create (198.18.0.0/15) and drop packets with
nftables, so loss is real and known in both directions. Every server is
killed by PID in a finally block; runs are bounded (about a second each).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (shutil.which("irtt") and shutil.which("sockperf")),
                                 reason="irtt and sockperf (Debian packages) are needed")]


def free_udp_port() -> int:
    """A UDP port nothing listens on right now (the tools cannot be given port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _in_ns(netns: str | None, cmd: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *cmd] if netns else list(cmd)


def wait_udp_listening(port: int, netns: str | None = None, timeout_s: float = 10.0) -> None:
    """Block until a socket listens on UDP ``port`` (in ``netns``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = subprocess.run(_in_ns(netns, ["ss", "-Hlun", f"sport = :{port}"]), capture_output=True,
                             text=True).stdout
        if out.strip():
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on udp port {port}")


#: The PIDs of every server these tests started.
STARTED: list[int] = []


@contextmanager
def server(cmd: Sequence[str], port: int, netns: str | None = None) -> Iterator[subprocess.Popen]:
    """Run a server until the block ends; killed by its PID whatever happens."""
    proc = subprocess.Popen(_in_ns(netns, cmd), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    STARTED.append(proc.pid)
    try:
        wait_udp_listening(port, netns)
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


def record_irtt(out: Path, addr: str, port: int, *extra: str, netns_client: str | None = None,
                netns_server: str | None = None, interval: str = "10ms", duration: str = "1s") -> Path:
    """irtt client output (JSON, not gzipped) of a short test against a fresh server."""
    with server(["irtt", "server", "-i", "1ms", "-b", f"{addr}:{port}"], port, netns_server):
        subprocess.run(_in_ns(netns_client, ["irtt", "client", "-Q", "-i", interval, "-d", duration, *extra,
                                             "-o", str(out), f"{addr}:{port}"]),
                       check=True, capture_output=True, timeout=30)
    return out


def record_sockperf(out: Path, addr: str, port: int, mode: str = "ping-pong", *extra: str,
                    netns_client: str | None = None, netns_server: str | None = None) -> Path:
    """sockperf --full-log of a one-second test at 1000 messages per second."""
    with server(["sockperf", "server", "-i", addr, "-p", str(port)], port, netns_server):
        subprocess.run(_in_ns(netns_client, ["sockperf", mode, "-i", addr, "-p", str(port), "-t", "1",
                                             "--mps", "1000", *extra, "--full-log", str(out)]),
                       check=True, capture_output=True, timeout=30)
    return out


def _import(latscope, kind: str, path: Path, name: str, *extra: str) -> dict:
    r = latscope("import", kind, str(path), "--name", name, "--json", *extra)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_irtt_loopback_one_way(latscope, tmp_path: Path) -> None:
    """A fresh irtt run imports as one-way latency equal to irtt's send delays, and show/ls/sql see it."""
    path = record_irtt(tmp_path / "irtt.json", "127.0.0.1", free_udp_port())
    doc = _import(latscope, "irtt", path, "irtt-lo", "--tag", "lo")
    src = doc["source"]
    assert src["kind"] == "imported" and src["tool"] == "irtt" and src["metric"] == "one-way latency"
    raw = json.loads(path.read_text())
    send_delays = np.array([rt["delay"]["send"] for rt in raw["round_trips"] if "send" in rt["delay"]])
    assert doc["packets"]["received"] == len(send_delays) and doc["packets"]["sent"] == len(raw["round_trips"])
    assert doc["latency_us"]["max"] == round(send_delays.max() / 1000, 3)
    assert doc["latency_us"]["min"] == round(send_delays.min() / 1000, 3)
    show = latscope("show", "irtt-lo", "--json")
    assert show.returncode == 0, show.stderr
    assert json.loads(show.stdout)["latency_us"]["max"] == doc["latency_us"]["max"]
    ls = latscope("ls", "--where", "tool=irtt", "-q")
    assert ls.stdout.split() == [doc["run_id"]]
    q = latscope("sql", "SELECT max(latency_ns) AS m FROM samples", "--json")
    assert json.loads(q.stdout)["rows"] == [{"m": int(send_delays.max())}]


def test_irtt_gzip_and_half_rtt(latscope, tmp_path: Path) -> None:
    """irtt's default gzipped output imports; --metric half-rtt stores RTT/2 and says round-trip."""
    record_irtt(tmp_path / "irtt-default", "127.0.0.1", free_udp_port(), duration="500ms")
    gz = tmp_path / "irtt-default.json.gz"
    assert gz.exists() and gz.read_bytes()[:2] == b"\x1f\x8b"
    doc = _import(latscope, "irtt", gz, "irtt-half", "--metric", "half-rtt")
    assert doc["source"]["metric"] == "round-trip" and doc["source"]["irtt_metric"] == "half-rtt"
    assert doc["source"]["gzipped"] is True
    import gzip

    rtts = [rt["delay"]["rtt"] for rt in json.loads(gzip.decompress(gz.read_bytes()))["round_trips"]
            if "rtt" in rt["delay"]]
    assert doc["latency_us"]["max"] == round(max(rtts) // 2 / 1000, 3)


def test_sockperf_loopback(latscope, tmp_path: Path) -> None:
    """A fresh sockperf --full-log imports as RTT/2, with sockperf's own average, and works with show."""
    path = record_sockperf(tmp_path / "sp.csv", "127.0.0.1", free_udp_port())
    doc = _import(latscope, "sockperf", path, "sp-lo")
    assert doc["source"]["metric"] == "round-trip" and doc["source"]["sockperf_metric"] == "half-rtt"
    text = path.read_text()
    logged = [line for line in text.splitlines() if line[:1].isdigit() and line.count(",") == 3]
    assert doc["packets"]["received"] == len(logged) > 100
    import re

    reported = float(re.search(r"avg-latency=([\d.]+)", text).group(1))
    assert abs(doc["latency_us"]["avg"] - reported) < 0.002
    assert latscope("show", "sp-lo").returncode == 0


def test_sockperf_full_rtt(latscope, tmp_path: Path) -> None:
    """A --full-rtt log with --metric rtt gives sockperf's RTT column as latency."""
    path = record_sockperf(tmp_path / "sp-rtt.csv", "127.0.0.1", free_udp_port(), "ping-pong", "--full-rtt")
    doc = _import(latscope, "sockperf", path, "sp-rtt", "--metric", "rtt")
    rtts = [float(line.split(",")[3]) for line in path.read_text().splitlines()
            if line[:1].isdigit() and line.count(",") == 3]
    assert abs(doc["latency_us"]["max"] - max(rtts)) <= 0.002
    assert doc["source"]["log_unit"] == "rtt"


@contextmanager
def lossy_veth(ports: Sequence[int], percent: int = 5) -> Iterator[tuple[str, str, str]]:
    """(client netns, server netns, server address) joined by a veth, dropping ``percent`` % each way."""
    from latscope.topo.veth import veth_pair

    with veth_pair() as topo:
        tx, rx = topo.sender, topo.receiver
        plist = ", ".join(map(str, ports))
        for ns, match in ((rx.netns, f"udp dport {{ {plist} }}"), (tx.netns, f"udp sport {{ {plist} }}")):
            rules = ("table inet latscope_import_test {\n chain input { type filter hook input priority 0; "
                     f"policy accept;\n  {match} numgen random mod 100 < {percent} counter drop\n }}\n}}\n")
            subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=rules, text=True, check=True,
                           capture_output=True)
        yield tx.netns, rx.netns, rx.address4


@pytest.mark.root
def test_irtt_with_loss_in_namespaces(latscope, tmp_path: Path) -> None:
    """Across a lossy veth, upstream loss is lost in one-way, downstream loss in one-way-down, both in half-rtt."""
    with lossy_veth([2112]) as (cns, sns, addr):
        path = record_irtt(tmp_path / "irtt-loss.json", addr, 2112, netns_client=cns, netns_server=sns,
                           interval="5ms")
    trips = json.loads(path.read_text())["round_trips"]
    up = sum(rt["lost"] in ("true", "true_up") for rt in trips)
    down = sum(rt["lost"] == "true_down" for rt in trips)
    assert up + down > 0, "the drop rules dropped nothing"
    one = _import(latscope, "irtt", path, "up")
    assert one["packets"]["lost"] == up and one["completeness"]["missing_rx_timestamps"] == down
    back = _import(latscope, "irtt", path, "down", "--metric", "one-way-down")
    assert back["packets"]["lost"] == down
    both = _import(latscope, "irtt", path, "rt", "--metric", "half-rtt")
    assert both["packets"]["lost"] == up + down


@pytest.mark.root
def test_sockperf_with_loss_in_namespaces(latscope, tmp_path: Path) -> None:
    """Across a lossy veth, sockperf's dropped count becomes the run's lost packets, and check sees it."""
    with lossy_veth([11111]) as (cns, sns, addr):
        path = record_sockperf(tmp_path / "sp-loss.csv", addr, 11111, "under-load", "--reply-every", "1",
                               netns_client=cns, netns_server=sns)
    import re

    dropped = int(re.search(r"# dropped messages = (\d+)", path.read_text()).group(1))
    assert dropped > 0
    doc = _import(latscope, "sockperf", path, "sp-loss")
    assert doc["packets"]["lost"] == dropped
    assert latscope("show", "sp-loss").returncode == 0


def test_no_stray_servers_left() -> None:
    """The servers these tests started are gone (each was killed by PID and reaped).

    Only these PIDs: other tests of the same pytest process (an xdist worker runs many files) may have
    children of their own right now.
    """
    if not STARTED:
        pytest.skip("no test of this file started a server in this session")
    assert [pid for pid in STARTED if os.path.exists(f"/proc/{pid}")] == []
