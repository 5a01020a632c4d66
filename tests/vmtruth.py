"""Ground truth for VM breakdown tests, read from the raw host sched_switch records, not latscope's model.

A QEMU thread "preempted the vCPU thread" in an interval when the vCPU thread
had been switched out while runnable (prev_state R or R+) and not yet switched
back in, and the other thread had been switched in on the CPU the vCPU thread
was switched out from and not yet out again. Only recorded switches count.
"""

from __future__ import annotations

import numpy as np

from latscope.store.samples import MISSING
from latscope.trace.attribution import MIN_EXCESS_NS
from latscope.trace.table import EventTable


def _runs(t: EventTable, tid: int, runnable_out: bool) -> list[tuple[int, int, int]]:
    """(start, end, cpu): for ``runnable_out``, from each runnable switch-out of ``tid`` to its next switch-in;
    otherwise from each switch-in of ``tid`` to its next switch-out (on the same CPU)."""
    sw = t.rows("sched_switch")
    sw = sw[(t.nums[sw, 0] == tid) | (t.nums[sw, 1] == tid)]
    out: list[tuple[int, int, int]] = []
    open_: tuple[int, int] | None = None
    for r in sw:
        prev, nxt, ts, cpu = int(t.nums[r, 0]), int(t.nums[r, 1]), int(t.ts[r]), int(t.cpu[r])
        state = int(t.nums[r, 4])
        if runnable_out:
            if prev == tid:
                open_ = (ts, cpu) if state != MISSING and (state & 0xFFFF) == 0 else None
            if nxt == tid and open_ is not None:
                out.append((open_[0], ts, open_[1]))
                open_ = None
        else:
            if prev == tid and open_ is not None and open_[1] == cpu:
                out.append((open_[0], ts, cpu))
                open_ = None
            if nxt == tid:
                open_ = (ts, cpu)
    return out


def preempted_by(t: EventTable, vcpu: int, other: int) -> list[tuple[int, int]]:
    """Intervals in which ``other`` ran on the CPU the runnable vCPU thread ``vcpu`` was switched out from."""
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
