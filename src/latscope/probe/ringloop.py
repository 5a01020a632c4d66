"""The endless sender and receiver loops of `latscope monitor`: `run`'s loops, writing into a ring.

They differ from probe.sender/receiver in three ways only: there is no
count (they run until a signal), each packet's values go to slot
``seq & mask`` of a shared-memory ring (probe.ring) instead of a
preallocated column, and nothing is written at the end: the controller has
been copying finished slots all along. No TX timestamp travels in the
packets (the controller has the sender's ring), no end packet is sent.
"""

from __future__ import annotations

import errno
import socket
import struct
from typing import Any

from latscope.contract import FLAG_DUPLICATE, FLAG_REORDERED, FLAG_SEND_FAILED, MISSING
from latscope.errors import ConfigError
from latscope.probe import ring as R
from latscope.probe import timestamping as ts
from latscope.probe import wire
from latscope.probe.auth import optional_key
from latscope.probe.classify import Classifier
from latscope.probe.clock import Clock
from latscope.probe.config import MAX_COUNT
from latscope.probe.sender import HELLO_COPIES, Interrupted, _send_hellos, aligned_start
from latscope.probe.sockets import PACKET_OUTGOING, SenderSocket, vlan_of
from latscope.probe.spec import ReceiverSpec, SenderSpec
from latscope.units import MAX_DURATION_NS

#: The count a monitor's hello announces and its receiver accepts seqs below: never reached.
ENDLESS = 1 << 62
_ID = struct.Struct("I")
_SEND_NS = struct.Struct("!q")
_MAC = struct.Struct(f"{wire.MAC_SIZE}s")
_ERRQUEUE_NOWAIT = int(socket.MSG_ERRQUEUE) | int(socket.MSG_DONTWAIT)
_TRANSIENT = {errno.ENOBUFS, errno.EAGAIN, errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH,
              errno.EMSGSIZE}
_M32 = 0xFFFFFFFF


