"""The receiver's classifier: who establishes the run, what is foreign and why, and a fuzzer that drives it.

The fuzzer feeds the classifier the receiver's loop uses with random bytes,
mutated real packets and well-framed forgeries, and checks that it never
raises, never accepts a packet without the run's nonce (and MAC, with a key),
never sizes memory beyond its budget, and counts every datagram exactly once.
"""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from latscope.probe import hello as hello_fields
from latscope.probe import wire
from latscope.probe.classify import F_NONCE, F_SEQ, F_STREAM, HELLO_WINDOW, Classifier

STREAM = 0x2222
NONCE = 0x0123_4567_89AB_CDEF
KEY = b"0123456789abcdef0123456789abcdef"
BASE = 1_795_000_000_000_000_000
MAX_SLOTS = 1000


class Sink:
    """The receiver's side of the classifier: memory it hands out (capped like the real one) and end pairs."""

    def __init__(self) -> None:
        self.slots = 0
        self.requests: list[int] = []
        self.pairs: list[tuple[int, int]] = []

    def alloc(self, n: int) -> int:
        self.requests.append(n)
        self.slots = max(self.slots, n)
        return self.slots

    def on_end(self, pairs: list[tuple[int, int]]) -> None:
        self.pairs.extend(pairs)


def _classifier(sink: Sink, *, key: bytes | None = None, established: bool = False, stream: int | None = None,
                count: int | None = None) -> Classifier:
    if established:
        return Classifier(max_slots=MAX_SLOTS, alloc=sink.alloc, on_end=sink.on_end, stream=STREAM, nonce=NONCE,
                          count=count or 500, key=key, max_size=2048)
    return Classifier(max_slots=MAX_SLOTS, alloc=sink.alloc, on_end=sink.on_end, stream=stream, count=count,
                      key=key, max_size=2048)


def _data(seq: int, *, stream: int = STREAM, nonce: int = NONCE, key: bytes | None = None, size: int = 64,
          send_ns: int = 3) -> bytes:
    size = max(size, wire.MIN_SIZE_MAC) if key else size
    buf = bytearray(size)
    wire.pack_into(buf, kind=wire.KIND_DATA, length=size, stream=stream, nonce=nonce, seq=seq, sched_ns=1,
                   wake_ns=2, flags=wire.FLAG_MAC if key else 0)
    if key:
        wire.sign_into(wire.Signer(key), buf, 0, size)
    buf[wire.SEND_OFFSET:wire.SEND_OFFSET + 8] = send_ns.to_bytes(8, "big", signed=True)
    return bytes(buf)


def _hello_doc(count: int = 500, **extra) -> dict:
    return {"count": count, "period_ns": 1_000_000, "size": 64, "base_time_ns": BASE, **extra}


def _hello(*, stream: int = STREAM, nonce: int = NONCE, key: bytes | None = None, **doc) -> bytes:
    return wire.hello_payload(stream, nonce, _hello_doc(**doc), 64, key)


def _end(sent: int, pairs=(), *, stream: int = STREAM, nonce: int = NONCE, key: bytes | None = None) -> bytes:
    return wire.end_payload(stream, nonce, sent, list(pairs), 64, key)


def _tally(c: Classifier) -> int:
    return sum(c.foreign.values()) + c.hellos + c.ends + c.refused


def _independent_mac_ok(key: bytes, data: bytes) -> bool:
    """The MAC check written again with hmac.new, not with wire's code."""
    body = bytearray(data[:-wire.MAC_SIZE])
    body[wire.SEND_OFFSET:wire.SEND_OFFSET + 8] = bytes(8)
    return hmac.compare_digest(hmac.new(key, body, hashlib.sha256).digest()[:16], data[-wire.MAC_SIZE:])


# -- who establishes the run ------------------------------------------------------------------------------

def test_data_before_any_hello_is_foreign() -> None:
    """A forged data packet before the sender does not capture recv: only a hello establishes the stream."""
    sink = Sink()
    c = _classifier(sink)
    assert c.feed(_data(0, stream=1, nonce=2)) is None
    assert c.foreign == {"early": 1} and not c.established and sink.requests == []
    assert c.feed(_hello()) is None and c.established and (c.stream, c.nonce, c.count) == (STREAM, NONCE, 500)
    assert c.feed(_data(0))[F_SEQ] == 0


def test_a_flood_before_the_hello_leaves_no_trace() -> None:
    """10,000 well-framed data packets of every stream before the hello: all foreign, nothing allocated."""
    sink = Sink()
    c = _classifier(sink)
    for i in range(10_000):
        assert c.feed(_data(i % 700, stream=i, nonce=i * 7919)) is None
    assert c.foreign == {"early": 10_000} and sink.requests == []
    c.feed(_hello())
    assert c.feed(_data(5)) is not None


