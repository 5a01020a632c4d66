"""The receiver's accounting: foreign packets by reason, duplicates, reordering, the end packet."""

from __future__ import annotations

import socket
import threading

import pytest

from latscope.probe import wire
from latscope.probe.clock import RealClock
from latscope.probe.receiver import run_receiver
from latscope.probe.sockets import open_receiver
from latscope.probe.spec import Endpoint, ReceiverSpec
from latscope.store.samples import FLAG_DUPLICATE, FLAG_REORDERED, MISSING


def _data(seq: int, stream: int = 9, count: int = 10, size: int = 64, tx_back: int = 0, tx_ns: int = 0) -> bytes:
    buf = bytearray(size)
    wire.pack_into(buf, kind=wire.KIND_DATA, length=size, stream=stream, seq=seq, sched_ns=1000 + seq,
                   wake_ns=2000 + seq, send_ns=3000 + seq, period_ns=1000, count=count, tx_ns=tx_ns,
                   tx_back=tx_back)
    return bytes(buf)


@pytest.fixture
def receive():
    """Start a receiver on loopback in a thread; call the returned function with packets to send."""

    def go(packets: list[bytes], count: int | None = 10, stream: int | None = None):
        sock = open_receiver(Endpoint("inet", "127.0.0.1", 0))
        port = sock.getsockname()[1]
        spec = ReceiverSpec(listen=Endpoint("inet", "127.0.0.1", port), stream=stream, count=count,
                            grace_ns=50_000_000)
        box = {}
        t = threading.Thread(target=lambda: box.setdefault("res", run_receiver(spec, sock, RealClock())))
        t.start()
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for p in packets:
            tx.sendto(p, ("127.0.0.1", port))
        tx.sendto(wire.end_payload(stream if stream is not None else 9, count or 10, [], 64), ("127.0.0.1", port))
        t.join(10)
        tx.close()
        sock.close()
        assert not t.is_alive(), "receiver did not stop after the end packet"
        return box["res"]

    return go


def test_counts_each_kind_of_foreign_packet(receive) -> None:
    """Garbage, truncated, oversized, foreign-version, other-stream and out-of-range packets are foreign."""
    bad_version = bytearray(_data(1))
    bad_version[4] = 2
    packets = [
        _data(0),
        b"hello world",                       # short
        b"X" * 64,                            # magic
        bytes(bad_version),                   # version
        _data(2)[:40],                        # truncated (short)
        _data(3) + b"\0" * 100,               # oversized: length field says 64
        _data(4, stream=77),                  # another stream
        _data(50),                            # seq beyond the planned count
        _data(5),
    ]
    res = receive(packets, count=10, stream=9)
    assert res.received == 2
    assert dict(res.foreign) == {"short": 2, "magic": 1, "version": 1, "length": 1, "stream": 1, "seq": 1}
    assert res.rx_user[0] != MISSING and res.rx_user[5] != MISSING
    assert res.rx_user[3] == MISSING
    assert res.sent_reported == 10
    assert res.stop_reason == "end"


def test_duplicates_and_reordering_are_flagged(receive) -> None:
    """A second copy is counted once as duplicate; a packet after a higher seq is reordered."""
    res = receive([_data(0), _data(2), _data(1), _data(2), _data(3)])
    assert res.received == 4
    assert res.duplicated == 1 and res.flags[2] & FLAG_DUPLICATE
    assert res.reordered == 1 and res.flags[1] & FLAG_REORDERED
    assert not res.flags[3] & FLAG_REORDERED


def test_kernel_rx_timestamp_precedes_user_time(receive) -> None:
    """Each packet gets a kernel RX timestamp no later than the user-space receive time."""
    res = receive([_data(i) for i in range(10)])
    for i in range(10):
        assert res.rx_sw[i] != MISSING
        assert res.rx_sw[i] <= res.rx_user[i]
        assert res.sched[i] == 1000 + i and res.send[i] == 3000 + i


def test_carried_tx_timestamps_land_on_earlier_packets(receive) -> None:
    """tx_back/tx_ns in packet k files a TX timestamp under packet k - tx_back."""
    res = receive([_data(0), _data(1, tx_back=1, tx_ns=111), _data(3, tx_back=2, tx_ns=222)])
    assert res.tx[0] == 111 and res.tx[1] == 222 and res.tx[3] == MISSING


def test_first_stream_seen_is_adopted(receive) -> None:
    """Without a stream id, the first valid packet's stream is the run's; others are foreign."""
    res = receive([_data(0, stream=9), _data(1, stream=8)], stream=None)
    assert res.stream == 9 and res.received == 1 and res.foreign["stream"] == 1


def test_count_learned_from_packets(receive) -> None:
    """A receiver not told the count learns it from the header and allocates once."""
    res = receive([_data(i, count=10) for i in range(10)], count=None)
    assert res.count == 10 and res.capacity == 10 and res.received == 10
