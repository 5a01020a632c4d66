"""Per packet: the checkpoints it passed in the trace and the stages between them.

A packet's path through one host, as the trace shows it (C0..C12)::

    C0  sched_ns                    the probe's scheduled send time
    C1  wake_ns                     the sender woke (probe)
    C2  sys_enter_sendto/sendmsg    the sender's send call after its "latscope tx seq=N" marker
    C3  net_dev_queue               handed to the device (skb address from here on)
    C4  net_dev_start_xmit          the driver starts to send it (after the qdisc, if any)
    C5  netif_rx / napi_gro_receive_entry   the receiving device has it
    C6  netif_receive_skb           the NET_RX softirq processes it
    C7  sk_data_ready               queued on the receiver's socket
    C8  sched_waking (receiver)     the socket woke the receiver
    C9  sched_wakeup (receiver)     the receiver is on a runqueue
    C10 sched_switch to receiver    the receiver runs
    C11 sys_exit_recvmsg/recvfrom   its receive call returns (the one before its "rx seq=N" marker)
    C12 rx_user_ns                  the receiver has the packet in user space (probe)

Stage k is the time from the previous checkpoint that was seen to C_k, so a
missing checkpoint (no qdisc, a backlog instead of NAPI, an event not
recorded) folds its time into the next stage and the stages always add up
to C12 - C0. A packet that arrived while the receiver was already runnable
or running has no C8/C9 of its own: it is *collateral*, and ``cause`` names
the earlier packet whose wakeup the receiver was still working through.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from latscope.store.samples import MISSING
from latscope.trace.fields import PHASES
from latscope.trace.model import (
    Timeline,
    first_segment_after,
    next_keyed,
    next_row,
    prev_row,
)
from latscope.trace.stagemodel import StageModel
from latscope.trace.table import NONE

STAGES = ("sender_wakeup", "send_call", "tx_stack", "qdisc", "driver_xmit", "netrx_wait", "rx_stack",
          "socket_enqueue", "receiver_wakeup", "runqueue_wait", "recv_return", "user_space")
STAGE_TITLES = {
    "sender_wakeup": "sender wakeup", "send_call": "send syscall", "tx_stack": "TX stack", "qdisc": "qdisc",
    "driver_xmit": "driver xmit", "netrx_wait": "NET_RX softirq wait", "rx_stack": "RX stack",
    "socket_enqueue": "socket enqueue", "receiver_wakeup": "receiver wakeup", "runqueue_wait": "runqueue wait",
    "recv_return": "receive syscall return", "user_space": "user space",
}
#: Which task waits in each stage: the sender (0), the packet in the kernel (1), the receiver (2).
STAGE_ROLE = (0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2)
NCHECK = len(STAGES) + 1
ONE_HOST = StageModel("host", STAGES, STAGE_TITLES, tuple(("sender", "packet", "receiver")[r] for r in STAGE_ROLE),
                      ("host",) * len(STAGES))


@dataclass(frozen=True)
class Packets:
    """Checkpoint times (ns, MISSING where not seen) and CPUs of each traced packet."""

    seq: np.ndarray
    times: np.ndarray       # (n, 13) int64
    cpus: np.ndarray        # (n, 13) int64, -1 unknown
    rows: np.ndarray        # (n, 13) table rows, -1 for probe checkpoints or not seen
    collateral: np.ndarray  # bool
    cause: np.ndarray       # seq of the packet the receiver was busy with, -1
    sender_pid: int
    receiver_pid: int
    notes: tuple[str, ...] = ()
    model: StageModel = field(default=ONE_HOST)

    def __len__(self) -> int:
        return len(self.seq)

    def durations(self) -> np.ndarray:
        """(n, stages) ns per stage; 0 for stages folded into a later one, NaN when the packet has no end."""
        return stage_durations(self.times)


def stage_starts(times: np.ndarray) -> np.ndarray:
    """(n, stages) start of each stage: the last checkpoint seen before its end (MISSING before any)."""
    out = np.full((times.shape[0], times.shape[1] - 1), MISSING, dtype=np.int64)
    last = times[:, 0].copy()
    for k in range(1, times.shape[1]):
        out[:, k - 1] = last
        last = np.where(times[:, k] != MISSING, times[:, k], last)
    return out


def stage_durations(times: np.ndarray) -> np.ndarray:
    """(n, stages) ns from each stage's start to its end; 0 for a stage whose end (or every checkpoint
    before it) was not seen, NaN for the whole row of a packet without its last checkpoint."""
    starts, ends = stage_starts(times), times[:, 1:]
    ok = (ends != MISSING) & (starts != MISSING)
    out = np.where(ok, ends - np.where(ok, starts, 0), 0).astype(np.float64)
    out[times[:, -1] == MISSING] = np.nan
    return out


def markers(tl: Timeline, phase: str) -> tuple[np.ndarray, np.ndarray]:
    """(seq, row) of the latscope markers of one phase, first occurrence of each seq."""
    t = tl.table
    rows = t.rows("print")
    rows = rows[t.nums[rows, 1] == PHASES[phase]]
    seq = t.nums[rows, 0]
    uniq, first = np.unique(seq, return_index=True)
    return uniq, rows[first]


def commonest(pids: np.ndarray) -> int:
    """The pid that wrote most of a phase's markers (-1 when there are none)."""
    if len(pids) == 0:
        return -1
    vals, counts = np.unique(pids, return_counts=True)
    return int(vals[counts.argmax()])