def run_ring_sender(spec: SenderSpec, out: SenderSocket, clock: Clock, ring: R.Ring,
                    tai_offset_ns: int = 0) -> dict[str, Any]:
    """Send from ``spec.first_seq`` on, one packet per period, until Interrupted; what happened."""
    del tai_offset_ns  # no SO_TXTIME in a monitor
    period = spec.period_ns
    hdr, mask = ring.header, ring.mask
    sched_c, wake_c, send_c = ring.cols["sched"], ring.cols["wake"], ring.cols["send"]
    txs_c, txh_c, flags_c = ring.cols["tx_sw"], ring.cols["tx_hw"], ring.cols["flags"]
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
    mac_off = off + size - wire.MAC_SIZE
    signed = memoryview(buf)[off:mac_off]
    mac, pack_mac = (wire.Signer(key).digest if key is not None else None), _MAC.pack_into
    pack_header, pack_send = wire.HEADER.pack_into, _SEND_NS.pack_into
    magic, version, kind = wire.MAGIC, wire.VERSION, wire.KIND_DATA
    soff = off + wire.SEND_OFFSET
    now, sleep_until = clock.now_ns, clock.sleep_until
    first = spec.first_seq
    base = spec.base_time_ns if spec.base_time_ns is not None else aligned_start(now(), period, spec.start_delay_ns)
    # The hello's count is nominal (no monitor ends by count): the largest a receiver's check accepts.
    nominal = max(1, min(MAX_COUNT, MAX_DURATION_NS // period))
    hello = dict(spec.hello or {}, base_time_ns=base, period_ns=period, count=nominal, size=size)
    per_packet_id = _send_hellos(stream, nonce, hello, size, out, key)
    # The kernel's own counter (older kernels) counts the hellos too; ours is the seq's low 32 bits.
    id_offset = 0 if per_packet_id else HELLO_COPIES - first
    hdr[R.H_FIRST_SEQ] = first
    hdr[R.H_BASE_TIME] = base
    send, sendmsg = sock.send, sock.sendmsg
    sol, scm_id, pack_id = socket.SOL_SOCKET, ts.SCM_TS_OPT_ID, _ID.pack
    recvmsg, tx_report, anc_size = sock.recvmsg, ts.tx_report, ts.ANCILLARY_SIZE
    seq = first
    failed = 0
    try:
        while True:
            deadline = base + (seq - first) * period
            sleep_until(deadline)
            wake = now()
            pack_header(buf, off, magic, version, kind, size, stream, nonce, seq, deadline, wake, 0, 0, 0,
                        mac_flag, 0)
            if mac is not None:
                pack_mac(buf, mac_off, mac(signed))
            t_send = now()
            pack_send(buf, soff, t_send)
            i = seq & mask
            try:
                if per_packet_id:
                    sendmsg([buf], [(sol, scm_id, pack_id(seq & _M32))])
                else:
                    send(buf)
            except OSError as exc:
                if exc.errno not in _TRANSIENT:
                    raise
                flags_c[i] = FLAG_SEND_FAILED
                failed += 1
                hdr[R.H_SEND_FAILED] = failed
            sched_c[i] = deadline
            wake_c[i] = wake
            send_c[i] = t_send
            hdr[R.H_DONE] = seq + 1
            # TX timestamps of this and earlier packets: the id's low 32 bits, completed from the newest seq.
            cur_id = (seq + id_offset) & _M32
            while True:
                try:
                    _d, anc, _f, _a = recvmsg(0, anc_size, _ERRQUEUE_NOWAIT)
                except BlockingIOError:
                    break
                except InterruptedError:
                    continue
                except OSError:
                    continue
                rep = tx_report(anc)
                if rep is None:
                    continue
                s = seq - ((cur_id - rep[0]) & _M32)
                if s < hdr[R.H_WATERMARK] or s < first:
                    continue
                j = s & mask
                if rep[1]:
                    txs_c[j] = rep[1]
                if rep[2]:
                    txh_c[j] = rep[2]
            seq += 1
    except Interrupted:
        pass
    hdr[R.H_ENDED] = 1
    return {"done": seq, "first_seq": first, "send_failed": failed, "base_time_ns": base,
            "per_packet_tx_id": per_packet_id, "authenticated": key is not None, "interrupted": True}


def run_ring_receiver(spec: ReceiverSpec, sock: socket.socket, clock: Clock, ring: R.Ring,
                      on_ready: Any = None) -> dict[str, Any]:
    """Receive until Interrupted, writing kernel RX timestamps into the ring; what happened."""
    hdr, mask = ring.header, ring.mask
    rx_sw, rx_hw, rx_user, flags = ring.cols["rx_sw"], ring.cols["rx_hw"], ring.cols["rx_user"], ring.cols["flags"]
    # Nothing is allocated per packet: the ring is all the memory there is; the classifier's capacity is endless.
    clf = Classifier(max_slots=ENDLESS, alloc=lambda n: n, on_end=lambda _pairs: None, stream=spec.stream,
                     nonce=spec.nonce, count=ENDLESS, key=optional_key(spec.key_file), max_size=spec.max_size)
    classify = clf.classify
    is_packet = sock.family == socket.AF_PACKET
    ethertype, want_vid = spec.listen.ethertype, spec.listen.vid
    recv_into, bufs, anc_size = sock.recvmsg_into, [clf.buf], ts.ANCILLARY_SIZE
    now = clock.now_ns
    foreign = clf.foreign
    sol_socket, scm_ts = socket.SOL_SOCKET, ts.SCM_TIMESTAMPING
    from_ts3 = ts._TS3.unpack_from
    max_seq = -1
    received = duplicated = reordered = late = 0
    if on_ready is not None:
        on_ready()
    try:
        while True:
            try:
                nbytes, anc, mflags, addr = recv_into(bufs, anc_size)
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
                        hdr[R.H_FOREIGN] = sum(foreign.values())
                        continue
            h = classify(nbytes, mflags)
            if h is None:
                hdr[R.H_FOREIGN] = sum(foreign.values())
                continue
            seq = h[6]
            if seq < hdr[R.H_WATERMARK]:
                late += 1
                hdr[R.H_LATE] = late
                continue
            i = seq & mask
            if rx_user[i] != MISSING:
                duplicated += 1
                flags[i] |= FLAG_DUPLICATE
                hdr[R.H_DUPLICATED] = duplicated
                continue
            rx_user[i] = user
            for level, ctype, data in anc:
                if level == sol_socket and ctype == scm_ts:
                    s0, n0, _s1, _n1, s2, n2 = from_ts3(data)
                    rx_sw[i] = s0 * 1_000_000_000 + n0
                    if s2 or n2:
                        rx_hw[i] = s2 * 1_000_000_000 + n2
            if seq < max_seq:
                flags[i] |= FLAG_REORDERED
                reordered += 1
                hdr[R.H_REORDERED] = reordered
            else:
                max_seq = seq
                hdr[R.H_MAX_SEQ] = seq
            received += 1
            hdr[R.H_DONE] = received
    except Interrupted:
        pass
    hdr[R.H_ENDED] = 1
    return {"received": received, "duplicated": duplicated, "reordered": reordered, "late": late,
            "foreign": dict(foreign), "hellos": clf.hellos, "authenticated": clf.key is not None,
            "interrupted": True, "stop_reason": "interrupted"}
