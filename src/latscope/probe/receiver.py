"""The receiver: kernel RX timestamps for every packet, validation, loss and order accounting.

Anything that is not a packet of this run (wrong magic, version, length,
stream, an impossible seq, a truncated or oversized datagram) is counted as
foreign by reason and otherwise ignored.
"""

from __future__ import annotations

import os
import socket
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from latscope.probe import timestamping as ts
from latscope.probe import wire
from latscope.probe.clock import Clock
from latscope.probe.columns import column, grow
from latscope.probe.sender import Interrupted
from latscope.probe.sockets import PACKET_OUTGOING, vlan_of
from latscope.probe.spec import ReceiverSpec
from latscope.contract import FLAG_DUPLICATE, FLAG_REORDERED, MISSING

_UNKNOWN_COUNT_CHUNK = 1 << 16


@dataclass
class ReceiverResult:
    """Per-packet columns (index = seq) and the run's accounting."""

    sched: array
    wake: array
    send: array
    tx: array
    tx_is_hw: array
    rx_sw: array
    rx_hw: array
    rx_user: array
    flags: array
    received: int = 0
    duplicated: int = 0
    reordered: int = 0
    foreign: Counter = field(default_factory=Counter)
    stream: int | None = None
    count: int | None = None
    sent_reported: int | None = None
    hello: dict[str, Any] | None = None
    stop_reason: str = ""
    interrupted: bool = False
    first_rx_ns: int | None = None
    last_rx_ns: int | None = None

    @property
    def capacity(self) -> int:
        return len(self.rx_user)


def _empty(n: int) -> ReceiverResult:
    return ReceiverResult(*(column(n) for _ in range(8)), column(n, 0))


def run_receiver(
    spec: ReceiverSpec,
    sock: socket.socket,
    clock: Clock,
    *,
    progress: memoryview | None = None,
    log_fd: int | None = None,
    marker_fd: int | None = None,
    on_ready=None,
) -> ReceiverResult:
    """Receive until the sender's end packet (plus a grace period), idle timeout or Interrupted."""
    res = _empty(spec.count or 0)
    if spec.count:
        res.count = spec.count
    res.stream = spec.stream
    is_packet = sock.family == socket.AF_PACKET
    ethertype = spec.listen.ethertype
    want_vid = spec.listen.vid
    buf = bytearray(spec.max_size + 1)
    recv_into = sock.recvmsg_into
    bufs = [buf]
    anc_size = ts.ANCILLARY_SIZE
    now = clock.now_ns
    unpack = wire.HEADER.unpack_from
    hsize = wire.HEADER_SIZE
    magic, version = wire.MAGIC, wire.VERSION
    foreign = res.foreign
    sol_socket, scm_ts = socket.SOL_SOCKET, ts.SCM_TIMESTAMPING
    from_ts3 = ts._TS3.unpack_from
    max_seq = -1
    end_seen = False
    received = 0
    if on_ready is not None:
        on_ready()
    try:
        while True:
            try:
                nbytes, anc, mflags, addr = recv_into(bufs, anc_size)
            except TimeoutError:
                res.stop_reason = "end" if end_seen else "timeout"
                break
            except InterruptedError:
                continue
            user = now()
            if is_packet:
                if addr[2] == PACKET_OUTGOING or addr[1] != ethertype:
                    continue
                if want_vid is not None:
                    tag = vlan_of(anc)
                    if tag is None or tag[0] != want_vid:
                        foreign["vlan"] += 1
                        continue
            if nbytes < hsize:
                foreign[wire.FOREIGN_SHORT] += 1
                continue
            (mg, ver, kind, length, stream, seq, sched, wake, send, _period, count32,
             tx_val, back, txf, _r) = unpack(buf, 0)
            if mg != magic:
                foreign[wire.FOREIGN_MAGIC] += 1
                continue
            if ver != version:
                foreign[wire.FOREIGN_VERSION] += 1
                continue
            if length != nbytes or mflags & socket.MSG_TRUNC:
                foreign[wire.FOREIGN_LENGTH] += 1
                continue
            if res.stream is None:
                res.stream = stream
            elif stream != res.stream:
                foreign[wire.FOREIGN_STREAM] += 1
                continue
            if kind != wire.KIND_DATA:
                if kind == wire.KIND_HELLO:
                    if res.hello is None:
                        res.hello = wire.hello_config(buf, nbytes)
                        _learn_count(res, res.hello.get("count") if res.hello else None)
                elif kind == wire.KIND_END:
                    header = wire.Header(kind, length, stream, seq, sched, wake, send, _period, count32,
                                         tx_val, back, txf)
                    _apply_end(res, header, wire.end_tx_pairs(buf, header))
                    if not end_seen:
                        end_seen = True
                        sock.settimeout(spec.grace_ns / 1e9)
                else:
                    foreign[wire.FOREIGN_KIND] += 1
                continue
            if res.count is None:
                _learn_count(res, count32 or None)
            if seq >= res.capacity:
                if res.count is not None and seq >= res.count:
                    foreign[wire.FOREIGN_SEQ] += 1
                    continue
                _grow(res, seq + 1)
            rx_user = res.rx_user
            if rx_user[seq] != MISSING:
                res.duplicated += 1
                res.flags[seq] |= FLAG_DUPLICATE
                continue
            rx_user[seq] = user
            for level, ctype, data in anc:
                if level == sol_socket and ctype == scm_ts:
                    s0, n0, _s1, _n1, s2, n2 = from_ts3(data)
                    res.rx_sw[seq] = s0 * 1_000_000_000 + n0
                    if s2 or n2:
                        res.rx_hw[seq] = s2 * 1_000_000_000 + n2
            res.sched[seq] = sched
            res.wake[seq] = wake
            res.send[seq] = send
            if back and back <= seq:
                res.tx[seq - back] = tx_val
                res.tx_is_hw[seq - back] = txf & wire.TXF_HW
            if seq < max_seq:
                res.flags[seq] |= FLAG_REORDERED
                res.reordered += 1
            else:
                max_seq = seq
            received += 1
            if res.first_rx_ns is None:
                res.first_rx_ns = user
            res.last_rx_ns = user
            if marker_fd is not None:
                os.write(marker_fd, b"latscope rx seq=%d\n" % seq)
            if log_fd is not None:
                os.write(log_fd, b"%d %d %d\n" % (seq, res.rx_sw[seq], user))
            if progress is not None:
                progress[0] = received
    except Interrupted as exc:
        res.interrupted = True
        res.stop_reason = str(exc) or "interrupted"
    res.received = received
    return res


def _learn_count(res: ReceiverResult, count: int | None) -> None:
    if res.count is None and isinstance(count, int) and count > 0:
        res.count = count
        _grow(res, count)


def _grow(res: ReceiverResult, n: int) -> None:
    if res.count is None:
        n = max(n, res.capacity * 2, _UNKNOWN_COUNT_CHUNK)
    for name in ("sched", "wake", "send", "tx", "tx_is_hw", "rx_sw", "rx_hw", "rx_user"):
        grow(getattr(res, name), n)
    grow(res.flags, n, 0)


def _apply_end(res: ReceiverResult, header: wire.Header, pairs: list[tuple[int, int]]) -> None:
    res.sent_reported = header.seq
    for seq, tx in pairs:
        if 0 <= seq < res.capacity and res.tx[seq] == MISSING:
            res.tx[seq] = tx
