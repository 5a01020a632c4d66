"""What each datagram at the receiver's socket is: a packet of this run, or foreign and why.

One classifier serves the receiver's loop and the tests (the fuzzer drives
this very code). The run's identity is the stream id and the sender's nonce:

- ``run`` tells the receiver the stream id and count; ``recv`` learns both
  from the sender's hello (``--stream`` only narrows which hello it takes).
- The first valid hello establishes the session (stream, nonce, and for
  ``recv`` the count). Data and end packets before it are foreign (``early``);
  a later hello of another session does not replace it (``other_hello``).
- With a key, a packet without a valid MAC is foreign (``auth``), so knowing
  the nonce from watching the stream is not enough to inject packets.

Every number from the wire is checked before it is used: the hello's fields
by hello.checked, a data packet's seq against the count, an end packet's
sent count and TX pairs against the count and the packet. Memory is never
sized from a packet: the count only comes from a checked hello or the spec,
and the receiver's ``alloc`` caps it by free RAM.

Each datagram lands in exactly one place: a foreign reason, an accepted
hello (``hellos``) or end (``ends``), ``refused`` (ours, but beyond the
memory the receiver could get), or it is returned as an accepted data packet.
"""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Callable

from latscope.probe import hello as hello_fields
from latscope.probe import wire

_MSG_TRUNC = int(socket.MSG_TRUNC)
# Module constants, not wire.X lookups: classify() runs once per datagram.
_unpack = wire.HEADER.unpack_from
_MAGIC, _VERSION, _FLAG_MAC, _HSIZE = wire.MAGIC, wire.VERSION, wire.FLAG_MAC, wire.HEADER_SIZE
#: A count learned from a hello is trusted with this many slots up front; more only as packets arrive.
HELLO_WINDOW = 1 << 21

# Positions in the tuple classify() returns for a data packet (wire.HEADER's fields).
F_STREAM, F_NONCE, F_SEQ, F_SCHED, F_WAKE, F_SEND, F_TX, F_TX_BACK, F_FLAGS, F_AUX = range(4, 14)

Alloc = Callable[[int], int]
OnEnd = Callable[[list[tuple[int, int]]], None]