def trace_pids(tl: Timeline) -> tuple[int, int]:
    """Sender and receiver pid as the markers show them (-1 when there are none)."""
    t = tl.table
    tx, rx = (commonest(t.pid[markers(tl, phase)[1]]) for phase in ("tx", "rx"))
    return tx, rx


def locate(tl: Timeline, seq: np.ndarray, probe: dict[str, np.ndarray], sender: int, receiver: int,
           txm: np.ndarray | None = None) -> Packets:
    """Checkpoints of the packets ``seq``; ``probe`` holds their sched/wake/rx_user columns (ns, same clock).

    ``txm`` (rows standing in for the sender's markers) is for traces without
    markers; the receive call is then the receiver's first after the socket wakeup.
    """
    t = tl.table
    n = len(seq)
    rows = np.full((n, NCHECK), -1, dtype=np.int64)
    times = np.full((n, NCHECK), MISSING, dtype=np.int64)
    notes: list[str] = []
    rx_seq, rx_rows = markers(tl, "rx")
    if txm is None:
        tx_seq, tx_rows = markers(tl, "tx")
        txm = _lookup(tx_seq, tx_rows, seq)
    rxm = _lookup(rx_seq, rx_rows, seq)
    times[:, 0] = probe.get("sched_ns", np.full(n, MISSING))
    times[:, 1] = probe.get("wake_ns", np.full(n, MISSING))
    times[:, 12] = probe.get("rx_user_ns", np.full(n, MISSING))
    # C2: the sender's send call after its marker
    sends = t.rows("sys_enter_sendto", "sys_enter_sendmsg")
    sends = sends[t.pid[sends] == sender]
    rows[:, 2] = np.where(txm >= 0, next_row(sends, txm), -1)
    send_exit = t.rows("sys_exit_sendto", "sys_exit_sendmsg")
    send_exit = send_exit[t.pid[send_exit] == sender]
    c2_exit = np.where(rows[:, 2] >= 0, next_row(send_exit, rows[:, 2]), -1)
    # C3: the device queue inside that call
    dq = t.rows("net_dev_queue")
    dq = dq[t.pid[dq] == sender]
    c3 = np.where(rows[:, 2] >= 0, next_row(dq, rows[:, 2]), -1)
    c3 = np.where((c3 >= 0) & ((c2_exit < 0) | (c3 < c2_exit)), c3, -1)
    rows[:, 3] = c3
    skb = np.where(c3 >= 0, t.nums[np.maximum(c3, 0), 0], NONE)
    have = c3 >= 0
    # C4..C6 follow the skb address
    rows[:, 4] = _follow(t, ("net_dev_start_xmit",), skb, c3, have)
    after4 = np.where(rows[:, 4] >= 0, rows[:, 4], c3)
    rows[:, 5] = _follow(t, ("netif_rx", "napi_gro_receive_entry", "napi_gro_frags_entry",
                             "netif_receive_skb_entry"), skb, after4, have)
    after5 = np.where(rows[:, 5] >= 0, rows[:, 5], after4)
    rows[:, 6] = _follow(t, ("netif_receive_skb",), skb, after5, have)
    # C7: the socket wakeup callback right after, on the same CPU, before the next packet's receive
    c6 = rows[:, 6]
    rows[:, 7] = _same_cpu_next(t, "sk_data_ready", c6, bound_event="netif_receive_skb")
    # C8: the receiver woken by it (same CPU, before the next socket callback there)
    c7 = rows[:, 7]
    wk = t.rows("sched_waking")
    c8 = np.where(c7 >= 0, next_keyed(wk, t.nums[wk, 0], c7, np.full(n, receiver)), -1)
    nxt_ready = _same_cpu_next(t, "sk_data_ready", c7)
    c8 = np.where((c8 >= 0) & (t.cpu[np.maximum(c8, 0)] == t.cpu[np.maximum(c7, 0)])
                  & ((nxt_ready < 0) | (c8 < nxt_ready)), c8, -1)
    # C11: the receive call that returned this packet (the last one before the rx marker)
    rcv = t.rows("sys_exit_recvmsg", "sys_exit_recvfrom")
    rcv = rcv[(t.pid[rcv] == receiver) & (t.nums[rcv, 0] > 0)]
    if len(rx_seq):
        c11 = np.where(rxm >= 0, prev_row(rcv, rxm), -1)
    else:
        c11 = np.where(c7 >= 0, next_row(rcv, c7), -1)
    c11 = np.where((c11 >= 0) & ((c7 < 0) | (c11 > c7)), c11, -1)
    rows[:, 11] = c11
    up = t.rows("sched_wakeup")
    c9 = np.where(c8 >= 0, next_keyed(up, t.nums[up, 0], c8, np.full(n, receiver)), -1)
    # C10: the receiver's next run on a CPU (a switch to it, or inferred where the kernel did not record it)
    run_from = np.where(c9 >= 0, c9, c7)
    run_ts, run_cpu = first_segment_after(tl.segments, receiver, np.where(run_from >= 0, t.ts[np.maximum(run_from, 0)], 0))
    run_ts = np.where(run_from >= 0, run_ts, NONE)
    # anything after the receive returned belongs to a later packet
    late = lambda r: (r >= 0) & (c11 >= 0) & (r > c11)
    c8 = np.where(late(c8), -1, c8)
    c9 = np.where(late(c9) | (c8 < 0), -1, c9)
    c11_ts = np.where(c11 >= 0, t.ts[np.maximum(c11, 0)], NONE)
    ran = (run_ts != NONE) & ((c11 < 0) | (run_ts <= c11_ts))
    rows[:, 8], rows[:, 9] = c8, c9
    rows[:, 10] = np.where(ran, _switch_row(t, receiver, run_ts, run_cpu), -1)
    # rows -> times and CPUs
    cpus = np.full((n, NCHECK), -1, dtype=np.int64)
    for k in range(2, 12):
        ok = rows[:, k] >= 0
        times[ok, k] = t.ts[rows[ok, k]]
        cpus[ok, k] = t.cpu[rows[ok, k]]
    # the receiver's run may start at an inferred switch that has no row of its own
    times[:, 10] = np.where(ran, run_ts, MISSING)
    cpus[:, 10] = np.where(ran, run_cpu, -1)
    cpus[:, 0] = cpus[:, 1] = np.where(txm >= 0, t.cpu[np.maximum(txm, 0)], -1)
    cpus[:, 12] = np.where(rxm >= 0, t.cpu[np.maximum(rxm, 0)], cpus[:, 11])
    if not len(rx_seq):
        times[:, 12] = np.where(times[:, 12] == MISSING, times[:, 11], times[:, 12])
    times = _monotonic(times)
    collateral = (c7 >= 0) & (c8 < 0) & (c11 >= 0)
    cause = _causes(seq, c8, c7, collateral)
    return Packets(seq, times, cpus, rows, collateral, cause, sender, receiver, tuple(notes))


