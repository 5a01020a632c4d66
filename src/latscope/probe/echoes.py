"""The sender's side of round trips: reading the reflector's echoes with kernel RX timestamps.

The echoes come back to the sending socket itself (the reflector answers the
address the packet came from). The sender reads them without blocking after
each send, so its schedule never waits on the network; the kernel stamped
each echo (t4) when it arrived, so reading it up to a period later changes
nothing but ``rx_user`` (when user space got it). Every echo is checked as
strictly as the receiver checks data packets: magic, version, length, kind,
stream, nonce, MAC, seq within the count; anything else is counted as foreign
by reason and ignored.
"""

from __future__ import annotations

import socket
from array import array
from collections import Counter

from latscope.contract import FLAG_DUPLICATE, FLAG_REORDERED, MISSING
from latscope.probe import timestamping as ts
from latscope.probe import wire
from latscope.probe.columns import column

_unpack = wire.HEADER.unpack_from
_MSG_TRUNC = int(socket.MSG_TRUNC)


class EchoReader:
    """Per-seq columns of the echoes (t4 at the sender, t2 and t3 from the reflector) and accounting."""

    def __init__(self, sock: socket.socket, count: int, stream: int, nonce: int, key: bytes | None,
                 max_size: int = 65_535) -> None:
        self.sock = sock
        self.count = count
        self.stream = stream
        self.nonce = nonce
        self.signer = wire.Signer(key) if key is not None else None
        self.buf = bytearray(max_size + 1)
        self.view = memoryview(self.buf)
        self.rx_sw: array = column(count)
        self.rx_hw: array = column(count)
        self.rx_user: array = column(count)
        self.far_rx: array = column(count)
        self.far_tx: array = column(count)
        self.flags: array = column(count, 0)
        self.received = 0
        self.duplicated = 0
        self.reordered = 0
        self.max_seq = -1
        self.foreign: Counter[str] = Counter()
        self.end_echoed: int | None = None

    def drain(self, now) -> int:
        """Read every echo waiting (never blocks); how many datagrams were read."""
        recv_into = self.sock.recvmsg_into
        bufs = [self.buf]
        n = 0
        while True:
            try:
                nbytes, anc, mflags, _addr = recv_into(bufs, ts.ANCILLARY_SIZE, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return n
            except InterruptedError:
                continue
            except OSError:
                # An ICMP error queued for an earlier packet (the reflector is not there yet): the
                # round trip's loss shows as a missing echo.
                continue
            n += 1
            self._one(nbytes, anc, mflags, now())

    def _one(self, nbytes: int, anc, mflags: int, user: int) -> None:
        if nbytes < wire.HEADER_SIZE:
            self.foreign[wire.FOREIGN_SHORT] += 1
            return
        h = _unpack(self.buf, 0)
        if h[0] != wire.MAGIC or h[1] != wire.VERSION or h[3] != nbytes or mflags & _MSG_TRUNC:
            self.foreign[wire.FOREIGN_MAGIC if h[0] != wire.MAGIC else wire.FOREIGN_VERSION
                         if h[1] != wire.VERSION else wire.FOREIGN_LENGTH] += 1
            return
        kind, stream, nonce, seq, flags = h[2], h[4], h[5], h[6], h[12]
        if kind not in (wire.KIND_ECHO, wire.KIND_ECHO_END):
            self.foreign[wire.FOREIGN_KIND] += 1
            return
        if stream != self.stream:
            self.foreign[wire.FOREIGN_STREAM] += 1
            return
        if nonce != self.nonce:
            self.foreign[wire.FOREIGN_NONCE] += 1
            return
        if (self.signer is not None or flags & wire.FLAG_MAC) and (
                self.signer is None or not flags & wire.FLAG_MAC or nbytes < wire.MIN_SIZE_MAC
                or not wire.mac_ok(self.signer, self.view, nbytes)):
            self.foreign[wire.FOREIGN_AUTH] += 1
            return
        if kind == wire.KIND_ECHO_END:
            pairs = wire.end_tx_pairs(self.buf, nbytes, h[13], flags)
            if pairs is None or not 0 <= seq <= self.count:
                self.foreign[wire.FOREIGN_RANGE] += 1
                return
            for s, t3 in pairs:
                if 0 <= s < self.count and self.far_tx[s] == MISSING:
                    self.far_tx[s] = t3
            self.end_echoed = seq
            return
        if not 0 <= seq < self.count:
            self.foreign[wire.FOREIGN_SEQ] += 1
            return
        if self.rx_user[seq] != MISSING:
            self.duplicated += 1
            self.flags[seq] |= FLAG_DUPLICATE
            return
        self.rx_user[seq] = user
        got = ts.timestamps(anc)
        if got is not None:
            if got[0]:
                self.rx_sw[seq] = got[0]
            if got[1]:
                self.rx_hw[seq] = got[1]
        if h[7]:
            self.far_rx[seq] = h[7]
        back = h[11]
        if back and back <= seq and self.far_tx[seq - back] == MISSING:
            self.far_tx[seq - back] = h[10]
        if seq < self.max_seq:
            self.flags[seq] |= FLAG_REORDERED
            self.reordered += 1
        else:
            self.max_seq = seq
        self.received += 1
