"""The receiver over a real loopback socket: foreign packets by reason, duplicates, reordering, the end packet."""

from __future__ import annotations

import socket
import threading

import pytest

from latscope.probe import wire
from latscope.probe.clock import RealClock
from latscope.probe.receiver import SLOT_BYTES, available_memory, run_receiver
from latscope.probe.sockets import open_receiver
from latscope.probe.spec import Endpoint, ReceiverSpec
from latscope.store.samples import FLAG_DUPLICATE, FLAG_REORDERED, MISSING

NONCE = 0x1234_5678_9ABC_DEF0
BASE = 1_795_000_000_000_000_000


def _data(seq: int, stream: int = 9, nonce: int = NONCE, size: int = 64, tx_back: int = 0, tx_ns: int = 0) -> bytes:
    buf = bytearray(size)
    wire.pack_into(buf, kind=wire.KIND_DATA, length=size, stream=stream, nonce=nonce, seq=seq, sched_ns=1000 + seq,
                   wake_ns=2000 + seq, send_ns=3000 + seq, tx_ns=tx_ns, tx_back=tx_back)
    return bytes(buf)


def _hello(count: int = 10, stream: int = 9, nonce: int = NONCE, **extra) -> bytes:
    doc = {"count": count, "period_ns": 1_000_000, "size": 64, "base_time_ns": BASE, **extra}
    return wire.hello_payload(stream, nonce, doc, 64)


@pytest.fixture
def receive():
    """Start a receiver on loopback in a thread; call the returned function with packets to send."""

    def go(packets: list[bytes], count: int | None = 10, stream: int | None = None, end: bool = True,
           memory_bytes: int | None = None):
        sock = open_receiver(Endpoint("inet", "127.0.0.1", 0))
        sock.settimeout(5 if end else 0.5)
        port = sock.getsockname()[1]
        spec = ReceiverSpec(listen=Endpoint("inet", "127.0.0.1", port), stream=stream, count=count,
                            grace_ns=50_000_000, memory_bytes=memory_bytes)
        box = {}
        t = threading.Thread(target=lambda: box.setdefault("res", run_receiver(spec, sock, RealClock())))
        t.start()
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for p in packets:
            tx.sendto(p, ("127.0.0.1", port))
        if end:
            tx.sendto(wire.end_payload(9, NONCE, 10, [], 64), ("127.0.0.1", port))
        t.join(10)
        tx.close()
        sock.close()
        assert not t.is_alive(), "receiver did not stop"
        return box["res"]

    return go


def test_counts_each_kind_of_foreign_packet(receive) -> None:
    """Garbage, truncated, oversized, foreign-version, other-stream, no-nonce and out-of-range packets are foreign."""
    bad_version = bytearray(_data(1))
    bad_version[4] = 1
    packets = [
        _hello(),
        _data(0),
        b"hello world",                       # short
        b"X" * 64,                            # magic
        bytes(bad_version),                   # version (the format before the nonce)
        _data(2)[:40],                        # truncated (short)
        _data(3) + b"\0" * 100,               # oversized: length field says 64
        _data(4, stream=77),                  # another stream
        _data(6, nonce=0),                    # the right stream without the nonce
        _data(50),                            # seq beyond the planned count
        _data(5),
    ]
    res = receive(packets, count=10, stream=9)
    assert res.received == 2
    assert dict(res.foreign) == {"short": 2, "magic": 1, "version": 1, "length": 1, "stream": 1, "nonce": 1,
                                 "seq": 1}
    assert res.rx_user[0] != MISSING and res.rx_user[5] != MISSING
    assert res.rx_user[3] == MISSING and res.rx_user[6] == MISSING
    assert res.sent_reported == 10
    assert res.stop_reason == "end"


def test_duplicates_and_reordering_are_flagged(receive) -> None:
    """A second copy is counted once as duplicate; a packet after a higher seq is reordered."""
    res = receive([_hello(), _data(0), _data(2), _data(1), _data(2), _data(3)])
    assert res.received == 4
    assert res.duplicated == 1 and res.flags[2] & FLAG_DUPLICATE
    assert res.reordered == 1 and res.flags[1] & FLAG_REORDERED
    assert not res.flags[3] & FLAG_REORDERED


def test_kernel_rx_timestamp_precedes_user_time(receive) -> None:
    """Each packet gets a kernel RX timestamp no later than the user-space receive time."""
    res = receive([_hello()] + [_data(i) for i in range(10)])
    for i in range(10):
        assert res.rx_sw[i] != MISSING
        assert res.rx_sw[i] <= res.rx_user[i]
        assert res.sched[i] == 1000 + i and res.send[i] == 3000 + i


def test_carried_tx_timestamps_land_on_earlier_packets(receive) -> None:
    """tx_back/tx_ns in packet k files a TX timestamp under packet k - tx_back."""
    res = receive([_hello(), _data(0), _data(1, tx_back=1, tx_ns=111), _data(3, tx_back=2, tx_ns=222)])
    assert res.tx[0] == 111 and res.tx[1] == 222 and res.tx[3] == MISSING


def test_the_hello_establishes_the_stream_not_the_first_packet(receive) -> None:
    """Without --stream, packets before the hello are foreign (early); the hello's stream and nonce are the run's."""
    forged_first = _data(0, stream=8, nonce=77)
    res = receive([forged_first, _data(0), _hello(), _data(1), _data(2, stream=8, nonce=77)], count=None)
    assert res.stream == 9 and res.received == 1 and res.rx_user[1] != MISSING
    assert dict(res.foreign) == {"early": 2, "stream": 1}


def test_a_later_hello_does_not_replace_the_stream(receive) -> None:
    """A second sender's hello after the first one is counted (other_hello) and changes nothing."""
    res = receive([_hello(), _hello(stream=8, nonce=5, count=1000), _data(0), _data(1)], count=None)
    assert res.stream == 9 and res.count == 10 and res.received == 2
    assert dict(res.foreign) == {"other_hello": 1}


def test_count_learned_from_the_hello(receive) -> None:
    """A receiver not told the count learns it from the checked hello and allocates once."""
    res = receive([_hello(count=10)] + [_data(i) for i in range(10)], count=None)
    assert res.count == 10 and res.capacity == 10 and res.received == 10


def test_memory_comes_from_the_budget_not_the_hello(receive) -> None:
    """A hello that plans 20,000,000 packets gets the slots the memory budget allows; the rest is refused."""
    budget = 100 * SLOT_BYTES
    res = receive([_hello(count=20_000_000)] + [_data(i) for i in (0, 99, 100, 5000)], count=None, end=False,
                  memory_bytes=budget)
    assert res.count == 20_000_000 and res.capacity == 100
    assert res.received == 2 and res.info["refused"] == 2
    assert not res.foreign


def test_available_memory_reads_meminfo(tmp_path) -> None:
    """MemAvailable is read in kB; an unreadable or odd file is "unknown", not a crash."""
    f = tmp_path / "meminfo"
    f.write_text("MemTotal:  1000 kB\nMemAvailable:    2048 kB\n")
    assert available_memory(str(f)) == 2048 * 1024
    f.write_text("MemAvailable: lots\n")
    assert available_memory(str(f)) is None
    assert available_memory(str(tmp_path / "absent")) is None