def _switch_row(t, pid: int, run_ts: np.ndarray, run_cpu: np.ndarray) -> np.ndarray:
    """The sched_switch row that started the receiver's run, or -2 where the switch was inferred."""
    sw = t.rows("sched_switch")
    sw = sw[t.nums[sw, 1] == pid]
    if len(sw) == 0:
        return np.full(len(run_ts), -2, np.int64)
    k = np.searchsorted(t.ts[sw], run_ts)
    kk = np.minimum(k, len(sw) - 1)
    hit = (k < len(sw)) & (t.ts[sw][kk] == run_ts) & (t.cpu[sw][kk] == run_cpu)
    return np.where(hit, sw[kk], -2)


def _lookup(keys: np.ndarray, values: np.ndarray, want: np.ndarray) -> np.ndarray:
    if len(keys) == 0:
        return np.full(len(want), -1, np.int64)
    k = np.searchsorted(keys, want)
    kk = np.minimum(k, len(keys) - 1)
    return np.where((k < len(keys)) & (keys[kk] == want), values[kk], -1)


def _follow(t, names: tuple[str, ...], skb: np.ndarray, after: np.ndarray, have: np.ndarray) -> np.ndarray:
    rows = t.rows(*names)
    if len(rows) == 0:
        return np.full(len(skb), -1, np.int64)
    found = next_keyed(rows, t.nums[rows, 0], np.where(have, after, 0), np.where(have, skb, NONE))
    return np.where(have, found, -1)


