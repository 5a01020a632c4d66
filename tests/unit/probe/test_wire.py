"""The probe packet format: round trips, validation, and a parser that never crashes."""

from __future__ import annotations

import hmac
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from latscope.probe import wire


def _data_packet(size: int = 64, **kw) -> bytearray:
    buf = bytearray(size)
    fields = {"kind": wire.KIND_DATA, "length": size, "stream": 42, "nonce": 2**64 - 1, "seq": 7, "sched_ns": 1, "wake_ns": 2,
                  "send_ns": 3, "tx_ns": 5, "tx_back": 1, "flags": 0}
    fields.update(kw)
    wire.pack_into(buf, **fields)
    return buf


def test_header_is_64_bytes() -> None:
    """The default 64-byte payload holds the whole header and nothing is left out."""
    assert wire.HEADER_SIZE == 64 == wire.MIN_SIZE


def test_round_trip() -> None:
    """Every field packed comes back unchanged."""
    h = wire.unpack(_data_packet(size=200, seq=2**40, sched_ns=-5, send_ns=9, tx_back=255, flags=wire.TXF_HW, aux=3))
    assert isinstance(h, wire.Header)
    assert (h.kind, h.length, h.stream, h.nonce, h.seq, h.sched_ns, h.send_ns, h.tx_back, h.flags, h.aux) == (
        wire.KIND_DATA, 200, 42, 2**64 - 1, 2**40, -5, 9, 255, wire.TXF_HW, 3)


def test_documented_offsets() -> None:
    """The offsets that tools (nftables rules, the MAC) rely on are where docs/format.md says."""
    buf = _data_packet(seq=0x0102030405060708, send_ns=0x1112131415161718)
    assert bytes(buf[wire.SEQ_OFFSET:wire.SEQ_OFFSET + 8]) == bytes.fromhex("0102030405060708")
    assert bytes(buf[wire.SEND_OFFSET:wire.SEND_OFFSET + 8]) == bytes.fromhex("1112131415161718")
    assert bytes(buf[12:20]) == b"\xff" * 8  # the nonce
    assert buf[4] == wire.VERSION == 2


@pytest.mark.parametrize("key", [b"k", b"k" * 64, b"k" * 65, bytes(range(256)) * 4])
def test_signer_is_hmac_sha256(key: bytes) -> None:
    """The prepared-state HMAC equals the standard library's, for short, block-sized and long keys."""
    for msg in (b"", b"x" * 48, bytes(range(256)) * 10):
        assert wire.Signer(key).digest(msg) == hmac.digest(key, msg, "sha256")


def test_mac_covers_everything_but_send_ns() -> None:
    """A signed packet verifies; changing any byte but send_ns breaks it; send_ns may change (it is signed as 0)."""
    key = b"k" * 32
    buf = _data_packet(size=wire.MIN_SIZE_MAC, send_ns=0, flags=wire.FLAG_MAC)
    wire.sign_into(wire.Signer(key), buf, 0, len(buf))
    buf[wire.SEND_OFFSET:wire.SEND_OFFSET + 8] = (123456789).to_bytes(8, "big")
    assert wire.mac_ok(wire.Signer(key), memoryview(bytearray(buf)), len(buf))
    assert not wire.mac_ok(wire.Signer(b"other key"), memoryview(bytearray(buf)), len(buf))
    for pos in [*range(wire.SEND_OFFSET), *range(wire.SEND_OFFSET + 8, len(buf))]:
        bad = bytearray(buf)
        bad[pos] ^= 0x01
        assert not wire.mac_ok(wire.Signer(key), memoryview(bad), len(bad)), pos


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
    p = wire.hello_payload(3, 99, cfg, 64)
    h = wire.unpack(p)
    assert isinstance(h, wire.Header) and h.kind == wire.KIND_HELLO and h.stream == 3 and h.nonce == 99
    assert wire.hello_config(p, len(p)) == cfg
    padded = wire.hello_payload(3, 99, {"a": 1}, 512)
    assert len(padded) == 512 and wire.hello_config(padded, 512) == {"a": 1}
    signed = wire.hello_payload(3, 99, cfg, 64, key=b"secret")
    h = wire.unpack(signed)
    assert isinstance(h, wire.Header) and h.flags & wire.FLAG_MAC
    assert wire.hello_config(signed, len(signed), h.flags) == cfg
    assert wire.mac_ok(wire.Signer(b"secret"), memoryview(bytearray(signed)), len(signed))


def test_hello_garbage_body_is_none() -> None:
    """A hello whose body is not JSON decodes to None rather than raising."""
    p = bytearray(wire.hello_payload(3, 1, {"a": 1}, 100))
    p[64:70] = b"\xff\xfe{{{"
    assert wire.hello_config(p, len(p)) is None
    assert json.loads(wire.hello_payload(1, 1, {}, 64)[64:].rstrip(b"\0")) == {}
    deep = wire.HEADER.pack(wire.MAGIC, 2, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0) + b"[" * 100_000
    assert wire.hello_config(deep, len(deep)) is None
    huge_int = wire.HEADER.pack(wire.MAGIC, 2, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0) + b'{"count": ' + b"9" * 5000 + b"}"
    assert wire.hello_config(huge_int, len(huge_int)) is None


def test_end_packet_tx_pairs() -> None:
    """End packets tell how many were sent and carry the last TX timestamps, at most END_MAX_TX."""
    pairs = [(i, 1000 + i) for i in range(100)]
    p = wire.end_payload(5, 1, 100, pairs, 64)
    h = wire.unpack(p)
    assert isinstance(h, wire.Header) and h.kind == wire.KIND_END and h.seq == 100 and h.aux == wire.END_MAX_TX
    got = wire.end_tx_pairs(p, len(p), h.aux, h.flags)
    assert got == pairs[-wire.END_MAX_TX:]
    assert wire.end_tx_pairs(p, len(p), wire.END_MAX_TX + 1) is None
    short = wire.end_payload(5, 1, 100, pairs[:2], 64)
    assert wire.end_tx_pairs(short, len(short), 40) is None


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
