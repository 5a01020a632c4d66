"""A packet's path across a QEMU hypervisor: checkpoints in the host trace and in the guest's.

Forward (host sends, guest receives), checkpoints C0..C15::

    C0  sched_ns                        the probe's scheduled send time
    C1  wake_ns                         the sender woke (probe)
    C2  sys_enter_sendto/sendmsg        host: the send call after "latscope tx seq=N"
    C3  net_dev_queue                   host: handed to the device (skb address from here on)
    C4  last host event of the skb      host: queued on the tap (net_dev_xmit) / macvtap's lower device
    C5  sched_waking of the reader      host: the tap woke QEMU's main loop
    C6  the reader runs                 host: the main loop's run that reads the tap starts
    C7  skb_copy_datagram_iovec         host: a QEMU thread copies the packet out of the tap
    C8  sched_waking of the vCPU        host: QEMU kicks the halted vCPU thread
    C9  the vCPU thread runs            host: (C8, C9 are absent when the vCPU was running already)
    C10 napi_gro_receive_entry          guest: the guest's NAPI poll has it (NET_RX softirq)
    C11 netif_receive_skb               guest: into the guest's stack
    C12 sched_waking (receiver)         guest: the socket woke the receiver
    C13 the receiver runs               guest
    C14 sys_exit_recvmsg/recvfrom       guest: the receive call before "latscope rx seq=N"
    C15 rx_user_ns                      the receiver has it in user space (probe, on the host clock)

Reverse (guest sends, host receives), C0..C12: the guest's send call, device
queue and the virtio driver's start of transmit (C2..C4, guest; the driver
kicks the device inside it, so under TCG the vCPU thread does QEMU's part of
the pickup there), the QEMU thread's run that writes the packet into the tap
(C5) and the write (C6, the tap or macvtap device's receive event), then the
host's receive path as on one host: the netif_receive_skb that delivered it
to a socket (C7), sk_data_ready (C8), the receiver's wakeup (C9), run (C10),
receive return (C11), rx_user_ns (C12).

Guest events are on the host clock already (latscope.trace.guestclock).
The guest kernel's UDP receive copies without the skb_copy_datagram_iovec
event, so guest packets are tied to sequence numbers by order: the k-th
packet the guest's stack delivered to the socket (its netif_receive_skb of
the stream's length, not dropped by kfree_skb) is the k-th receive call that
returned data. A checkpoint that is not found is MISSING and its time folds
into the next stage, so the stages always add up.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from latscope.store.samples import MISSING
from latscope.trace.model import Timeline, first_segment_after, next_keyed, next_row
from latscope.trace.qemuthreads import QemuThreads
from latscope.trace.stagemodel import StageModel
from latscope.trace.stages import Packets, _causes, _follow, _lookup, _monotonic, markers
from latscope.trace.table import NONE
from latscope.trace.vmmatch import (
    covering,
    in_order,
    last_wake,
    prev_keyed,
    same_cpu_after,
    socket_deliveries,
    stream_deliveries,
)

NET_EVENTS = ("net_dev_queue", "net_dev_start_xmit", "net_dev_xmit", "netif_rx", "netif_receive_skb")
GUEST_RX_EVENTS = ("napi_gro_receive_entry", "napi_gro_frags_entry", "netif_receive_skb_entry", "netif_rx")
SEND_ENTRIES = ("sys_enter_sendto", "sys_enter_sendmsg")
SEND_EXITS = ("sys_exit_sendto", "sys_exit_sendmsg")

FORWARD = StageModel(
    "vm-forward",
    ("sender_wakeup", "send_call", "tx_stack", "host_to_tap", "qemu_wakeup", "qemu_runqueue", "tap_read",
     "vcpu_kick", "vcpu_runqueue", "guest_netrx", "guest_gro", "guest_socket", "guest_runqueue",
     "guest_recv_return", "user_space"),
    {"sender_wakeup": "sender wakeup", "send_call": "send syscall", "tx_stack": "host TX stack",
     "host_to_tap": "host bridge to tap", "qemu_wakeup": "QEMU loop wakeup",
     "qemu_runqueue": "QEMU loop runqueue", "tap_read": "QEMU reads tap", "vcpu_kick": "vCPU kick",
     "vcpu_runqueue": "vCPU thread wakeup/run", "guest_netrx": "guest NET_RX", "guest_gro": "guest GRO",
     "guest_socket": "guest socket wakeup", "guest_runqueue": "guest rx runqueue",
     "guest_recv_return": "guest recv return", "user_space": "guest user space"},
    ("sender", "sender", "sender", "packet", "reader", "reader", "reader", "reader", "vcpu", "vcpu",
     "packet", "packet", "receiver", "receiver", "receiver"),
    ("host",) * 9 + ("guest",) * 6,
)
REVERSE = StageModel(
    "vm-reverse",
    ("sender_wakeup", "send_call", "guest_tx_stack", "guest_driver_xmit", "qemu_pickup", "tap_write",
     "host_bridge", "rx_stack", "socket_enqueue", "runqueue_wait", "recv_return", "user_space"),
    {"sender_wakeup": "guest sender wakeup", "send_call": "guest send syscall", "guest_tx_stack": "guest TX stack",
     "guest_driver_xmit": "guest qdisc/driver", "qemu_pickup": "QEMU picks packet up",
     "tap_write": "QEMU writes tap", "host_bridge": "host bridge", "rx_stack": "host RX stack",
     "socket_enqueue": "socket enqueue", "runqueue_wait": "runqueue wait", "recv_return": "receive syscall return",
     "user_space": "user space"},
    ("sender", "sender", "sender", "sender", "vcpu", "writer", "packet", "packet", "packet", "receiver",
     "receiver", "receiver"),
    ("guest",) * 4 + ("host",) * 8,
)
MODELS = {m.key: m for m in (FORWARD, REVERSE)}


@dataclass(frozen=True)
class VmPackets:
    """Packets on a VM path and, per packet, the QEMU threads that moved it (-1 where unknown)."""

    packets: Packets
    reader: np.ndarray       # forward: the QEMU thread that read the tap; reverse: the one that wrote it
    vcpu: np.ndarray         # the vCPU thread that ran the guest's side
    notes: tuple[str, ...] = ()


def _ts(t, rows: np.ndarray) -> np.ndarray:
    return np.where(rows >= 0, t.ts[np.maximum(rows, 0)], NONE)


def _set(times, cpus, rows, k, t, r) -> None:
    ok = r >= 0
    rows[ok, k] = r[ok]
    times[ok, k] = t.ts[r[ok]]
    cpus[ok, k] = t.cpu[r[ok]]


def _send_side(tl: Timeline, seq: np.ndarray, sender: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(marker row, send call row, device-queue row) of each packet's send, in one trace."""
    t = tl.table
    tx_seq, tx_rows = markers(tl, "tx")
    txm = _lookup(tx_seq, tx_rows, seq)
    sends = t.rows(*SEND_ENTRIES)
    sends = sends[t.pid[sends] == sender]
    c2 = np.where(txm >= 0, next_row(sends, txm), -1)
    exits = t.rows(*SEND_EXITS)
    exits = exits[t.pid[exits] == sender]
    c2_exit = np.where(c2 >= 0, next_row(exits, c2), -1)
    dq = t.rows("net_dev_queue")
    dq = dq[t.pid[dq] == sender]
    c3 = np.where(c2 >= 0, next_row(dq, c2), -1)
    c3 = np.where((c3 >= 0) & ((c2_exit < 0) | (c3 < c2_exit)), c3, -1)
    return txm, c2, c3


