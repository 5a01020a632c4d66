"""The reflector: answers every packet of the stream at once, with its kernel RX and TX times (round trips).

Four timestamps per packet, as NTP has them: t1 the sender's kernel TX, t2
this end's kernel RX (in the echo), t3 this end's kernel TX of the echo, t4
the sender's kernel RX of the echo. The kernel stamps t3 as the echo leaves,
after it was written, so the echo cannot carry its own t3. Of the three ways
to get it to the sender (a follow-up per echo, the next echo, merging this
end's records after the run) latscope uses PTP two-step's idea without its
extra packet: each echo carries the t3 of the latest earlier echo whose TX
timestamp is known (probe.wire), and the echo end, sent when the sender's end
arrives, the t3 of the last ones. The sender then holds every timestamp of
every round trip, which an agent on another host needs (nothing to fetch
from the far end after the run), and the loop sends exactly one packet per
packet received (the rate the sender chose, never more). This end also
keeps its own columns (t2, t3 per seq): when both ends are on this host,
the run fills in the t3 of echoes whose successor was lost from them.

Which datagrams are the run's is probe.classify's decision, as for the
receiver; only accepted data packets are answered, each once (a duplicate is
counted, not echoed), so a forged or stale packet never makes this end send.
"""

from __future__ import annotations

import socket
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from latscope.contract import MISSING
from latscope.probe import timestamping as ts
from latscope.probe import wire
from latscope.probe.auth import optional_key
from latscope.probe.classify import Classifier
from latscope.probe.clock import Clock
from latscope.probe.columns import column, grow
from latscope.probe.receiver import memory_budget
from latscope.probe.sender import Interrupted
from latscope.probe.spec import ReflectorSpec

_COLUMNS = ("far_rx", "far_rx_is_hw", "far_tx", "far_tx_is_hw", "far_user")
SLOT_BYTES = 8 * (len(_COLUMNS) + 1)
_ERRQUEUE_NOWAIT = int(socket.MSG_ERRQUEUE) | int(socket.MSG_DONTWAIT)
#: How long the reflector waits for the TX timestamps of its last echoes before it sends the echo end.
TX_DRAIN_NS = 50_000_000
ECHO_END_COPIES = 3


@dataclass
class ReflectorResult:
    """Per-packet columns (index = seq, this end's clock) and what happened."""

    far_rx: array
    far_rx_is_hw: array
    far_tx: array
    far_tx_is_hw: array
    far_user: array
    flags: array
    received: int = 0
    echoed: int = 0
    duplicated: int = 0
    echo_failed: int = 0
    foreign: Counter = field(default_factory=Counter)
    stream: int | None = None
    count: int | None = None
    sent_reported: int | None = None
    hello: dict[str, Any] | None = None
    stop_reason: str = ""
    interrupted: bool = False
    capacity: int = 0
    info: dict[str, Any] = field(default_factory=dict)


def enable_timestamps(sock: socket.socket) -> None:
    """RX timestamps for t2 and TX timestamps (error queue, OPT_ID counter) for t3 on one socket."""
    sock.setsockopt(socket.SOL_SOCKET, ts.SO_TIMESTAMPING, ts.RX_FLAGS | ts.TX_FLAGS)


def _allocator(res: ReflectorResult):
    def alloc(n: int) -> int:
        if n > res.capacity:
            try:
                for name in _COLUMNS:
                    grow(getattr(res, name), n, 0 if name.endswith("_is_hw") else MISSING)
                grow(res.flags, n, 0)
                res.capacity = n
            except MemoryError:
                res.capacity = min(len(getattr(res, c)) for c in (*_COLUMNS, "flags"))
        return res.capacity

    return alloc


class _TxStamps:
    """The kernel's TX timestamps of the echoes, filed under the seq each echo answered."""

    def __init__(self, sock: socket.socket, res: ReflectorResult, id_seq: array) -> None:
        self.sock = sock
        self.res = res
        self.id_seq = id_seq  # k-th datagram sent by this socket -> seq (the kernel's OPT_ID counter)
        self.latest = -1      # seq of the latest echo whose t3 is known

    def drain(self) -> None:
        recvmsg = self.sock.recvmsg
        res, id_seq = self.res, self.id_seq
        while True:
            try:
                _d, anc, _f, _a = recvmsg(0, ts.ANCILLARY_SIZE, _ERRQUEUE_NOWAIT)
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            except OSError:
                continue
            rep = ts.tx_report(anc)
            if rep is None or rep[0] >= len(id_seq):
                continue
            seq = id_seq[rep[0]]
            if seq < 0:
                continue
            if rep[2]:
                res.far_tx[seq], res.far_tx_is_hw[seq] = rep[2], 1
            elif rep[1]:
                res.far_tx[seq] = rep[1]
            self.latest = max(self.latest, seq)


