"""The monitor's ring receiver on a real loopback socket: slots by seq, duplicates, reordering, the watermark."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest

from latscope.contract import FLAG_DUPLICATE, FLAG_REORDERED, MISSING
from latscope.probe import ring as R
from latscope.probe import timestamping as ts
from latscope.probe import wire
from latscope.probe.clock import RealClock
from latscope.probe.ringloop import run_ring_receiver
from latscope.probe.sender import Interrupted
from latscope.probe.sockets import open_receiver
from latscope.probe.spec import Endpoint, ReceiverSpec

STREAM, NONCE, SLOTS = 7, 0x1234, 16


def packet(seq: int, nonce: int = NONCE) -> bytes:
    return wire.HEADER.pack(wire.MAGIC, wire.VERSION, wire.KIND_DATA, 64, STREAM, nonce, seq, 1000 + seq, 0, 0,
                            0, 0, 0, 0)


def _interrupt(_s: int, _f: object) -> None:
    raise Interrupted("test over")


def wait_for_rx_stamps(sock: socket.socket) -> None:
    """Until a packet arrives with its software receive timestamp (consumed here).

    The kernel turns receive timestamps on for the whole machine through a deferred work item
    (net_enable_timestamp) when the first socket asks while no other socket has them on: packets
    that arrive before that work has run carry none. On a busy machine that can be a while.
    """
    port = sock.getsockname()[1]
    deadline = time.monotonic() + 30
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
        while time.monotonic() < deadline:
            out.sendto(b"warm-up", ("127.0.0.1", port))
            _data, anc, _flags, _addr = sock.recvmsg(2048, 1024)
            if any(level == socket.SOL_SOCKET and kind == ts.SCM_TIMESTAMPING for level, kind, _d in anc):
                return
            time.sleep(0.01)
    raise AssertionError("no receive timestamps after 30 s")


def test_ring_receiver_files_each_packet_under_its_seq(tmp_path: Path) -> None:
    """seq & mask slots, a duplicate flagged once, a reordered one flagged, below the watermark refused as late,
    a stranger counted foreign; the controller's counters follow."""
    path = str(tmp_path / "r.ring")
    R.create_ring(path, R.RECEIVER_COLUMNS, SLOTS)
    ring = R.Ring(path, R.RECEIVER_COLUMNS, SLOTS)
    ring.header[R.H_WATERMARK] = 3
    sock = open_receiver(Endpoint("inet", "127.0.0.1", 0))
    port = sock.getsockname()[1]
    wait_for_rx_stamps(sock)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
        for seq in (20, 21, 21, 19, 2):
            out.sendto(packet(seq), ("127.0.0.1", port))
        out.sendto(packet(22, nonce=99), ("127.0.0.1", port))
    spec = ReceiverSpec(listen=Endpoint("inet", "127.0.0.1", port), stream=STREAM, nonce=NONCE, ring=path,
                        ring_slots=SLOTS)
    old = signal.signal(signal.SIGALRM, _interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        info = run_ring_receiver(spec, sock, RealClock(), ring)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        sock.close()
    h, rx, flags = ring.header, ring.cols["rx_user"], ring.cols["flags"]
    assert (info["received"], info["duplicated"], info["reordered"], info["late"]) == (3, 1, 1, 1)
    assert (h[R.H_DONE], h[R.H_DUPLICATED], h[R.H_REORDERED], h[R.H_LATE], h[R.H_MAX_SEQ]) == (3, 1, 1, 1, 21)
    assert h[R.H_FOREIGN] == 1 and h[R.H_ENDED] == 1
    for seq in (19, 20, 21):
        assert rx[seq & (SLOTS - 1)] != MISSING and ring.cols["rx_sw"][seq & (SLOTS - 1)] != MISSING
    assert flags[21 & 15] == FLAG_DUPLICATE and flags[19 & 15] == FLAG_REORDERED and flags[20 & 15] == 0
    assert rx[2] == MISSING  # the late packet's slot (seq 2 & 15) stays empty
    ring.close()


def test_a_ring_needs_a_power_of_two_and_its_own_size(tmp_path: Path) -> None:
    """create_ring refuses 12 slots; Ring refuses a file of another shape."""
    with pytest.raises(ValueError):
        R.create_ring(str(tmp_path / "a"), R.SENDER_COLUMNS, 12)
    R.create_ring(str(tmp_path / "b"), R.SENDER_COLUMNS, 16)
    with pytest.raises(ValueError):
        R.Ring(str(tmp_path / "b"), R.RECEIVER_COLUMNS, 16)
