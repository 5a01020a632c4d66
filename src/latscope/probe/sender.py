"""The sender: one packet per period at absolute deadlines, with kernel TX timestamps.

Nothing in the loop logs, prints or writes files (unless the user asked for
``--stream-log`` to see what that costs). Columns are preallocated; the
results leave the process only after the last packet.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from latscope.contract import FLAG_SEND_FAILED, MISSING
from latscope.errors import ConfigError
from latscope.probe import timestamping as ts
from latscope.probe import wire
from latscope.probe.auth import optional_key
from latscope.probe.clock import Clock
from latscope.probe.columns import column
from latscope.probe.echoes import EchoReader
from latscope.probe.sockets import SenderSocket
from latscope.probe.spec import SenderSpec

HELLO_COPIES = 3
END_COPIES = 3
_ID = struct.Struct("I")
_TXTIME = struct.Struct("Q")
_SEND_NS = struct.Struct("!q")
_MAC = struct.Struct(f"{wire.MAC_SIZE}s")  # truncates the 32-byte digest to the MAC it carries
_TX_DRAIN_NS = 50_000_000
# A plain int: or-ing the enum members on every call costs more than the syscall's setup.
_ERRQUEUE_NOWAIT = int(socket.MSG_ERRQUEUE) | int(socket.MSG_DONTWAIT)


class Interrupted(BaseException):
    """Raised from a signal handler to end a run early; what was measured is kept.

    A BaseException, like KeyboardInterrupt, so no ``except Exception`` in
    library code swallows it.
    """


@dataclass
class SenderResult:
    """Per-packet columns (index = seq) and what happened."""

    sched: array
    wake: array
    send: array
    tx_sw: array
    tx_hw: array
    flags: array
    done: int = 0
    send_failed: int = 0
    interrupted: bool = False
    base_time_ns: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    #: Round trips: the echoes read (spec.echo).
    echo: EchoReader | None = None


def aligned_start(now_ns: int, period_ns: int, lead_ns: int) -> int:
    """The first whole multiple of the period at least ``lead_ns`` from now."""
    earliest = now_ns + lead_ns
    return -(-earliest // period_ns) * period_ns


class _TxCollector:
    """Reads TX timestamps from the error queue and files them under their seq."""

    def __init__(self, sock: socket.socket, tx_sw: array, tx_hw: array, id_to_seq) -> None:
        self.sock = sock
        self.tx_sw = tx_sw
        self.tx_hw = tx_hw
        self.id_to_seq = id_to_seq
        self.latest_seq = -1
        self.txtime_errors = 0

    def drain(self) -> None:
        recvmsg = self.sock.recvmsg
        flags = _ERRQUEUE_NOWAIT
        while True:
            try:
                _data, anc, _f, _a = recvmsg(0, ts.ANCILLARY_SIZE, flags)
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            except OSError:
                # An error queued for an earlier send (e.g. ICMP unreachable):
                # reading it cleared it; the packet's loss shows at the receiver.
                continue
            rep = ts.tx_report(anc)
            if rep is None:
                if anc:
                    self.txtime_errors += 1
                continue
            seq = self.id_to_seq(rep[0])
            if 0 <= seq < len(self.tx_sw):
                if rep[1]:
                    self.tx_sw[seq] = rep[1]
                if rep[2]:
                    self.tx_hw[seq] = rep[2]
                self.latest_seq = max(self.latest_seq, seq)


def run_sender(
    spec: SenderSpec,
    out: SenderSocket,
    clock: Clock,
    *,
    progress: memoryview | None = None,
    log_fd: int | None = None,
    marker_fd: int | None = None,
    tai_offset_ns: int = 0,
) -> SenderResult:
    """Send ``spec.count`` packets; return the columns even when Interrupted ends the run early."""
    n = spec.count
    period = spec.period_ns
    res = SenderResult(column(n), column(n), column(n), column(n), column(n), column(n, 0))
    sched_c, wake_c, send_c, txs_c, txh_c, flags_c = res.sched, res.wake, res.send, res.tx_sw, res.tx_hw, res.flags
    sock = out.sock
    off = len(out.prefix)
    size = spec.size
    buf = bytearray(off + size)
    buf[:off] = out.prefix
    stream, nonce = spec.stream, spec.nonce
    key = optional_key(spec.key_file)
    if key is not None and size < wire.MIN_SIZE_MAC:
        raise ConfigError(f"--size {size} leaves no room for the MAC: at least {wire.MIN_SIZE_MAC} with --key-file")
    mac_flag = wire.FLAG_MAC if key is not None else 0
    pack_header = wire.HEADER.pack_into
    pack_send = _SEND_NS.pack_into
    now = clock.now_ns
    sleep_until = clock.sleep_until
    magic, version, kind = wire.MAGIC, wire.VERSION, wire.KIND_DATA
    soff = off + wire.SEND_OFFSET
    # The MAC covers the payload up to itself; the view is made once, the buffer never moves.
    mac_off = off + size - wire.MAC_SIZE
    signed = memoryview(buf)[off:mac_off]
    mac, pack_mac = (wire.Signer(key).digest if key is not None else None), _MAC.pack_into

    base = spec.base_time_ns if spec.base_time_ns is not None else aligned_start(now(), period, spec.start_delay_ns)
    res.base_time_ns = base
    hello = dict(spec.hello or {}, base_time_ns=base, period_ns=period, count=n, size=size)
    per_packet_id = _send_hellos(stream, nonce, hello, size, out, key)
    hello_ids = 0 if per_packet_id else HELLO_COPIES
    id_to_seq = (lambda i: i) if per_packet_id else (lambda i: i - hello_ids)
    tx = _TxCollector(sock, txs_c, txh_c, id_to_seq)
    drain = tx.drain
    send, sendmsg = sock.send, sock.sendmsg
    txtime = out.txtime
    txtime_add = tai_offset_ns + (spec.txtime_offset_ns or 0)
    sol, scm_id, scm_txtime = socket.SOL_SOCKET, ts.SCM_TS_OPT_ID, ts.SCM_TXTIME
    pack_id, pack_txtime = _ID.pack, _TXTIME.pack
    if spec.echo:
        res.echo = EchoReader(sock, n, stream, nonce, key, max(size, wire.ECHO_END_MAX_SIZE))
    echo_drain = res.echo.drain if res.echo is not None else None

    carried = -1
    seq = 0
    try:
        while seq < n:
            deadline = base + seq * period
            sleep_until(deadline)
            wake = now()
            latest = tx.latest_seq
            if latest > carried and seq - latest <= 255:
                back = seq - latest
                tx_val = txh_c[latest] if txh_c[latest] != MISSING else txs_c[latest]
                txf = wire.TXF_HW if txh_c[latest] != MISSING else 0
                carried = latest
            else:
                back = tx_val = txf = 0
            pack_header(buf, off, magic, version, kind, size, stream, nonce, seq, deadline, wake, 0,
                        tx_val, back, txf | mac_flag, 0)
            if mac is not None:  # a key was given
                # Before the clock read for send_ns (which the MAC leaves out, as zero):
                # the MAC's cost shows in the sender's own work, not in the latency.
                pack_mac(buf, mac_off, mac(signed))
            if marker_fd is not None:
                os.write(marker_fd, b"latscope tx seq=%d\n" % seq)
            t_send = now()
            pack_send(buf, soff, t_send)
            try:
                if txtime:
                    sendmsg([buf], [(sol, scm_txtime, pack_txtime(deadline + txtime_add))]
                            + ([(sol, scm_id, pack_id(seq & 0xFFFFFFFF))] if per_packet_id else []))
                elif per_packet_id:
                    sendmsg([buf], [(sol, scm_id, pack_id(seq & 0xFFFFFFFF))])
                else:
                    send(buf)
            except OSError as exc:
                if exc.errno not in _TRANSIENT:
                    raise
                flags_c[seq] = FLAG_SEND_FAILED
                res.send_failed += 1
            sched_c[seq] = deadline
            wake_c[seq] = wake
            send_c[seq] = t_send
            seq += 1
            drain()
            if echo_drain is not None:
                echo_drain(now)
            if log_fd is not None:
                os.write(log_fd, b"%d %d %d %d\n" % (seq - 1, deadline, wake, t_send))
            if progress is not None:
                progress[1] = seq
                if res.echo is not None:
                    progress[0] = res.echo.received
    except Interrupted:
        res.interrupted = True
    res.done = seq
    try:
        _finish(spec, out, tx, res, key, now)
    except Interrupted:
        res.interrupted = True
    res.info.update(
        authenticated=key is not None,
        per_packet_tx_id=per_packet_id,
        txtime_errors=tx.txtime_errors,
        tx_timestamps=sum(1 for i in range(res.done) if txs_c[i] != MISSING or txh_c[i] != MISSING),
    )
    if res.echo is not None:
        e = res.echo
        res.info.update(echoes=e.received, echo_duplicated=e.duplicated, echo_reordered=e.reordered,
                        echo_foreign=dict(e.foreign), echo_end=e.end_echoed)
    return res


_TRANSIENT = {errno.ENOBUFS, errno.EAGAIN, errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH,
              errno.EMSGSIZE}


def _send_hellos(stream: int, nonce: int, hello: dict[str, Any], size: int, out: SenderSocket,
                 key: bytes | None) -> bool:
    """Send the hello copies; return True when the kernel takes per-send timestamp ids.

    The first hello doubles as the probe for SCM_TS_OPT_ID (Linux 6.13): an
    older kernel rejects the control message with EINVAL, and we fall back to
    the kernel's own counter, which counts the hellos too.
    """
    payload = out.prefix + wire.hello_payload(stream, nonce, hello, size, key)
    per_packet = True
    for i in range(HELLO_COPIES):
        try:
            if per_packet:
                try:
                    out.sock.sendmsg([payload], [(socket.SOL_SOCKET, ts.SCM_TS_OPT_ID, _ID.pack(0xFFFFFFFF))])
                    continue
                except OSError as exc:
                    if exc.errno != errno.EINVAL or i:
                        raise
                    per_packet = False
            out.sock.send(payload)
        except OSError as exc:
            if exc.errno not in _TRANSIENT:
                raise
    # The hellos' own TX reports carry no data packet's id; discard them.
    while True:
        try:
            out.sock.recvmsg(0, ts.ANCILLARY_SIZE, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
        except BlockingIOError:
            break
        except OSError:
            continue
    return per_packet


def _finish(spec: SenderSpec, out: SenderSocket, tx: _TxCollector, res: SenderResult, key: bytes | None,
            now: Callable[[], int]) -> None:
    """Collect late TX timestamps, then tell the receiver how many packets were sent."""
    import time

    deadline = time.monotonic_ns() + _TX_DRAIN_NS
    missing = [s for s in range(max(0, res.done - wire.END_MAX_TX), res.done)
               if res.tx_sw[s] == MISSING and res.tx_hw[s] == MISSING and not res.flags[s]]
    while missing and time.monotonic_ns() < deadline:
        tx.drain()
        missing = [s for s in missing if res.tx_sw[s] == MISSING and res.tx_hw[s] == MISSING]
        if missing:
            time.sleep(0.001)
    pairs = []
    for s in range(max(0, res.done - wire.END_MAX_TX), res.done):
        v = res.tx_hw[s] if res.tx_hw[s] != MISSING else res.tx_sw[s]
        if v != MISSING:
            pairs.append((s, v))
    payload = out.prefix + wire.end_payload(spec.stream, spec.nonce, res.done, pairs, spec.size, key)
    for _ in range(END_COPIES):
        try:
            out.sock.send(payload)
        except OSError as exc:
            if exc.errno not in _TRANSIENT:
                raise
        time.sleep(0.001)
    if res.echo is not None:
        # The last echoes, and the echo end with their t3: bounded by echo_wait_ns.
        echo = res.echo
        until = time.monotonic_ns() + spec.echo_wait_ns
        while echo.end_echoed is None and time.monotonic_ns() < until:
            echo.drain(now)
            time.sleep(0.001)
        echo.drain(now)
