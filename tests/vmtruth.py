"""Ground truth for VM breakdown tests, read from the raw host sched_switch records, not latscope's model.

A QEMU thread "kept the vCPU thread off its CPU" in an interval when the vCPU
thread was runnable and not running (switched out with prev_state R or R+, on
the CPU it was switched out from; or woken by a sched_waking after a sleep, on
the CPU it then ran on; until its next switch-in) and the other thread had
been switched in on that CPU and not yet out again. Only recorded events count.
"""

from __future__ import annotations

import numpy as np

from latscope.store.samples import MISSING
from latscope.trace.attribution import MIN_EXCESS_NS
from latscope.trace.table import EventTable


def _runs(t: EventTable, tid: int, runnable: bool) -> list[tuple[int, int, int]]:
    """(start, end, cpu). With ``runnable``: each stretch in which ``tid`` waited for a CPU, from a switch-out
    while runnable (on that CPU) or from its sched_waking after a sleep (on the CPU it then ran on), to its next
    switch-in. Otherwise: each run of ``tid``, from a switch-in to the next switch-out on that CPU."""
    rows = t.rows("sched_switch", "sched_waking")
    is_sw = t.event[rows] == t.code("sched_switch")
    mine = np.where(is_sw, (t.nums[rows, 0] == tid) | (t.nums[rows, 1] == tid), t.nums[rows, 0] == tid)
    out: list[tuple[int, int, int]] = []
    open_: tuple[int, int] | None = None   # (since, cpu or -1 for "the CPU it runs on next")
    running = False
    for r, sw in zip(rows[mine], is_sw[mine], strict=True):
        ts, cpu = int(t.ts[r]), int(t.cpu[r])
        if not sw:
            if runnable and not running and open_ is None:
                open_ = (ts, -1)
            continue
        prev, nxt, state = int(t.nums[r, 0]), int(t.nums[r, 1]), int(t.nums[r, 4])
        if prev == tid:
            running = False
            if runnable:
                open_ = (ts, cpu) if state != MISSING and (state & 0xFFFF) == 0 else None
            elif open_ is not None and open_[1] == cpu:
                out.append((open_[0], ts, cpu))
                open_ = None
        if nxt == tid:
            running = True
            if runnable and open_ is not None:
                out.append((open_[0], ts, open_[1] if open_[1] >= 0 else cpu))
                open_ = None
            elif not runnable:
                open_ = (ts, cpu)
    return out


def preempted_by(t: EventTable, vcpu: int, other: int) -> list[tuple[int, int]]:
    """Intervals in which ``other`` ran on the CPU the runnable vCPU thread ``vcpu`` waited for."""
    waits = _runs(t, vcpu, True)
    runs = sorted(_runs(t, other, False))
    starts = np.array([r[0] for r in runs], np.int64)
    out = []
    for ws, we, wc in waits:
        # runs are disjoint and sorted: only those starting before the wait ends can overlap it
        k = int(np.searchsorted(starts, we, side="left"))
        j = k - 1
        while j >= 0 and runs[j][1] > ws:
            rs, re_, rc = runs[j]
            if rc == wc:
                out.append((max(ws, rs), min(we, re_)))
            j -= 1
    return sorted(out)


def overlap(ivals: list[tuple[int, int]], windows: list[tuple[int, int]]) -> int:
    """Total time of the (sorted, disjoint) ``ivals`` inside the ``windows``."""
    if not ivals:
        return 0
    starts = np.array([s for s, _e in ivals], np.int64)
    total = 0
    for a, b in windows:
        k = int(np.searchsorted(starts, b, side="left"))
        j = k - 1
        while j >= 0 and ivals[j][1] > a:
            total += max(0, min(ivals[j][1], b) - max(ivals[j][0], a))
            j -= 1
    return total


def stage_windows(times: np.ndarray, names: tuple[str, ...], wanted: list[str]) -> list[tuple[int, int]]:
    """[start, end] of the stages ``wanted`` of one packet (start: the last checkpoint seen before the end)."""
    out = []
    last = int(times[0]) if times[0] != MISSING else None
    for k in range(1, len(times)):
        if times[k] == MISSING:
            continue
        if names[k - 1] in wanted and last is not None:
            out.append((last, int(times[k])))
        last = int(times[k])
    return out


def explained_stages(late, vcpu_stages: set[str]) -> list[str]:
    """The stages of a late packet whose culprits were looked for and that wait on the vCPU thread."""
    total = sum(max(0.0, s.excess_ns) for s in late.stages)
    return [s.name for s in late.stages
            if s.name in vcpu_stages and s.excess_ns >= max(MIN_EXCESS_NS, 0.1 * total)]