def test_a_later_hello_does_not_replace_the_session() -> None:
    """Another sender's hello after the first is counted as other_hello; its packets stay foreign."""
    c = _classifier(Sink())
    c.feed(_hello())
    c.feed(_hello(nonce=99, count=7))
    c.feed(_hello())  # the real sender's second copy
    assert c.foreign == {"other_hello": 1} and c.hellos == 2 and c.count == 500
    assert c.feed(_data(1, nonce=99)) is None and c.foreign["nonce"] == 1


def test_pinned_stream_takes_only_its_hello() -> None:
    """With --stream, a hello of another stream is foreign and does not establish anything."""
    c = _classifier(Sink(), stream=STREAM)
    c.feed(_hello(stream=5))
    assert not c.established and c.foreign == {"stream": 1}
    c.feed(_hello())
    assert c.established


def test_run_knows_the_count_and_learns_the_nonce_from_its_hello() -> None:
    """`run` gives stream and count: memory is reserved up front, the nonce comes with the first hello."""
    sink = Sink()
    c = _classifier(sink, stream=STREAM, count=300)
    assert sink.requests == [300] and not c.established
    c.feed(_hello(count=10))
    assert c.established and c.count == 300


@pytest.mark.parametrize("doc", [
    {"tags": 5}, {"base_time_ns": "x"}, {"count": 2**32 - 1 + 10**10}, {"count": 0}, {"count": True},
    {"period_ns": 1}, {"name": "bad\x1b[31m"}, {"tags": ["a\nb"]}, {"prio": 100}, {"base_time_ns": 2**63},
    {"count": 10**9, "period_ns": 3600 * 10**9}, {"tags": ["a,b"]}, {"name": "x" * 201}, {"tags": [""]},
    {"host": "h\n"},
])
def test_hellos_with_bad_fields_are_foreign(doc: dict) -> None:
    """Every hello field is checked by type and range; one bad field makes the hello foreign."""
    c = _classifier(Sink())
    c.feed(wire.hello_payload(STREAM, NONCE, {**_hello_doc(), **doc}, 64))
    assert c.foreign == {"hello": 1} and not c.established


def test_a_copy_of_the_hello_with_bad_fields_is_foreign_too() -> None:
    """Someone who saw the nonce sends a hello of the same session with {"base_time_ns": "x"}: foreign, no effect."""
    c = _classifier(Sink())
    c.feed(_hello())
    c.feed(wire.hello_payload(STREAM, NONCE, {**_hello_doc(), "base_time_ns": "x"}, 64))
    c.feed(_hello(count=7))
    assert c.foreign == {"hello": 1} and c.hellos == 2 and c.hello == _hello_doc()


def test_hello_keeps_only_known_fields() -> None:
    """Unknown keys of a hello do not reach run.json."""
    c = _classifier(Sink())
    c.feed(wire.hello_payload(STREAM, NONCE, {**_hello_doc(), "evil": {"x": 1}, "name": "ok"}, 64))
    assert c.hello == {**_hello_doc(), "name": "ok"}


# -- numbers from the wire -------------------------------------------------------------------------------

def test_forged_end_packets_with_huge_seq_are_refused() -> None:
    """An end packet reporting more packets than planned (10**10, 2**64-1) is foreign; memory is untouched."""
    sink = Sink()
    c = _classifier(sink)
    c.feed(_hello(count=500))
    for sent in (10**10, 2**64 - 1, 501):
        c.feed(_end(sent))
    assert c.foreign == {"range": 3} and c.sent_reported is None and not c.end_seen
    c.feed(_end(500, [(499, 7), (10**12, 8)]))
    assert c.sent_reported == 500 and c.end_seen


def test_end_pairs_are_bounded_by_the_packet_and_the_run() -> None:
    """An end packet claiming more TX pairs than it carries is foreign; pairs beyond the run are dropped."""
    sink = Sink()
    c = _classifier(sink)
    c.feed(_hello(count=500))
    bad = bytearray(_end(10, [(1, 2)]))
    bad[62:64] = (60).to_bytes(2, "big")  # aux: 60 pairs in a 64-byte packet
    c.feed(bytes(bad))
    assert c.foreign == {"range": 1}
    c.feed(_end(10, [(3, 30), (10, 100), (2**64 - 1, 5)]))
    assert sink.pairs == [(3, 30)]