def run_reflector(
    spec: ReflectorSpec,
    sock: socket.socket,
    clock: Clock,
    *,
    progress: memoryview | None = None,
    on_ready=None,
) -> ReflectorResult:
    """Echo every data packet of the stream until the sender's end (plus grace), idle timeout or Interrupted."""
    res = ReflectorResult(column(0), column(0, 0), column(0), column(0, 0), column(0), column(0, 0))
    key = optional_key(spec.key_file)
    clf = Classifier(max_slots=memory_budget(spec) // SLOT_BYTES, alloc=_allocator(res), on_end=lambda _p: None,
                     stream=spec.stream, nonce=spec.nonce, count=spec.count, key=key, max_size=spec.max_size)
    signer = wire.Signer(key) if key is not None else None
    classify = clf.classify
    recv_into = sock.recvmsg_into
    sendto = sock.sendto
    bufs = [clf.buf]
    out = bytearray(len(clf.buf))
    out_view = memoryview(out)
    anc_size = ts.ANCILLARY_SIZE
    now = clock.now_ns
    from_ts3 = ts._TS3.unpack_from
    sol_socket, scm_ts = socket.SOL_SOCKET, ts.SCM_TIMESTAMPING
    pack_header = wire.HEADER.pack_into
    magic, version, kind = wire.MAGIC, wire.VERSION, wire.KIND_ECHO
    mac_flag = wire.FLAG_MAC if key is not None else 0
    # One entry per datagram this socket sends (echoes, then echo ends): the OPT_ID counter's meaning.
    id_seq = column(0, -1)
    tx = _TxStamps(sock, res, id_seq)
    carried = -1
    end_sent = False
    peer = None
    received = 0
    if on_ready is not None:
        on_ready()
    try:
        while True:
            try:
                nbytes, anc, mflags, addr = recv_into(bufs, anc_size)
            except TimeoutError:
                res.stop_reason = "end" if end_sent else "timeout"
                break
            except InterruptedError:
                continue
            user = now()
            h = classify(nbytes, mflags)
            if h is None:
                if clf.end_seen and not end_sent and peer is not None:
                    _echo_end(sock, res, tx, clf, peer, key, spec)
                    end_sent = True
                    sock.settimeout(spec.grace_ns / 1e9)
                continue
            seq = h[6]
            if res.far_user[seq] != MISSING:
                res.duplicated += 1
                continue
            res.far_user[seq] = user
            rx, rx_hw = MISSING, 0
            for level, ctype, data in anc:
                if level == sol_socket and ctype == scm_ts:
                    s0, n0, _s1, _n1, s2, n2 = from_ts3(data)
                    if s2 or n2:
                        rx, rx_hw = s2 * 1_000_000_000 + n2, 1
                    else:
                        rx = s0 * 1_000_000_000 + n0
            res.far_rx[seq] = rx
            res.far_rx_is_hw[seq] = rx_hw
            latest = tx.latest
            if latest > carried and 0 < seq - latest <= 255:
                tx_val, back, txf = res.far_tx[latest], seq - latest, res.far_tx_is_hw[latest]
                carried = latest
            else:
                tx_val = back = txf = 0
            out[:nbytes] = clf.buf[:nbytes]
            pack_header(out, 0, magic, version, kind, nbytes, h[4], h[5], seq, 0 if rx == MISSING else rx, user,
                        0, tx_val, back, txf | mac_flag | (wire.ECHO_RX_HW if rx_hw else 0), 0)
            if signer is not None:
                wire.sign_into(signer, out, 0, nbytes)
            try:
                sendto(out_view[:nbytes], addr)
                id_seq.append(seq)
                res.echoed += 1
            except OSError:
                res.echo_failed += 1
            peer = addr
            received += 1
            tx.drain()
            if progress is not None:
                progress[0] = received
    except Interrupted as exc:
        res.interrupted = True
        res.stop_reason = str(exc) or "interrupted"
    res.received = received
    res.foreign = clf.foreign
    res.stream, res.count, res.hello, res.sent_reported = clf.stream, clf.count, clf.hello, clf.sent_reported
    res.info.update(capacity=res.capacity, refused=clf.refused, hellos=clf.hellos, ends=clf.ends,
                    authenticated=key is not None, echoed=res.echoed, echo_failed=res.echo_failed,
                    echo_end_sent=end_sent)
    return res


def _echo_end(sock: socket.socket, res: ReflectorResult, tx: _TxStamps, clf: Classifier, peer: Any,
              key: bytes | None, spec: ReflectorSpec) -> None:
    """Wait briefly for the last echoes' TX timestamps, then send the echo end with them."""
    deadline = time.monotonic_ns() + TX_DRAIN_NS
    recent = [s for s in tx.id_seq[-wire.END_MAX_TX:] if s >= 0]
    while time.monotonic_ns() < deadline and any(res.far_tx[s] == MISSING for s in recent):
        tx.drain()
        time.sleep(0.001)
    pairs = [(s, res.far_tx[s]) for s in recent if res.far_tx[s] != MISSING]
    size = max(wire.HEADER_SIZE, len(pairs) * wire.TX_PAIR.size + wire.HEADER_SIZE)
    payload = wire.echo_end_payload(clf.stream or 0, clf.nonce or 0, res.echoed, pairs, size, key)
    for _ in range(ECHO_END_COPIES):
        try:
            sock.sendto(payload, peer)
            tx.id_seq.append(-1)
        except OSError:
            pass
        time.sleep(0.001)
