"""`latscope send` and `recv` as two hosts: two namespaces the test builds, one veth between them."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from latscope.topo.veth import RECEIVER_ADDR4, veth_pair
from tests.conftest import BIN
from tests.integration.netutil import nft_drop_seq_range, nft_dropped

pytestmark = [pytest.mark.root, pytest.mark.slow]


def _start_recv(results: Path, netns: str, port: int, *extra: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([str(BIN / "latscope"), "recv", "--netns", netns, "--port", str(port), "--json",
                             "--results", str(results), *extra], text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stderr is not None
    line = proc.stderr.readline()  # "latscope: listening on ..." once the socket is bound
    assert "listening" in line, line
    return proc


def test_two_hosts_with_exact_loss(results: Path) -> None:
    """The receiver stores the run with the sender's parameters from the packets; drops count exactly."""
    port = 48_700
    with veth_pair() as path:
        nft_drop_seq_range(path.receiver.netns, port, 300, 309)
        recv = _start_recv(results, path.receiver.netns, port)
        try:
            send = subprocess.run([str(BIN / "latscope"), "send", "--netns", path.sender.netns, "--dest",
                                   f"{RECEIVER_ADDR4}:{port}", "--count", "1500", "--period", "400us",
                                   "--name", "from-tx", "--tag", "two-host", "--json"],
                                  capture_output=True, text=True, timeout=60)
            out, err = recv.communicate(timeout=30)
        finally:
            if recv.poll() is None:
                recv.kill()
        dropped = nft_dropped(path.receiver.netns)
    assert send.returncode == 0, send.stderr
    assert json.loads(send.stdout)["sent"] == 1500
    assert recv.returncode == 0, err
    doc = json.loads(out)
    assert dropped == 10
    assert doc["packets"]["sent"] == 1500 and doc["packets"]["lost"] == 10 and doc["packets"]["received"] == 1490
    assert doc["status"] == "complete"
    assert doc["name"] == "from-tx" and doc["tags"] == ["two-host"]
    assert doc["config"]["period_ns"] == 400_000 and doc["config"]["count"] == 1500
    assert doc["config"]["sender"]["host"] == os.uname().nodename
    # A TX timestamp travels in the next packet: only seq 299's went down with dropped seq 300.
    assert doc["completeness"]["missing_tx_timestamps"] == 1
    assert doc["latency_us"]["count"] == 1490


def test_recv_timeout_without_sender(results: Path) -> None:
    """A receiver that never hears a sender gives up after --timeout with an error and stores nothing."""
    with veth_pair() as path:
        t0 = time.monotonic()
        r = subprocess.run([str(BIN / "latscope"), "recv", "--netns", path.receiver.netns, "--timeout", "1s",
                            "--results", str(results), "-q"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "no packets" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert time.monotonic() - t0 < 30
    assert list(results.iterdir()) == []


def test_l2_send_recv_with_vlan_filter(results: Path) -> None:
    """Raw Ethernet between hosts: a receiver filtering on VLAN 7 counts VLAN 5 frames as foreign."""
    with veth_pair() as path:
        recv = _start_recv(results, path.receiver.netns, 1, "--l2", "--iface", path.receiver.ifname or "",
                           "--vid", "7", "--idle-timeout", "1s")
        try:
            for vid, n in (("5", 30), ("7", 200)):
                send = subprocess.run([str(BIN / "latscope"), "send", "--netns", path.sender.netns, "--l2",
                                       "--iface", path.sender.ifname or "", "--dest", path.receiver.mac or "",
                                       "--vid", vid, "--pcp", "2", "--count", str(n), "--period", "500us"],
                                      capture_output=True, text=True, timeout=60)
                assert send.returncode == 0, send.stderr
            out, err = recv.communicate(timeout=30)
        finally:
            if recv.poll() is None:
                recv.kill()
    assert recv.returncode == 0, err
    doc = json.loads(out)
    assert doc["packets"]["received"] == 200
    # 30 data frames, their 3 hellos and 3 end frames came tagged with the wrong VLAN.
    assert doc["packets"]["foreign"] == 36