def test_memory_grows_from_the_window_within_the_budget() -> None:
    """A hello's count reserves at most HELLO_WINDOW slots, growth follows accepted packets, capped by budget."""
    sink = Sink()
    c = Classifier(max_slots=5 * HELLO_WINDOW, alloc=sink.alloc, on_end=sink.on_end, max_size=2048)
    c.feed(_hello(count=10**9))
    assert sink.requests == [HELLO_WINDOW]
    assert c.feed(_data(HELLO_WINDOW + 5)) is not None and c.capacity == 2 * HELLO_WINDOW
    assert c.feed(_data(6 * HELLO_WINDOW)) is None and c.refused == 1 and c.capacity == 5 * HELLO_WINDOW
    assert c.feed(_data(10**9)) is None and c.foreign == {"seq": 1}
    assert max(sink.requests) <= 5 * HELLO_WINDOW


def test_seq_beyond_the_count_is_foreign() -> None:
    """A data packet whose seq is at or past the planned count is foreign (seq)."""
    c = _classifier(Sink(), established=True, count=500)
    assert c.feed(_data(499)) is not None
    assert c.feed(_data(500)) is None and c.feed(_data(2**64 - 1)) is None and c.foreign == {"seq": 2}


# -- authentication -------------------------------------------------------------------------------------

def test_with_a_key_the_nonce_alone_is_not_enough() -> None:
    """Someone who saw the nonce still cannot inject: no MAC, a wrong MAC, or a MAC without a key is auth."""
    c = _classifier(Sink(), key=KEY)
    c.feed(_hello(key=b"wrong"))
    c.feed(_hello())
    assert not c.established and c.foreign == {"auth": 2}
    c.feed(_hello(key=KEY))
    assert c.established
    assert c.feed(_data(3, key=KEY)) is not None
    assert c.feed(_data(4)) is None
    assert c.feed(_data(5, key=b"guess")) is None
    assert c.feed(_end(10)) is None and not c.end_seen
    assert c.foreign == {"auth": 5}
    unkeyed = _classifier(Sink())
    unkeyed.feed(_hello(key=KEY))
    assert unkeyed.foreign == {"auth": 1}


def test_send_ns_may_change_after_signing() -> None:
    """The MAC is computed before the send time is taken, so any send_ns verifies."""
    c = _classifier(Sink(), key=KEY, established=True)
    h = c.feed(_data(1, key=KEY, send_ns=1_795_000_000_123_456_789))
    assert h is not None and h[9] == 1_795_000_000_123_456_789


def test_a_truncated_datagram_is_foreign() -> None:
    """A datagram larger than the buffer arrives truncated (MSG_TRUNC) and counts as length."""
    c = _classifier(Sink(), established=True)
    big = bytearray(4000)
    wire.pack_into(big, kind=wire.KIND_DATA, length=4000, stream=STREAM, nonce=NONCE, seq=1)
    assert c.feed(bytes(big)) is None and c.foreign == {"length": 1}


# -- the fuzzer -----------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=10,
)
hello_docs = st.dictionaries(
    st.sampled_from([*hello_fields.REQUIRED, *hello_fields.OPTIONAL, "other"]),
    json_values | st.integers(0, 2**64), max_size=12,
).map(lambda d: {**_hello_doc(), **d}) | st.dictionaries(st.text(max_size=10), json_values, max_size=5)

u8, u16, u32, u64 = (st.integers(0, 2**b - 1) for b in (8, 16, 32, 64))
i64 = st.integers(-2**63, 2**63 - 1)


@st.composite
def framed(draw) -> bytes:
    """A well-framed packet with arbitrary fields: it passes magic, version and length, so the rest is tested."""
    kind = draw(st.sampled_from([0, 1, 2, 3, 255]))
    stream = draw(st.sampled_from([STREAM, 0, 1]) | u32)
    nonce = draw(st.sampled_from([NONCE, 0]) | u64)
    if kind == wire.KIND_HELLO and draw(st.booleans()):
        body = json.dumps(draw(hello_docs)).encode()
    else:
        body = draw(st.binary(max_size=200))
    tail = draw(st.sampled_from([0, wire.MAC_SIZE]))
    total = wire.HEADER_SIZE + len(body) + tail
    buf = bytearray(total)
    wire.pack_into(buf, kind=kind, length=total, stream=stream, nonce=nonce,
                   seq=draw(st.sampled_from([0, 1, 499, 500, 999, 1000, 10**10, 2**64 - 1]) | u64),
                   sched_ns=draw(i64), wake_ns=draw(i64), send_ns=draw(i64), tx_ns=draw(i64), tx_back=draw(u8),
                   flags=draw(u8), aux=draw(u16))
    buf[wire.HEADER_SIZE:wire.HEADER_SIZE + len(body)] = body
    if tail and draw(st.booleans()):
        wire.sign_into(wire.Signer(draw(st.sampled_from([KEY, b"x"]))), buf, 0, total)
    return bytes(buf)