class Classifier:
    """The receiver's session state and its decision for each datagram in ``buf``."""

    __slots__ = (
        "_alloc",
        "_on_end",
        "_signer",
        "_view",
        "buf",
        "capacity",
        "count",
        "end_seen",
        "ends",
        "foreign",
        "hello",
        "hellos",
        "key",
        "limit",
        "max_slots",
        "nonce",
        "refused",
        "sent_reported",
        "stream",
    )

    def __init__(self, *, max_slots: int, alloc: Alloc, on_end: OnEnd, stream: int | None = None,
                 nonce: int | None = None, count: int | None = None, key: bytes | None = None,
                 max_size: int = 65_535) -> None:
        if nonce is not None and (stream is None or count is None):
            raise ValueError("a preset nonce needs the stream and the count")
        self.buf = bytearray(max_size + 1)
        self._view = memoryview(self.buf)
        self.key = key
        self._signer = wire.Signer(key) if key is not None else None
        self.stream = stream
        self.nonce = nonce
        self.count = count
        self.max_slots = max(0, max_slots)
        self._alloc = alloc
        self._on_end = on_end
        self.capacity = 0
        self.limit = 0
        self.foreign: Counter[str] = Counter()
        self.hello: dict | None = None
        self.hellos = 0
        self.ends = 0
        self.refused = 0
        self.sent_reported: int | None = None
        self.end_seen = False
        if count is not None:
            # The spec's count (from `run`) was checked by its config: reserve it now, outside the loop.
            self._reserve(count, count)

    @property
    def established(self) -> bool:
        return self.nonce is not None

    def _reserve(self, count: int, first: int) -> None:
        self.count = count
        self.limit = min(count, self.max_slots)
        self.capacity = self._alloc(min(first, self.limit))

    def classify(self, nbytes: int, mflags: int = 0) -> tuple | None:
        """The header fields of an accepted data packet in ``buf[:nbytes]``; None for anything else."""
        if nbytes < _HSIZE:
            self.foreign[wire.FOREIGN_SHORT] += 1
            return None
        h = _unpack(self.buf, 0)
        if h[0] != _MAGIC or h[1] != _VERSION or h[3] != nbytes or mflags & _MSG_TRUNC:
            self.foreign[wire.FOREIGN_MAGIC if h[0] != _MAGIC else wire.FOREIGN_VERSION if h[1] != _VERSION
                         else wire.FOREIGN_LENGTH] += 1
            return None
        if h[2] == 0:  # data: the hot path
            if h[5] != self.nonce or h[4] != self.stream:
                self.foreign[self._stranger(h[4])] += 1
                return None
            if (self.key is not None or h[12] & _FLAG_MAC) and not self._authentic(h[12], nbytes):
                self.foreign[wire.FOREIGN_AUTH] += 1
                return None
            if h[6] >= self.capacity and not self._room(h[6]):
                return None
            return h
        if h[2] == wire.KIND_HELLO:
            self._hello(h[4], h[5], h[12], nbytes)
        elif h[2] == wire.KIND_END:
            self._end(h, nbytes)
        else:
            self.foreign[wire.FOREIGN_KIND] += 1
        return None

    def _stranger(self, stream: int) -> str:
        """Why a packet with the wrong stream or nonce is foreign."""
        if self.stream is not None and stream != self.stream:
            return wire.FOREIGN_STREAM
        return wire.FOREIGN_NONCE if self.nonce is not None else wire.FOREIGN_EARLY

    def _authentic(self, flags: int, nbytes: int) -> bool:
        # A MAC the receiver cannot check is as good as none: without --key-file it refuses them too.
        if self._signer is None or not flags & wire.FLAG_MAC or nbytes < wire.MIN_SIZE_MAC:
            return False
        return wire.mac_ok(self._signer, self._view, nbytes)

    def _room(self, seq: int) -> bool:
        """Whether a data packet with seq at or beyond the current capacity can be stored."""
        if self.count is None or seq >= self.count:  # data only passes once a hello set the count
            self.foreign[wire.FOREIGN_SEQ] += 1
            return False
        if self.capacity < self.limit:
            self.capacity = max(self.capacity, self._alloc(min(self.limit, max(seq + 1, 2 * self.capacity))))
            if seq < self.capacity:
                return True
        self.refused += 1
        return False

    def _hello(self, stream: int, nonce: int, flags: int, nbytes: int) -> None:
        foreign = self.foreign
        if self.nonce is not None:
            if stream != self.stream or nonce != self.nonce:
                foreign[wire.FOREIGN_OTHER_HELLO] += 1
            elif (self.key is not None or flags & wire.FLAG_MAC) and not self._authentic(flags, nbytes):
                foreign[wire.FOREIGN_AUTH] += 1
            else:
                # Copies are checked like the first: a hello with bad fields is foreign wherever it comes.
                doc = hello_fields.checked(wire.hello_config(self.buf, nbytes, flags))
                if doc is None:
                    foreign[wire.FOREIGN_HELLO] += 1
                    return
                self.hellos += 1
                if self.hello is None:  # session preset by the spec: the hello still tells the parameters
                    self.hello = doc
            return
        if self.stream is not None and stream != self.stream:
            foreign[wire.FOREIGN_STREAM] += 1
            return
        if (self.key is not None or flags & wire.FLAG_MAC) and not self._authentic(flags, nbytes):
            foreign[wire.FOREIGN_AUTH] += 1
            return
        doc = hello_fields.checked(wire.hello_config(self.buf, nbytes, flags))
        if doc is None:
            foreign[wire.FOREIGN_HELLO] += 1
            return
        self.hellos += 1
        self.hello = doc
        self.stream, self.nonce = stream, nonce
        if self.count is None:
            self._reserve(doc["count"], HELLO_WINDOW)

    def _end(self, h: tuple, nbytes: int) -> None:
        foreign = self.foreign
        flags = h[F_FLAGS]
        if h[F_NONCE] != self.nonce or h[F_STREAM] != self.stream:
            foreign[self._stranger(h[F_STREAM])] += 1
            return
        if (self.key is not None or flags & wire.FLAG_MAC) and not self._authentic(flags, nbytes):
            foreign[wire.FOREIGN_AUTH] += 1
            return
        sent = h[F_SEQ]
        pairs = wire.end_tx_pairs(self.buf, nbytes, h[F_AUX], flags)
        if pairs is None or sent > self.count:
            foreign[wire.FOREIGN_RANGE] += 1
            return
        self.ends += 1
        if self.sent_reported is None:
            self.sent_reported = sent
        self.end_seen = True
        limit = min(self.capacity, self.sent_reported)
        self._on_end([(s, tx) for s, tx in pairs if s < limit])

    def feed(self, data: bytes, mflags: int = 0) -> tuple | None:
        """Classify ``data`` as if it had arrived on the socket (what the tests and the fuzzer use)."""
        n = len(data)
        if n > len(self.buf):
            # What recvmsg_into does with a datagram larger than the buffer.
            n = len(self.buf)
            mflags |= _MSG_TRUNC
        self.buf[:n] = data[:n]
        return self.classify(n, mflags)