def _qemu_runs(tl: Timeline, who: np.ndarray, at: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each packet: (start, cpu) of the run of thread ``who`` that covers row ``at``, and the wakeup before it."""
    t = tl.table
    n = len(at)
    start, cpu, wake = np.full(n, MISSING, np.int64), np.full(n, -1, np.int64), np.full(n, -1, np.int64)
    ok = at >= 0
    at_ts = _ts(t, at)
    for p in np.unique(who[ok]):
        sel = np.flatnonzero(ok & (who == p))
        s, c = covering(tl.segments, int(p), at_ts[sel])
        found = s != NONE
        start[sel[found]], cpu[sel[found]] = s[found], c[found]
        w = last_wake(t, int(p), s)
        wake[sel] = np.where(found, w, -1)
    return start, cpu, wake


def _blank(n: int, nc: int, probe: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Checkpoint times, CPUs and rows of ``n`` packets, none seen yet but the probe's own: C0 scheduled,
    C1 sender woke, the last checkpoint the receiver in user space."""
    times = np.full((n, nc), MISSING, np.int64)
    times[:, 0] = probe.get("sched_ns", np.full(n, MISSING))
    times[:, 1] = probe.get("wake_ns", np.full(n, MISSING))
    times[:, nc - 1] = probe.get("rx_user_ns", np.full(n, MISSING))
    return times, np.full((n, nc), -1, np.int64), np.full((n, nc), -1, np.int64)


def locate_forward(host: Timeline, guest: Timeline | None, seq: np.ndarray, probe: dict[str, np.ndarray],
                   sender: int, receiver: int, threads: QemuThreads) -> VmPackets:
    """Checkpoints C0..C15 of host -> guest packets ``seq`` (``receiver`` is the guest receiver's pid)."""
    t = host.table
    n = len(seq)
    nc = FORWARD.ncheck
    times, cpus, rows = _blank(n, nc, probe)
    notes: list[str] = []
    txm, c2, c3 = _send_side(host, seq, sender)
    _set(times, cpus, rows, 2, t, c2)
    _set(times, cpus, rows, 3, t, c3)
    cpus[:, 0] = cpus[:, 1] = np.where(txm >= 0, t.cpu[np.maximum(txm, 0)], -1)
    skb = np.where(c3 >= 0, t.nums[np.maximum(c3, 0), 0], NONE)
    have = c3 >= 0
    # C7: a thread of this QEMU copies the skb out of the tap, before the address is used again
    copies = t.rows("skb_copy_datagram_iovec")
    copies = copies[np.isin(t.pid[copies], list(threads.by_tid))]
    c7 = np.full(n, -1, np.int64)
    if len(copies):
        c7 = np.where(have, next_keyed(copies, t.nums[copies, 0], np.maximum(c3, 0), skb), -1)
    # the address is used again by a later packet's send (its C3), and not before
    starts = np.unique(c3[have])
    reuse = np.where(have, next_keyed(starts, t.nums[starts, 0], np.maximum(c3, 0), skb), -1)
    c7 = np.where((c7 >= 0) & ((reuse < 0) | (c7 < reuse)), c7, -1)
    net = t.rows(*NET_EVENTS)
    c4 = prev_keyed(net, t.nums[net, 0], np.where(c7 >= 0, c7, 0), np.where(c7 >= 0, skb, NONE))
    c4 = np.where((c7 >= 0) & (c4 > c3), c4, -1)
    _set(times, cpus, rows, 4, t, c4)
    _set(times, cpus, rows, 7, t, c7)
    reader = np.where(c7 >= 0, t.pid[np.maximum(c7, 0)], -1).astype(np.int64)
    # C5, C6: the reader's run that did the read, and the wakeup that started it (if after C4)
    start, cpu, wake = _qemu_runs(host, reader, c7)
    after4 = np.where(c4 >= 0, _ts(t, c4), _ts(t, c3))
    ok6 = (start != MISSING) & (after4 != NONE) & (start > after4)
    times[ok6, 6], cpus[ok6, 6] = start[ok6], cpu[ok6]
    wake = np.where(ok6 & (wake >= 0) & (_ts(t, wake) >= after4), wake, -1)
    _set(times, cpus, rows, 5, t, wake)
    # C8, C9: the vCPU thread, when it was not running as the packet came out of the tap
    vcpu, c8, c9, c9cpu = _vcpu_after(host, threads.tids("vcpu"), c7)
    _set(times, cpus, rows, 8, t, c8)
    ok9 = c9 != NONE
    times[ok9, 9], cpus[ok9, 9] = c9[ok9], c9cpu[ok9]
    if guest is not None:
        notes += _guest_receive(guest, seq, receiver, times, cpus, rows)
    times = _monotonic(times)
    c11, c12 = rows[:, 11], rows[:, 12]
    collateral = (c11 >= 0) & (c12 < 0) & (rows[:, 14] >= 0)
    cause = _causes(seq, c12, c11, collateral)
    pk = Packets(seq, times, cpus, rows, collateral, cause, sender, receiver, tuple(notes), FORWARD)
    return VmPackets(pk, reader, vcpu, tuple(notes))


def _vcpu_after(tl: Timeline, vcpus: list[int], at: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per packet: the vCPU thread that ran the guest after row ``at``, its wakeup row, run start and CPU.

    A vCPU running at ``at`` needs neither (its guest takes the interrupt at once): -1, NONE.
    """
    t = tl.table
    n = len(at)
    vcpu = np.full(n, -1, np.int64)
    wake = np.full(n, -1, np.int64)
    start, cpu = np.full(n, NONE, np.int64), np.full(n, -1, np.int64)
    if not vcpus:
        return vcpu, wake, start, cpu
    ok = at >= 0
    at_ts = _ts(t, at)
    running = np.zeros(n, bool)
    for v in vcpus:
        now = ok & ~running & (covering(tl.segments, v, at_ts)[0] != NONE)
        vcpu[now] = v
        running |= now
    best = np.full(n, NONE, np.int64)
    for v in vcpus:
        s, c = first_segment_after(tl.segments, v, np.where(ok, at_ts, 0))
        better = ok & ~running & (s != NONE) & ((best == NONE) | (s < best))
        best[better], cpu[better], vcpu[better] = s[better], c[better], v
    start = best
    for v in vcpus:
        sel = np.flatnonzero((vcpu == v) & (start != NONE))
        w = last_wake(t, v, start[sel])
        wake[sel] = np.where(w > at[sel], w, -1)
    return vcpu, wake, start, cpu


def _guest_receive(g: Timeline, seq: np.ndarray, receiver: int, times, cpus, rows) -> list[str]:
    """Fill C10..C14 from the guest trace; returns notes."""
    t = g.table
    n = len(seq)
    # The guest's UDP receive copies with the checksum (no skb_copy_datagram_iovec event): in order.
    delivered = stream_deliveries(g)[0]
    rxm, c14, c11, k, notes = in_order(g, seq, receiver, delivered, "guest")
    ok = c11 >= 0
    skb = np.where(c11 >= 0, t.nums[np.maximum(c11, 0), 0], NONE)
    gro = t.rows(*GUEST_RX_EVENTS)
    c10 = prev_keyed(gro, t.nums[gro, 0], np.where(c11 >= 0, c11, 0), skb)
    c10 = np.where(c11 >= 0, c10, -1)
    # C12: the receiver woken after the delivery, before the next delivery and before its receive returns
    nxt = np.where(ok, delivered[np.minimum(k + 1, max(len(delivered) - 1, 0))] if len(delivered) else -1, -1)
    nxt = np.where(k + 1 < len(delivered), nxt, -1)
    wk = t.rows("sched_waking")
    c12 = np.where(c11 >= 0, next_keyed(wk, t.nums[wk, 0], np.maximum(c11, 0), np.full(n, receiver)), -1)
    c12 = np.where((c12 >= 0) & ((nxt < 0) | (c12 < nxt)) & ((c14 < 0) | (c12 < c14)), c12, -1)
    run_from = np.where(c12 >= 0, c12, c11)
    run_ts, run_cpu = first_segment_after(g.segments, receiver, np.where(run_from >= 0, _ts(t, run_from), 0))
    c14_ts = _ts(t, c14)
    ran = (run_from >= 0) & (run_ts != NONE) & ((c14 < 0) | (run_ts <= c14_ts))
    for k_, r in ((10, c10), (11, c11), (12, c12), (14, c14)):
        _set(times, cpus, rows, k_, t, r)
    times[ran, 13], cpus[ran, 13] = run_ts[ran], run_cpu[ran]
    cpus[:, 15] = np.where(rxm >= 0, t.cpu[np.maximum(rxm, 0)], cpus[:, 14])
    return notes


def locate_reverse(host: Timeline, guest: Timeline | None, seq: np.ndarray, probe: dict[str, np.ndarray],
                   sender: int, receiver: int, threads: QemuThreads, guest_dev: str | None,
                   devices: list[str]) -> VmPackets:
    """Checkpoints C0..C12 of guest -> host packets (``sender`` is the guest sender's pid; ``guest_dev``
    the tap or macvtap QEMU writes to, ``devices`` all host devices of the VM's network)."""
    t = host.table
    n = len(seq)
    nc = REVERSE.ncheck
    times, cpus, rows = _blank(n, nc, probe)
    notes: list[str] = []
    if guest is not None:
        g = guest.table
        txm, c2, c3 = _send_side(guest, seq, sender)
        gskb = np.where(c3 >= 0, g.nums[np.maximum(c3, 0), 0], NONE)
        # the virtio driver kicks the device inside its start_xmit: QEMU may have sent the packet on
        # before the guest's net_dev_xmit (its return) is recorded
        c4 = _follow(g, ("net_dev_start_xmit",), gskb, c3, c3 >= 0)
        for k, r in ((2, c2), (3, c3), (4, c4)):
            _set(times, cpus, rows, k, g, r)
        cpus[:, 0] = cpus[:, 1] = np.where(txm >= 0, g.cpu[np.maximum(txm, 0)], -1)
    # host receive side: the host's UDP receive of a packet from the tap copies with the checksum too
    rxm, c11, c7, _k, more = in_order(host, seq, receiver, socket_deliveries(host, devices), "host")
    notes += more
    skb = np.where(c7 >= 0, t.nums[np.maximum(c7, 0), 0], NONE)
    tapdev = t.string_id(guest_dev) if guest_dev else -1
    writes = t.rows("netif_rx", "netif_receive_skb", "net_dev_queue")
    writes = writes[np.isin(t.pid[writes], list(threads.by_tid)) & ((t.strs[writes, 0] == tapdev) | (tapdev < 0))]
    c6 = prev_keyed(writes, t.nums[writes, 0], np.where(c7 >= 0, c7 + 1, 0), skb)
    c6 = np.where(c7 >= 0, c6, -1)
    writer = np.where(c6 >= 0, t.pid[np.maximum(c6, 0)], -1).astype(np.int64)
    start, cpu, _wake = _qemu_runs(host, writer, c6)
    ok5 = start != MISSING
    times[ok5, 5], cpus[ok5, 5] = start[ok5], cpu[ok5]
    c8 = same_cpu_after(t, "sk_data_ready", c7)
    wk = t.rows("sched_waking")
    c9 = np.where(c8 >= 0, next_keyed(wk, t.nums[wk, 0], np.maximum(c8, 0), np.full(n, receiver)), -1)
    c9 = np.where((c9 >= 0) & ((c11 < 0) | (c9 < c11)), c9, -1)
    for k, r in ((6, c6), (7, c7), (8, c8), (9, c9), (11, c11)):
        _set(times, cpus, rows, k, t, r)
    run_from = np.where(c9 >= 0, c9, c8)
    run_ts, run_cpu = first_segment_after(host.segments, receiver, np.where(run_from >= 0, _ts(t, run_from), 0))
    ran = (run_from >= 0) & (run_ts != NONE) & ((c11 < 0) | (run_ts <= _ts(t, c11)))
    times[ran, 10], cpus[ran, 10] = run_ts[ran], run_cpu[ran]
    cpus[:, 12] = np.where(rxm >= 0, t.cpu[np.maximum(rxm, 0)], cpus[:, 11])
    times = _monotonic(times)
    collateral = (c8 >= 0) & (c9 < 0) & (c11 >= 0)
    cause = _causes(seq, c9, c8, collateral)
    vcpus = threads.tids("vcpu")
    vcpu = np.full(n, vcpus[0] if vcpus else -1, np.int64)
    pk = Packets(seq, times, cpus, rows, collateral, cause, sender, receiver, tuple(notes), REVERSE)
    return VmPackets(pk, writer, vcpu, tuple(notes))