@st.composite
def mutated(draw) -> bytes:
    """A real packet of the run (data, hello or end, signed or not) with a few bytes changed, cut or added."""
    key = draw(st.sampled_from([KEY, None]))
    base = bytearray(draw(st.sampled_from([
        _data(draw(st.integers(0, 600)), key=key),
        _hello(key=key),
        _end(draw(st.integers(0, 600)), [(1, 2), (3, 4)], key=key),
    ])))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "add"]))
        if op == "flip" and base:
            pos = draw(st.integers(0, len(base) - 1))
            base[pos] = draw(u8)
        elif op == "cut":
            del base[draw(st.integers(0, len(base))):]
        else:
            base += draw(st.binary(min_size=1, max_size=20))
    return bytes(base)


@st.composite
def real(draw) -> bytes:
    """An unchanged packet of the run, signed or not: hellos with any count, data and end packets."""
    key = draw(st.sampled_from([KEY, None]))
    which = draw(st.sampled_from(["data", "hello", "end"]))
    if which == "data":
        return _data(draw(st.integers(0, 3000)), key=key)
    if which == "hello":
        return _hello(key=key, count=draw(st.sampled_from([500, 5000, 10**9])))
    return _end(draw(st.integers(0, 600)), [(draw(st.integers(0, 2000)), 9)], key=key)


datagrams = st.binary(max_size=300) | framed() | mutated() | real()


def _check(c: Classifier, sink: Sink, data: bytes, key: bytes | None) -> tuple | None:
    before = _tally(c)
    h = c.feed(data)
    accepted = h is not None
    assert _tally(c) + accepted == before + 1, "every datagram is counted exactly once"
    assert set(c.foreign) <= set(wire.FOREIGN_REASONS)
    if accepted:
        assert c.established and h[F_STREAM] == c.stream and h[F_NONCE] == c.nonce
        assert h[F_SEQ] < c.capacity <= c.count
        if key is not None:
            assert _independent_mac_ok(key, data)
    assert c.capacity <= MAX_SLOTS and all(n <= MAX_SLOTS for n in sink.requests)
    if c.sent_reported is not None:
        assert c.sent_reported <= c.count
    if c.hello is not None:
        assert hello_fields.checked(c.hello) == c.hello
    return h


@settings(max_examples=700, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([KEY, None]), st.lists(datagrams, max_size=12))
def test_fuzz_established_session(key: bytes | None, packets: list[bytes]) -> None:
    """A session known in advance (as in `run`) accepts nothing without its stream, nonce and MAC."""
    sink = Sink()
    c = _classifier(sink, key=key, established=True)
    for p in packets:
        _check(c, sink, p, key)
    assert (c.stream, c.nonce) == (STREAM, NONCE)


@settings(max_examples=700, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([KEY, None]), st.lists(datagrams, max_size=12), st.booleans())
def test_fuzz_session_learned_from_hello(key: bytes | None, packets: list[bytes], real_hello_first: bool) -> None:
    """recv: only a valid (signed, with a key) hello establishes the session, and it never changes after."""
    sink = Sink()
    c = _classifier(sink, key=key)
    if real_hello_first:
        packets = [_hello(key=key), *packets]
    session = None
    for p in packets:
        was = c.established
        _check(c, sink, p, key)
        if c.established and not was:
            session = (c.stream, c.nonce)
            h = wire.unpack(p)
            assert isinstance(h, wire.Header) and h.kind == wire.KIND_HELLO
            assert (h.stream, h.nonce) == session
            if key is not None:
                assert _independent_mac_ok(key, p)
        if session is not None:
            assert (c.stream, c.nonce) == session


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 499), st.integers(0, wire.MIN_SIZE_MAC - 1), u8)
def test_fuzz_any_change_outside_send_ns_breaks_a_signed_packet(seq: int, pos: int, value: int) -> None:
    """Changing one byte of a signed data packet is caught unless it is send_ns (not signed) or no change."""
    c = _classifier(Sink(), key=KEY, established=True)
    p = bytearray(_data(seq, key=KEY))
    original = p[pos]
    p[pos] = value
    h = c.feed(bytes(p))
    if value == original or wire.SEND_OFFSET <= pos < wire.SEND_OFFSET + 8:
        assert h is not None
    else:
        assert h is None and sum(c.foreign.values()) == 1
