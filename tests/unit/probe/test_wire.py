"""The probe packet format: round trips, validation, and a parser that never crashes."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from latscope.probe import wire


def _data_packet(size: int = 64, **kw) -> bytearray:
    buf = bytearray(size)
    fields = dict(kind=wire.KIND_DATA, length=size, stream=42, seq=7, sched_ns=1, wake_ns=2, send_ns=3,
                  period_ns=1_000_000, count=60_000, tx_ns=5, tx_back=1, tx_flags=0)
    fields.update(kw)
    wire.pack_into(buf, **fields)
    return buf


def test_header_is_64_bytes() -> None:
    """The default 64-byte payload holds the whole header and nothing is left out."""
    assert wire.HEADER_SIZE == 64 == wire.MIN_SIZE


def test_round_trip() -> None:
    """Every field packed comes back unchanged."""
    h = wire.unpack(_data_packet(size=200, seq=2**40, sched_ns=-5, tx_back=255, tx_flags=wire.TXF_HW))
    assert isinstance(h, wire.Header)
    assert (h.kind, h.length, h.stream, h.seq, h.sched_ns, h.period_ns, h.count, h.tx_back, h.tx_flags) == (
        wire.KIND_DATA, 200, 42, 2**40, -5, 1_000_000, 60_000, 255, wire.TXF_HW)


def test_u32_fields_that_do_not_fit_become_zero() -> None:
    """A period above 4.29 s or a count above 2**32-1 is sent as 0 ('see the hello')."""
    h = wire.unpack(_data_packet(period_ns=5 * 10**9, count=2**33))
    assert isinstance(h, wire.Header) and h.period_ns == 0 and h.count == 0


def test_foreign_reasons() -> None:
    """Short, wrong magic, wrong version, wrong length and unknown kind are told apart."""
    good = _data_packet()
    assert wire.unpack(good[:63]) == wire.FOREIGN_SHORT
    bad_magic = bytearray(good)
    bad_magic[0:4] = b"XXXX"
    assert wire.unpack(bad_magic) == wire.FOREIGN_MAGIC
    bad_version = bytearray(good)
    bad_version[4] = 9
    assert wire.unpack(bad_version) == wire.FOREIGN_VERSION
    assert wire.unpack(good + b"\0" * 10) == wire.FOREIGN_LENGTH
    assert wire.unpack(good, nbytes=63) == wire.FOREIGN_SHORT
    assert wire.unpack(_data_packet(kind=9)) == wire.FOREIGN_KIND


def test_hello_carries_config() -> None:
    """A hello packet carries the sender's configuration as JSON and pads to the stream's size."""
    cfg = {"period_ns": 250_000, "count": 10, "name": "bridge-a"}
    p = wire.hello_payload(3, cfg, 64)
    h = wire.unpack(p)
    assert isinstance(h, wire.Header) and h.kind == wire.KIND_HELLO and h.stream == 3
    assert wire.hello_config(p, len(p)) == cfg
    padded = wire.hello_payload(3, {"a": 1}, 512)
    assert len(padded) == 512 and wire.hello_config(padded, 512) == {"a": 1}


def test_hello_garbage_body_is_none() -> None:
    """A hello whose body is not JSON decodes to None rather than raising."""
    p = bytearray(wire.hello_payload(3, {"a": 1}, 100))
    p[64:70] = b"\xff\xfe{{{"
    assert wire.hello_config(p, len(p)) is None
    assert json.loads(wire.hello_payload(1, {}, 64)[64:].rstrip(b"\0")) == {}


def test_end_packet_tx_pairs() -> None:
    """End packets tell how many were sent and carry the last TX timestamps, at most END_MAX_TX."""
    pairs = [(i, 1000 + i) for i in range(100)]
    p = wire.end_payload(5, 100, pairs, 64)
    h = wire.unpack(p)
    assert isinstance(h, wire.Header) and h.kind == wire.KIND_END and h.seq == 100
    got = wire.end_tx_pairs(p, h)
    assert got == pairs[-wire.END_MAX_TX:]


@settings(max_examples=2000, deadline=None)
@given(st.binary(min_size=0, max_size=300))
def test_unpack_never_raises_on_garbage(data: bytes) -> None:
    """Any bytes decode to a Header or a foreign reason, never an exception."""
    out = wire.unpack(data)
    assert isinstance(out, wire.Header) or out in wire.FOREIGN_REASONS


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 63), st.integers(0, 255))
def test_single_byte_corruption_of_the_frame_is_caught(pos: int, value: int) -> None:
    """Corrupting magic, version, kind or length is always detected; other bytes stay decodable."""
    buf = _data_packet()
    original = buf[pos]
    buf[pos] = value
    out = wire.unpack(buf)
    if value == original:
        assert isinstance(out, wire.Header)
    elif pos < 4:
        assert out == wire.FOREIGN_MAGIC
    elif pos == 4:
        assert out == wire.FOREIGN_VERSION
    elif pos == 5:
        assert out in (wire.FOREIGN_KIND, wire.FOREIGN_LENGTH) or isinstance(out, wire.Header)
    elif pos in (6, 7):
        assert out == wire.FOREIGN_LENGTH
    else:
        assert isinstance(out, wire.Header)