def _same_cpu_next(t, name: str, after: np.ndarray, bound_event: str | None = None) -> np.ndarray:
    """First ``name`` event on the CPU of row ``after`` following it (and before the next ``bound_event``)."""
    rows = t.rows(name)
    have = after >= 0
    cpu = np.where(have, t.cpu[np.maximum(after, 0)], -1)
    out = np.where(have, next_keyed(rows, t.cpu[rows].astype(np.int64), np.maximum(after, 0), cpu), -1)
    if bound_event is not None:
        b = t.rows(bound_event)
        nb = np.where(have, next_keyed(b, t.cpu[b].astype(np.int64), np.maximum(after, 0), cpu), -1)
        out = np.where((out >= 0) & ((nb < 0) | (out < nb)), out, -1)
    return out


def _monotonic(times: np.ndarray) -> np.ndarray:
    """Drop a checkpoint that lies before an earlier one (a mismatch, not a time machine)."""
    out = times.copy()
    last = out[:, 0].copy()
    for k in range(1, times.shape[1]):
        t = out[:, k]
        bad = (t != MISSING) & (last != MISSING) & (t < last)
        out[bad, k] = MISSING
        last = np.where(out[:, k] != MISSING, out[:, k], last)
    return out


def _causes(seq: np.ndarray, c8: np.ndarray, c7: np.ndarray, collateral: np.ndarray) -> np.ndarray:
    """For collateral packets: the latest earlier packet that really woke the receiver."""
    cause = np.full(len(seq), -1, np.int64)
    woke = np.flatnonzero(c8 >= 0)
    if len(woke) == 0:
        return cause
    order = woke[np.argsort(c8[woke])]
    wake_rows = c8[order]
    idx = np.flatnonzero(collateral)
    k = np.searchsorted(wake_rows, c7[idx]) - 1
    ok = k >= 0
    cause[idx[ok]] = seq[order[k[ok]]]
    return cause


def by_send_calls(tl: Timeline, sender: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """For a trace without markers: every send call of ``sender`` is a packet.

    Returns (seq, stand-in marker rows, probe columns: send-call time as schedule and wakeup).
    """
    t = tl.table
    sends = t.rows("sys_enter_sendto", "sys_enter_sendmsg")
    sends = sends[t.pid[sends] == sender]
    seq = np.arange(len(sends), dtype=np.int64)
    ts = t.ts[sends]
    return seq, sends - 1, {"sched_ns": ts, "wake_ns": ts, "rx_user_ns": np.full(len(sends), MISSING, np.int64)}
