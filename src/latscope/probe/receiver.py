"""The receiver: kernel RX timestamps for every packet, validation, loss and order accounting.

Which datagrams belong to the run is probe.classify's decision (stream,
nonce, MAC, ranges); anything else is counted as foreign by reason and
otherwise ignored. Memory comes from free RAM, never from a packet alone.
"""

from __future__ import annotations

import os
import socket
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from latscope.contract import FLAG_DUPLICATE, FLAG_REORDERED, MISSING
from latscope.probe import timestamping as ts
from latscope.probe import wire
from latscope.probe.auth import optional_key
from latscope.probe.classify import Classifier
from latscope.probe.clock import Clock
from latscope.probe.columns import column, grow
from latscope.probe.sender import Interrupted
from latscope.probe.sockets import PACKET_OUTGOING, vlan_of
from latscope.probe.spec import ReceiverSpec

_COLUMNS = ("sched", "wake", "send", "tx", "tx_is_hw", "rx_sw", "rx_hw", "rx_user")
#: Bytes one packet's slot takes in memory: the columns above and flags, int64 each.
SLOT_BYTES = 8 * (len(_COLUMNS) + 1)
#: The share of available memory the receiver may fill: saving copies the columns once more.
MEMORY_SHARE = 4
#: The budget when /proc/meminfo says nothing (a container without it): 14.9 million packets.
UNKNOWN_MEMORY_BUDGET = 1 << 30
_MEMINFO = "/proc/meminfo"


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
    #: Slots every column has (the classifier never hands out a seq at or above it).
    capacity: int = 0
    info: dict[str, Any] = field(default_factory=dict)


def _empty() -> ReceiverResult:
    return ReceiverResult(sched=column(0), wake=column(0), send=column(0), tx=column(0), tx_is_hw=column(0),
                          rx_sw=column(0), rx_hw=column(0), rx_user=column(0), flags=column(0, 0))


def available_memory(meminfo: str = _MEMINFO) -> int | None:
    """MemAvailable in bytes, or None when it cannot be read."""
    try:
        with open(meminfo, encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def memory_budget(spec: ReceiverSpec) -> int:
    """Bytes the columns may take: the spec's, else a share of what is available now."""
    if spec.memory_bytes is not None:
        return spec.memory_bytes
    avail = available_memory()
    return avail // MEMORY_SHARE if avail is not None else UNKNOWN_MEMORY_BUDGET


def _allocator(res: ReceiverResult):
    """Extend every column to n slots, or to as many as memory allows; return the capacity reached."""

    def alloc(n: int) -> int:
        while n > res.capacity:
            try:
                for name in _COLUMNS:
                    grow(getattr(res, name), n)
                grow(res.flags, n, 0)
                res.capacity = n
            except MemoryError:
                # Some columns may have grown: capacity stays what all of them have.
                res.capacity = min(len(getattr(res, c)) for c in (*_COLUMNS, "flags"))
                step = (n - res.capacity) // 2
                if step < 1024:
                    break
                n = res.capacity + step
        return res.capacity

    return alloc


def _end_pairs(res: ReceiverResult):
    def apply(pairs: list[tuple[int, int]]) -> None:
        for seq, tx in pairs:
            if res.tx[seq] == MISSING:
                res.tx[seq] = tx

    return apply


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
    res = _empty()
    clf = Classifier(max_slots=memory_budget(spec) // SLOT_BYTES, alloc=_allocator(res), on_end=_end_pairs(res),
                     stream=spec.stream, nonce=spec.nonce, count=spec.count, key=optional_key(spec.key_file),
                     max_size=spec.max_size)
    classify = clf.classify
    is_packet = sock.family == socket.AF_PACKET
    ethertype = spec.listen.ethertype
    want_vid = spec.listen.vid
    recv_into = sock.recvmsg_into
    bufs = [clf.buf]
    anc_size = ts.ANCILLARY_SIZE
    now = clock.now_ns
    foreign = clf.foreign
    sol_socket, scm_ts = socket.SOL_SOCKET, ts.SCM_TIMESTAMPING
    from_ts3 = ts._TS3.unpack_from
    txf_hw = wire.TXF_HW
    max_seq = -1
    end_armed = False
    received = 0
    if on_ready is not None:
        on_ready()
    try:
        while True:
            try:
                nbytes, anc, mflags, addr = recv_into(bufs, anc_size)
            except TimeoutError:
                res.stop_reason = "end" if end_armed else "timeout"
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
            h = classify(nbytes, mflags)
            if h is None:
                if clf.end_seen and not end_armed:
                    end_armed = True
                    sock.settimeout(spec.grace_ns / 1e9)
                continue
            (_m, _v, _k, _l, _s, _n, seq, sched, wake, send, tx_val, back, txf, _a) = h
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
                res.tx_is_hw[seq - back] = txf & txf_hw
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
    res.foreign = foreign
    res.stream, res.count, res.hello, res.sent_reported = clf.stream, clf.count, clf.hello, clf.sent_reported
    res.info.update(
        capacity=res.capacity, refused=clf.refused, memory_slots=clf.max_slots, hellos=clf.hellos,
        ends=clf.ends, authenticated=clf.key is not None,
    )
    return res
