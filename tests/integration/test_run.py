"""`latscope run` end to end as root: veth namespaces, counts, loss, garbage, signals, cleanup."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from latscope.probe import wire
from latscope.store.layout import ResultsStore
from tests.conftest import BIN
from tests.integration.netutil import namespaces_of, nft_drop_seq_range
from tests.integration.runwatch import RECEIVED, SENT, counters, wait_for_packets, wait_for_progress

pytestmark = [pytest.mark.root, pytest.mark.slow]

STAT_KEYS = {"min", "avg", "max", "stddev", "p50", "p90", "p99", "p999", "p9999"}


def test_run_3000_packets_json(latscope, results: Path) -> None:
    """`run --count 3000 --json` over veth receives all 3000 packets and keeps the JSON contract."""
    r = latscope("run", "--count", "3000", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["packets"] == {"sent": 3000, "received": 3000, "lost": 0, "duplicated": 0, "reordered": 0,
                              "foreign": 0}
    for key in ("latency_us", "delta_us", "wakeup_latency_us", "arrival_latency_us"):
        assert STAT_KEYS <= set(doc[key]), key
    lat, delta = doc["latency_us"], doc["delta_us"]
    # Generous sanity bounds only: a veth hop takes microseconds, not seconds.
    assert 0 < lat["min"] <= lat["p50"] <= lat["p99"] <= lat["max"] < 1_000_000
    assert 900 < delta["avg"] < 1100
    assert doc["config"]["topology"] == "veth" and doc["config"]["count"] == 3000
    env = doc["environment"]["before"]
    assert env["kernel"]["release"] == os.uname().release and "preempt_model" in env["kernel"]
    assert doc["environment"]["workers"]["receiver"]["policy"] == "SCHED_OTHER"
    assert doc["completeness"]["missing_rx_timestamps"] == 0
    assert doc["completeness"]["missing_tx_timestamps"] == 0
    # veth has no hardware timestamping: recorded, never fatal.
    for half in ("sender", "receiver"):
        assert doc["capture"][half]["hw_timestamping"]["state"].startswith("software only")
    run_dir = Path(doc["path"])
    # The samples, run.json, and the host's steal time sampled during the run (env/steal.py).
    assert sorted(p.name for p in run_dir.iterdir()) == ["run.json", "samples.parquet", "steal.parquet"]
    assert not [p for p in results.iterdir() if p.name.startswith(".")], "staging left behind"


def test_text_summary_shape_and_show(latscope) -> None:
    """The text summary keeps the classic three lines; `show` recomputes the same numbers from disk."""
    r = latscope("run", "--count", "500", "--period", "500us", "--name", "shape", "--tag", "t1")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "Total: 500 packets (~= 250milliseconds)"
    assert lines[1].startswith("  latency min/avg/max/stddev (usec): ")
    assert len(lines[1].split(": ")[1].split("/")) == 4
    assert all(len(x.split(".")[1]) == 3 for x in lines[1].split(": ")[1].split("/"))
    assert lines[2].startswith("  delta min/avg/max/stdev (usec): ")
    assert any(l.startswith("  latency p50/p90/p99/p99.9/p99.99 (usec): ") for l in lines)
    assert any(l.startswith("  packets: sent 500, received 500, lost 0") for l in lines)
    run_id = lines[-1].split("run: ")[1]
    show = latscope("show", "shape")
    assert show.returncode == 0, show.stderr
    assert show.stdout.splitlines()[1:4] == lines[0:3]
    assert run_id in show.stdout
    ls = latscope("ls", "--json")
    rows = json.loads(ls.stdout)["runs"]
    assert [r["run_id"] for r in rows] == [run_id] and rows[0]["tags"] == ["t1"]


@pytest.mark.parametrize("args", [["--ipv6"], ["--l2"], ["--l2", "--vid", "5", "--pcp", "3"],
                                  ["--topology", "loopback"], ["--topology", "loopback", "--l2"]])
def test_modes_receive_everything(latscope, args: list[str]) -> None:
    """IPv6, raw Ethernet (with and without a VLAN tag) and loopback each deliver every packet."""
    r = latscope("run", "--count", "400", "--period", "250us", "--json", *args)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["packets"]["received"] == 400 and doc["packets"]["foreign"] == 0
    assert doc["completeness"]["missing_tx_timestamps"] == 0


def test_rt_knobs_are_recorded(latscope) -> None:
    """--cpu-*/--prio-* are applied and the scheduling actually in force is stored with the run."""
    r = latscope("run", "--count", "300", "--period", "500us", "--cpu-send", "0", "--cpu-recv", "1",
                 "--prio-send", "70", "--prio-recv", "71", "--spin", "20us", "--cpu-dma-latency", "0", "--json")
    assert r.returncode == 0, r.stderr
    w = json.loads(r.stdout)["environment"]["workers"]
    assert w["sender"]["policy"] == "SCHED_FIFO" and w["sender"]["priority"] == 70
    assert w["sender"]["affinity"] == [0] and w["receiver"]["affinity"] == [1]
    assert w["receiver"]["priority"] == 71 and w["sender"]["mlock"] is True
    assert json.loads(r.stdout)["capture"]["cpu_dma_latency"] == {"requested": 0, "held": True}


def test_exact_loss_under_nftables_drop(results: Path) -> None:
    """Packets dropped by an nftables rule in the receiver's namespace are counted exactly as lost."""
    port = 48_000 + random.randrange(500)
    base = time.clock_gettime_ns(time.CLOCK_REALTIME) + 4_000_000_000
    env = {**os.environ, "LATSCOPE_RESULTS": str(results)}
    proc = subprocess.Popen([str(BIN / "latscope"), "run", "--count", "1000", "--period", "500us", "--port",
                             str(port), "--base-time", str(base), "--json"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # The progress counters appear once the topology is up, before the receiver starts.
        progress = wait_for_progress(results, proc)
        nft_drop_seq_range(f"latscope-{proc.pid}-rx", port, 100, 149)
        # The rule must be in place before seq 100 leaves (the base time leaves seconds for it).
        assert counters(progress)[SENT] < 100, "the sender got to seq 100 before the drop rule was in place"
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    doc = json.loads(out)
    assert doc["packets"]["lost"] == 50
    assert doc["packets"]["received"] == 950
    samples = ResultsStore(results).resolve(doc["run_id"]).samples(["seq", "flags"])
    lost = [int(s) for s, f in zip(samples["seq"], samples["flags"], strict=True) if f & 1]
    assert lost == list(range(100, 150))


def _inject_garbage(port: int, n_rounds: int, mid_run: Callable[[], bool]) -> dict[str, int]:
    """Send every kind of foreign packet to the receiver's port while ``mid_run()`` says the run goes on."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    good = bytearray(64)
    wire.pack_into(good, kind=wire.KIND_DATA, length=64, stream=12345, nonce=1, seq=3)
    wrong_version = bytearray(good)
    wrong_version[4] = 7
    kinds = {
        "random": lambda: os.urandom(random.randrange(1, 200)),
        "truncated": lambda: bytes(good[:30]),
        "oversized": lambda: bytes(good) + b"\0" * 1000,
        "version": lambda: bytes(wrong_version),
        "stream": lambda: bytes(good),
    }
    sent = dict.fromkeys(kinds, 0)
    for _ in range(n_rounds):
        if not mid_run():
            break
        for k, make in kinds.items():
            s.sendto(make(), ("127.0.0.1", port))
            sent[k] += 1
        time.sleep(0.01)
    s.close()
    return sent


def test_garbage_mid_run_is_counted_and_ignored(results: Path) -> None:
    """Garbage, truncated, oversized, foreign-version and foreign-stream packets are foreign; the run is intact."""
    port = 48_500 + random.randrange(500)
    env = {**os.environ, "LATSCOPE_RESULTS": str(results)}
    proc = subprocess.Popen([str(BIN / "latscope"), "run", "--topology", "loopback", "--count", "2000",
                             "--period", "1ms", "--port", str(port), "--json"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # Once the first packet is in, the receiver listens; loopback queues a datagram on the socket
        # before sendto returns, so garbage sent while fewer than 1500 packets are in is read mid-run.
        progress = wait_for_progress(results, proc)
        wait_for_packets(results, proc, 1)
        sent = _inject_garbage(port, 40, lambda: counters(progress)[RECEIVED] < 1500)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    doc = json.loads(out)
    assert doc["packets"]["received"] == 2000 and doc["packets"]["lost"] == 0
    assert doc["packets"]["foreign"] == sum(sent.values()) > 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_run_saves_what_was_measured(results: Path, sig: int) -> None:
    """Ctrl-C or SIGTERM mid-run: the partial run is saved and summarised, namespaces go, exit is non-zero."""
    env = {**os.environ, "LATSCOPE_RESULTS": str(results)}
    proc = subprocess.Popen([str(BIN / "latscope"), "run", "--count", "20000", "--period", "1ms"], env=env,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_packets(results, proc, 500)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err
    assert "interrupted" in err
    assert out.startswith("Total: ")
    runs, _ = ResultsStore(results).runs()
    assert len(runs) == 1 and runs[0].record.status == "interrupted"
    pk = runs[0].record.summary["packets"]
    assert 500 <= pk["received"] < 20000 and pk["lost"] <= 2
    assert namespaces_of(proc.pid) == []


def test_stream_log_writes_a_line_per_packet(latscope) -> None:
    """--stream-log leaves one line per packet from each half in the run directory."""
    r = latscope("run", "--count", "300", "--period", "500us", "--stream-log", "--json")
    assert r.returncode == 0, r.stderr
    run_dir = Path(json.loads(r.stdout)["path"])
    sent = (run_dir / "stream-sender.log").read_text().splitlines()
    got = (run_dir / "stream-receiver.log").read_text().splitlines()
    assert len(sent) == 300 and len(got) == 300
    assert [int(l.split()[0]) for l in sent] == list(range(300))
