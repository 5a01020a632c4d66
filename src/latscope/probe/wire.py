"""The probe packet: what travels in every UDP payload or Ethernet frame.

All integers are big-endian. A data packet's header is exactly 64 bytes, the
default payload size, so the smallest packet carries everything the receiver
needs for its row (scheduled and send times, and the kernel TX timestamp of an
earlier packet, which the sender only learns after the send call returns).
The run's parameters (period, count, base time) travel only in the hello.

    off size field
      0   4  magic  b"LTSP"
      4   1  version (2)
      5   1  kind: 0 data, 1 hello (JSON config follows the header), 2 end
      6   2  length: payload bytes as sent (detects truncation and padding)
      8   4  stream id (chosen per run; another stream is foreign)
     12   8  nonce      random per run, chosen by the sender: a packet without it is foreign
     20   8  seq        (data: packet number from 0; end: number of data packets sent)
     28   8  sched_ns   scheduled send time (CLOCK_REALTIME)
     36   8  wake_ns    when the sender woke for it
     44   8  send_ns    just before the send call
     52   8  tx_ns      kernel TX timestamp of packet seq - tx_back
     60   1  tx_back    0: tx_ns unused; N: it belongs to packet seq - N
     61   1  flags      bit 0: tx_ns is a hardware timestamp; bit 1: a MAC ends the payload
     62   2  aux        end: how many (seq, tx_ns) pairs follow the header; else 0

Hello packets carry a UTF-8 JSON document of the sender's configuration after
the header. End packets carry up to END_MAX_TX pairs (seq u64, tx_ns i64) for
the last packets whose TX timestamps no data packet carried.

Round trips (``run --mode rtt``, probe.reflector): the far end answers each
data packet at once with an *echo* of the same length, kind 3, whose header
fields mean:

    seq        the data packet's seq (stream and nonce copied)
    sched_ns   far_rx_ns: the reflector's kernel RX timestamp of that packet (t2)
    wake_ns    when the reflector read it in user space (diagnostic)
    send_ns    0
    tx_ns      far_tx_ns: the reflector's kernel TX timestamp (t3) of the echo of packet seq - tx_back
    tx_back    0: tx_ns unused
    flags      bit 0: tx_ns is hardware; bit 1: MAC; bit 2: sched_ns (t2) is hardware

An echo cannot carry its own t3: the kernel stamps it as it leaves. As in
PTP's two-step mode it travels in a later message: the next echo, and for the
last ones the echo end (kind 4: seq = echoes sent, aux pairs (seq, t3) as in
an end packet), which the reflector sends when the sender's end arrives.

With a key (``--key-file``) the last MAC_SIZE bytes of every payload are
HMAC-SHA256(key, payload[:length - MAC_SIZE]) truncated to 16 bytes, computed
with the send_ns field set to zero: the sender computes it *before* it reads
the clock for send_ns, so the MAC's cost does not land inside the measured
latency. send_ns is therefore the one field a MAC does not protect.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from dataclasses import dataclass
from typing import Any

MAGIC = b"LTSP"
VERSION = 2
HEADER = struct.Struct("!4sBBHIQQqqqqBBH")
HEADER_SIZE = HEADER.size
assert HEADER_SIZE == 64

KIND_DATA = 0
KIND_HELLO = 1
KIND_END = 2
KINDS = (KIND_DATA, KIND_HELLO, KIND_END)
#: Sent by a reflector only: the sender's echo socket takes these, a receiver counts them foreign (kind).
KIND_ECHO = 3
KIND_ECHO_END = 4
#: Echo flag: sched_ns (the reflector's RX time t2) is a hardware timestamp.
ECHO_RX_HW = 4

# Offsets of fields that are read or written on their own.
SEQ_OFFSET = 20
SEND_OFFSET = 44

MIN_SIZE = HEADER_SIZE
#: Largest payload: a UDP datagram over IPv4 without jumbo frames is far below this.
MAX_SIZE = 65_000
TX_PAIR = struct.Struct("!Qq")
END_MAX_TX = 64
TXF_HW = 1
FLAG_MAC = 2
MAC_SIZE = 16
#: Smallest payload that carries a header and a MAC.
MIN_SIZE_MAC = HEADER_SIZE + MAC_SIZE
_ZERO8 = bytes(8)
_MAC = struct.Struct(f"{MAC_SIZE}s")  # packing a 32-byte digest with it truncates it

# Reasons a packet is not ours, counted separately so a user can tell junk from
# a stale run, an incompatible sender, or someone forging packets.
FOREIGN_SHORT = "short"
FOREIGN_MAGIC = "magic"
FOREIGN_VERSION = "version"
FOREIGN_LENGTH = "length"
FOREIGN_KIND = "kind"
FOREIGN_STREAM = "stream"
FOREIGN_NONCE = "nonce"
FOREIGN_AUTH = "auth"
FOREIGN_EARLY = "early"
FOREIGN_HELLO = "hello"
FOREIGN_OTHER_HELLO = "other_hello"
FOREIGN_SEQ = "seq"
FOREIGN_RANGE = "range"
FOREIGN_REASONS = (
    FOREIGN_SHORT, FOREIGN_MAGIC, FOREIGN_VERSION, FOREIGN_LENGTH, FOREIGN_KIND, FOREIGN_STREAM, FOREIGN_NONCE,
    FOREIGN_AUTH, FOREIGN_EARLY, FOREIGN_HELLO, FOREIGN_OTHER_HELLO, FOREIGN_SEQ, FOREIGN_RANGE,
)


@dataclass(frozen=True)
class Header:
    """A decoded probe header."""

    kind: int
    length: int
    stream: int
    nonce: int
    seq: int
    sched_ns: int
    wake_ns: int
    send_ns: int
    tx_ns: int
    tx_back: int
    flags: int
    aux: int


def pack_into(
    buf: bytearray | memoryview,
    *,
    kind: int,
    length: int,
    stream: int,
    nonce: int,
    seq: int,
    sched_ns: int = 0,
    wake_ns: int = 0,
    send_ns: int = 0,
    tx_ns: int = 0,
    tx_back: int = 0,
    flags: int = 0,
    aux: int = 0,
) -> None:
    """Write a header at the start of ``buf`` (the hot path uses HEADER.pack_into directly)."""
    HEADER.pack_into(buf, 0, MAGIC, VERSION, kind, length, stream, nonce, seq, sched_ns, wake_ns, send_ns, tx_ns,
                     tx_back, flags, aux)


def unpack(data: bytes | bytearray | memoryview, nbytes: int | None = None) -> Header | str:
    """Decode the frame of a header; return the Header, or the reason the packet is foreign.

    ``nbytes`` is how many bytes actually arrived (defaults to len(data)).
    Whether the packet belongs to the run (stream, nonce, MAC, seq) needs run
    context: that is probe.classify's job.
    """
    n = len(data) if nbytes is None else nbytes
    if n < HEADER_SIZE:
        return FOREIGN_SHORT
    fields = HEADER.unpack_from(data, 0)
    if fields[0] != MAGIC:
        return FOREIGN_MAGIC
    if fields[1] != VERSION:
        return FOREIGN_VERSION
    if fields[3] != n:
        return FOREIGN_LENGTH
    if fields[2] not in KINDS:
        return FOREIGN_KIND
    return Header(*fields[2:])


class Signer:
    """HMAC-SHA256 with a key, its two padded key blocks hashed once (RFC 2104).

    hmac.digest() redoes that for every message and looks the hash up by name,
    which takes 2.7 times as long as copying the two prepared states
    (BENCHMARKS.md). The result is the same HMAC.
    """

    def __init__(self, key: bytes) -> None:
        block = hashlib.sha256(key).digest() if len(key) > 64 else key
        block = block.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def digest(self, data: bytes | bytearray | memoryview) -> bytes:
        """The full 32-byte HMAC of ``data`` (the packet carries its first MAC_SIZE bytes)."""
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


def sign_into(signer: Signer, buf: bytearray, off: int, length: int) -> None:
    """Write the MAC of the payload at ``buf[off:off + length]`` into its last MAC_SIZE bytes.

    The caller has set send_ns to zero (the sender fills it in afterwards).
    """
    end = off + length - MAC_SIZE
    _MAC.pack_into(buf, end, signer.digest(memoryview(buf)[off:end]))


def mac_ok(signer: Signer, view: memoryview, nbytes: int) -> bool:
    """Whether the payload in ``view[:nbytes]`` carries a valid MAC.

    Zeroes send_ns in the buffer (the caller has already read it): the MAC was
    computed without it. Constant-time comparison, so the receiver's timing
    tells a forger nothing about how close a guess was.
    """
    end = nbytes - MAC_SIZE
    view[SEND_OFFSET:SEND_OFFSET + 8] = _ZERO8
    return hmac.compare_digest(signer.digest(view[:end])[:MAC_SIZE], view[end:nbytes])


def _control(kind: int, stream: int, nonce: int, seq: int, body: bytes, size: int, key: bytes | None,
             aux: int = 0) -> bytes:
    tail = MAC_SIZE if key is not None else 0
    total = max(size, HEADER_SIZE + len(body) + tail)
    buf = bytearray(total)
    pack_into(buf, kind=kind, length=total, stream=stream, nonce=nonce, seq=seq,
              flags=FLAG_MAC if key is not None else 0, aux=aux)
    buf[HEADER_SIZE:HEADER_SIZE + len(body)] = body
    if key is not None:
        sign_into(Signer(key), buf, 0, total)
    return bytes(buf)


def hello_payload(stream: int, nonce: int, config: dict[str, Any], size: int, key: bytes | None = None) -> bytes:
    """A hello packet: header plus the sender's configuration as JSON (and a MAC with a key)."""
    body = json.dumps(config, separators=(",", ":"), sort_keys=True).encode()
    return _control(KIND_HELLO, stream, nonce, 0, body, size, key)


