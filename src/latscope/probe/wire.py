"""The probe packet: what travels in every UDP payload or Ethernet frame.

All integers are big-endian. A data packet's header is exactly 64 bytes, the
default payload size, so the smallest useful packet carries everything the
receiver needs on its own (period, planned count, scheduled and send times,
and the kernel TX timestamp of an earlier packet, which the sender only learns
after the send call returns).

    off size field
      0   4  magic  b"LTSP"
      4   1  version (1)
      5   1  kind: 0 data, 1 hello (JSON config follows the header), 2 end
      6   2  length: payload bytes as sent (detects truncation and padding)
      8   4  stream id (random per run; another stream is foreign)
     12   8  seq (data: packet number from 0; end: number of data packets sent)
     20   8  sched_ns   scheduled send time (CLOCK_REALTIME)
     28   8  wake_ns    when the sender woke for it
     36   8  send_ns    just before the send call
     44   4  period_ns  (0 when above 4.29 s; the hello has the exact value)
     48   4  count      planned data packets (0 when above 2**32-1)
     52   8  tx_ns      kernel TX timestamp of packet seq - tx_back
     60   1  tx_back    0: tx_ns unused; N: it belongs to packet seq - N
     61   1  tx_flags   bit 0: tx_ns is a hardware timestamp
     62   2  reserved   zero

Hello packets carry a UTF-8 JSON document of the sender's configuration after
the header. End packets carry up to END_MAX_TX pairs (seq u64, tx_ns i64) for
the last packets whose TX timestamps no data packet carried.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

MAGIC = b"LTSP"
VERSION = 1
HEADER = struct.Struct("!4sBBHIQqqqIIqBBH")
HEADER_SIZE = HEADER.size
assert HEADER_SIZE == 64

KIND_DATA = 0
KIND_HELLO = 1
KIND_END = 2
KINDS = (KIND_DATA, KIND_HELLO, KIND_END)

MIN_SIZE = HEADER_SIZE
#: Largest payload: a UDP datagram over IPv4 without jumbo frames is far below this.
MAX_SIZE = 65_000
TX_PAIR = struct.Struct("!Qq")
END_MAX_TX = 64
TXF_HW = 1
_U32 = 2**32 - 1

# Reasons a packet is not ours, counted separately so a user can tell junk from
# a stale run or an incompatible sender.
FOREIGN_SHORT = "short"
FOREIGN_MAGIC = "magic"
FOREIGN_VERSION = "version"
FOREIGN_LENGTH = "length"
FOREIGN_KIND = "kind"
FOREIGN_STREAM = "stream"
FOREIGN_SEQ = "seq"
FOREIGN_REASONS = (
    FOREIGN_SHORT, FOREIGN_MAGIC, FOREIGN_VERSION, FOREIGN_LENGTH, FOREIGN_KIND, FOREIGN_STREAM, FOREIGN_SEQ,
)


@dataclass(frozen=True)
class Header:
    """A decoded probe header."""

    kind: int
    length: int
    stream: int
    seq: int
    sched_ns: int
    wake_ns: int
    send_ns: int
    period_ns: int
    count: int
    tx_ns: int
    tx_back: int
    tx_flags: int


def pack_into(
    buf: bytearray | memoryview,
    *,
    kind: int,
    length: int,
    stream: int,
    seq: int,
    sched_ns: int = 0,
    wake_ns: int = 0,
    send_ns: int = 0,
    period_ns: int = 0,
    count: int = 0,
    tx_ns: int = 0,
    tx_back: int = 0,
    tx_flags: int = 0,
) -> None:
    """Write a header at the start of ``buf`` (the hot path uses HEADER.pack_into directly)."""
    HEADER.pack_into(
        buf, 0, MAGIC, VERSION, kind, length, stream, seq, sched_ns, wake_ns, send_ns,
        period_ns if period_ns <= _U32 else 0, count if count <= _U32 else 0, tx_ns, tx_back, tx_flags, 0,
    )


def clamp_u32(value: int) -> int:
    """Value for a u32 field that means "see the hello" (0) when it does not fit."""
    return value if 0 <= value <= _U32 else 0


def unpack(data: bytes | bytearray | memoryview, nbytes: int | None = None) -> Header | str:
    """Decode and validate a header; return the Header, or the reason the packet is foreign.

    ``nbytes`` is how many bytes actually arrived (defaults to len(data)).
    Stream and seq checks need run context and are done by the receiver.
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
    return Header(*fields[2:14])


def hello_payload(stream: int, config: dict[str, Any], size: int) -> bytes:
    """A hello packet: header plus the sender's configuration as JSON."""
    body = json.dumps(config, separators=(",", ":"), sort_keys=True).encode()
    total = max(size, HEADER_SIZE + len(body))
    buf = bytearray(total)
    pack_into(buf, kind=KIND_HELLO, length=total, stream=stream, seq=0)
    buf[HEADER_SIZE:HEADER_SIZE + len(body)] = body
    return bytes(buf)


def hello_config(data: bytes | bytearray | memoryview, nbytes: int) -> dict[str, Any] | None:
    """The JSON config of a hello packet, or None when it does not decode."""
    body = bytes(data[HEADER_SIZE:nbytes]).rstrip(b"\0")
    try:
        doc = json.loads(body.decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def end_payload(stream: int, sent: int, tx_pairs: list[tuple[int, int]], size: int) -> bytes:
    """An end packet: how many data packets were sent, and trailing TX timestamps."""
    pairs = tx_pairs[-END_MAX_TX:]
    total = max(size, HEADER_SIZE + TX_PAIR.size * len(pairs))
    buf = bytearray(total)
    pack_into(buf, kind=KIND_END, length=total, stream=stream, seq=sent, count=len(pairs))
    for i, (seq, tx) in enumerate(pairs):
        TX_PAIR.pack_into(buf, HEADER_SIZE + i * TX_PAIR.size, seq, tx)
    return bytes(buf)


def end_tx_pairs(data: bytes | bytearray | memoryview, header: Header) -> list[tuple[int, int]]:
    """The (seq, tx_ns) pairs of an end packet (count field holds how many)."""
    room = (header.length - HEADER_SIZE) // TX_PAIR.size
    n = min(header.count, room, END_MAX_TX)
    return [TX_PAIR.unpack_from(data, HEADER_SIZE + i * TX_PAIR.size) for i in range(n)]