def body_end(nbytes: int, flags: int) -> int:
    """Where the body of a hello or end packet stops: before the MAC, if one is there."""
    return nbytes - MAC_SIZE if flags & FLAG_MAC else nbytes


def hello_config(data: bytes | bytearray | memoryview, nbytes: int, flags: int = 0) -> dict[str, Any] | None:
    """The JSON config of a hello packet, or None when it does not decode (never raises)."""
    body = bytes(data[HEADER_SIZE:max(HEADER_SIZE, body_end(nbytes, flags))]).rstrip(b"\0")
    try:
        doc = json.loads(body.decode())
    except (UnicodeDecodeError, ValueError, RecursionError):
        # ValueError covers malformed JSON and integers too long to convert;
        # RecursionError, a body of thousands of nested brackets.
        return None
    return doc if isinstance(doc, dict) else None


def end_payload(stream: int, nonce: int, sent: int, tx_pairs: list[tuple[int, int]], size: int,
                key: bytes | None = None) -> bytes:
    """An end packet: how many data packets were sent, and trailing TX timestamps."""
    pairs = tx_pairs[-END_MAX_TX:]
    body = b"".join(TX_PAIR.pack(seq, tx) for seq, tx in pairs)
    return _control(KIND_END, stream, nonce, sent, body, size, key, aux=len(pairs))


#: The largest echo end: a header, END_MAX_TX pairs and a MAC.
ECHO_END_MAX_SIZE = HEADER_SIZE + END_MAX_TX * TX_PAIR.size + MAC_SIZE


def echo_end_payload(stream: int, nonce: int, echoed: int, tx_pairs: list[tuple[int, int]], size: int,
                     key: bytes | None = None) -> bytes:
    """A reflector's last word: how many echoes it sent, and the t3 of the last ones."""
    pairs = tx_pairs[-END_MAX_TX:]
    body = b"".join(TX_PAIR.pack(seq, tx) for seq, tx in pairs)
    return _control(KIND_ECHO_END, stream, nonce, echoed, body, size, key, aux=len(pairs))


def end_tx_pairs(data: bytes | bytearray | memoryview, nbytes: int, npairs: int, flags: int = 0
                 ) -> list[tuple[int, int]] | None:
    """The (seq, tx_ns) pairs of an end packet, or None when ``npairs`` does not fit the packet."""
    if npairs > END_MAX_TX or HEADER_SIZE + npairs * TX_PAIR.size > body_end(nbytes, flags):
        return None
    return [TX_PAIR.unpack_from(data, HEADER_SIZE + i * TX_PAIR.size) for i in range(npairs)]
