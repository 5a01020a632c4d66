"""A per-CPU timeline built from the events: who ran when, interrupts, wakeups, migrations.

* Segments: from every sched_switch on a CPU to the next one, the task that
  ran (pid, comm, priority). The first segment of a CPU starts at its first
  event, the last one ends at its last.
* Interrupt intervals: hard interrupts (device handlers and the x86 vectors
  such as the local timer and IPIs) and softirqs, paired entry to exit per
  CPU. A hard interrupt inside a softirq is counted once: ``net()`` gives the
  softirq time without it, and task time without both.
* Wakeups: each sched_waking (who woke whom, from which CPU, for which CPU),
  when the target was enqueued (sched_wakeup), when it first ran after that,
  and whether it ran at once (the CPU was idle or the current task was
  preempted for it) or had to wait.
* Migrations: sched_migrate_task.

Everything is columns (numpy), built in a few vectorised passes; questions
about a time window on one CPU use binary search.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from latscope.trace.table import NONE, EventTable

HARD, SOFT = 1, 2
SOFTIRQ_NAMES = ("HI", "TIMER", "NET_TX", "NET_RX", "BLOCK", "IRQ_POLL", "TASKLET", "SCHED", "HRTIMER", "RCU")
#: x86 vector events that are hard interrupts (entry, exit, display name).
VECTOR_IRQS = (("local_timer_entry", "local_timer_exit", "local timer"),
               ("reschedule_entry", "reschedule_exit", "reschedule IPI"),
               ("call_function_entry", "call_function_exit", "call-function IPI"),
               ("call_function_single_entry", "call_function_single_exit", "call-function IPI"),
               ("irq_work_entry", "irq_work_exit", "irq work"),
               ("x86_platform_ipi_entry", "x86_platform_ipi_exit", "platform IPI"))


class _PerCpu:
    """Rows sorted by CPU with ``bounds[c]:bounds[c+1]`` the rows of CPU c."""

    bounds: np.ndarray

    def on(self, cpu: int) -> slice:
        """The rows of ``cpu`` (empty for a CPU the trace does not know)."""
        if cpu < 0 or cpu + 1 >= len(self.bounds):
            return slice(0, 0)
        return slice(int(self.bounds[cpu]), int(self.bounds[cpu + 1]))


@dataclass(frozen=True)
class Segments(_PerCpu):
    """Running-task intervals, sorted by (cpu, start); ``bounds[c]:bounds[c+1]`` are CPU c's."""

    cpu: np.ndarray
    start: np.ndarray
    end: np.ndarray
    pid: np.ndarray
    comm: np.ndarray      # string id
    prio: np.ndarray
    bounds: np.ndarray
    #: Index by task: rows in (pid, start) order (ties in (cpu, start) order); the distinct pids; per
    #: row of that order, (rank of its pid) * (len + 1) + (rank of its start among all starts), which
    #: sorts the same way, so "pid's first segment at or after t" is one binary search; all starts sorted.
    by_pid: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), compare=False)
    pid_keys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), compare=False)
    pid_combo: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), compare=False)
    starts_sorted: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), compare=False)


def _pid_index(pid: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The by-task index of segments (``Segments.by_pid``, ``pid_keys``, ``pid_combo``, ``starts_sorted``)."""
    by_pid = np.lexsort((start, pid))
    starts_sorted = np.sort(start, kind="stable")
    keys, dense = np.unique(pid[by_pid], return_inverse=True)
    rank = np.searchsorted(starts_sorted, start[by_pid], side="left")
    combo = dense.ravel().astype(np.int64) * np.int64(len(start) + 1) + rank
    return by_pid, keys.astype(np.int64), combo, starts_sorted


@dataclass(frozen=True)
class Intervals(_PerCpu):
    """Interrupt intervals sorted by (cpu, start): kind HARD or SOFT, ``name`` a string id."""

    cpu: np.ndarray
    start: np.ndarray
    end: np.ndarray
    kind: np.ndarray
    name: np.ndarray
    bounds: np.ndarray


@dataclass(frozen=True)
class Wakeups:
    """One row per sched_waking."""

    row: np.ndarray        # row of the sched_waking in the table
    ts: np.ndarray
    waker_pid: np.ndarray
    waker_cpu: np.ndarray
    pid: np.ndarray        # woken task
    target_cpu: np.ndarray
    enqueued: np.ndarray   # sched_wakeup time (NONE when not seen)
    ran: np.ndarray        # first switch to the task after the wakeup (NONE when not seen)
    ran_cpu: np.ndarray
    at_once: np.ndarray    # ran without another task running first on its CPU


@dataclass(frozen=True)
class Timeline:
    """Everything the breakdown asks of a trace."""

    table: EventTable
    segments: Segments
    irqs: Intervals
    wakeups: Wakeups
    migrations: np.ndarray     # rows of sched_migrate_task
    cpu_rows: tuple[np.ndarray, ...]  # per CPU: rows of every event on it (for silent gaps)
    start_ns: int
    end_ns: int
    irq_names: dict[int, str]  # string id of an interval name -> text (names made here)
    #: Per CPU: the time of every event on it (``table.ts[cpu_rows[c]]``, gathered once).
    cpu_ts: tuple[np.ndarray, ...] = ()
    #: Indexes built on first use (``rows_on``), so per-packet questions cost their window, not the trace.
    cache: dict[object, np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    @property
    def ncpu(self) -> int:
        return len(self.cpu_rows)

    def rows_on(self, name: str, cpu: int) -> np.ndarray:
        """Rows of event ``name`` on ``cpu``, in time order (built once per event name)."""
        key = ("rows_on", name)
        if key not in self.cache:
            rows = self.table.rows(name)
            c = self.table.cpu[rows]
            o = np.argsort(c, kind="stable")
            self.cache[key] = rows[o]
            self.cache[key + ("bounds",)] = np.searchsorted(c[o], np.arange(self.ncpu + 1))
        b = self.cache[key + ("bounds",)]
        if cpu < 0 or cpu >= self.ncpu:
            return np.zeros(0, np.int64)
        return self.cache[key][int(b[cpu]):int(b[cpu + 1])]

    def migration_ts(self) -> np.ndarray:
        """Times of ``migrations`` (same order)."""
        if "migration_ts" not in self.cache:
            self.cache["migration_ts"] = self.table.ts[self.migrations]
        return self.cache["migration_ts"]

    def comm_of(self, sid: int) -> str:
        if sid in self.irq_names:
            return self.irq_names[sid]
        return self.table.string(sid)


def build(table: EventTable) -> Timeline:
    """The timeline of a table sorted by time."""
    ncpu = int(table.cpu.max()) + 1 if len(table) else 0
    names: dict[int, str] = {}
    cpu_rows = rows_per_cpu(table.cpu, ncpu)
    segs = _segments(table, ncpu, cpu_rows)
    irqs = _interrupts(table, ncpu, names)
    wake = _wakeups(table, segs)
    mig = table.rows("sched_migrate_task")
    cpu_ts = tuple(table.ts[r] for r in cpu_rows)
    return Timeline(table, segs, irqs, wake, mig, cpu_rows, int(table.ts[0]) if len(table) else 0,
                    int(table.ts[-1]) if len(table) else 0, names, cpu_ts)


def rows_per_cpu(cpu: np.ndarray, ncpu: int) -> tuple[np.ndarray, ...]:
    """Per CPU 0..ncpu-1: the row numbers of ``cpu`` on it, in order."""
    if ncpu <= 16:  # a pass per CPU is cheaper than sorting every row
        return tuple(np.flatnonzero(cpu == c) for c in range(ncpu))
    order = np.argsort(cpu, kind="stable")
    b = np.searchsorted(cpu[order], np.arange(ncpu + 1))
    return tuple(order[b[c]:b[c + 1]] for c in range(ncpu))


def _segments(t: EventTable, ncpu: int, cpu_rows: tuple[np.ndarray, ...]) -> Segments:
    """Runs of one current task per CPU.

    Every event names the task that was current on its CPU when it fired
    (the pid in its header, also for interrupts, which run on behalf of
    whatever they interrupted); a sched_switch also names the task that runs
    next. When an event's task is not the one the previous event left
    running, a switch was not recorded (this VM's kernel drops every switch
    out of idle on one CPU, and a few others). Out of idle it is placed at
    the last idle event: an idle CPU runs a woken task as soon as the wakeup
    interrupt returns. Between two tasks it is placed at the new task's first
    event: the old one is the last task seen there, and blaming a gap on it
    matches what a recorded switch would have said in the cases checked;
    unless the new task was woken for this CPU with a higher priority than
    the old one's, which it then preempted at once (``_preempted_at``).
    """
    sw_code = t.code("sched_switch")
    up_all = t.rows("sched_wakeup")
    cpus, starts, ends, pids, comms, prios = [], [], [], [], [], []
    for c in range(ncpu):
        r = cpu_rows[c]
        if len(r) == 0:
            continue
        is_sw = t.event[r] == sw_code
        ts = t.ts[r]
        before = np.where(is_sw, t.nums[r, 0], t.pid[r])
        before_comm = np.where(is_sw, t.strs[r, 0], t.comm[r])
        after = np.where(is_sw, t.nums[r, 1], before)
        after_comm = np.where(is_sw, t.strs[r, 1], before_comm)
        after_prio = np.where(is_sw, t.nums[r, 3], NONE)
        # inferred: event i's task differs from what event i-1 left running (boundary at event i-1)
        inf = np.flatnonzero(before[1:] != after[:-1]) + 1
        # recorded: a switch to another task (boundary at the switch)
        rec = np.flatnonzero(is_sw & (before != after))
        inf_time = np.where(after[inf - 1] == 0, ts[inf - 1], ts[inf])
        inf_time = _preempted_at(t, c, ts, inf, before, after, rec, after_prio, inf_time, up_all)
        b_time = np.concatenate([inf_time, ts[rec]])
        b_key = np.concatenate([2 * inf - 1, 2 * rec])  # keeps "inferred before i" ahead of "switch at i"
        b_pid = np.concatenate([before[inf], after[rec]])
        b_comm = np.concatenate([before_comm[inf], after_comm[rec]])
        b_prio = np.concatenate([np.full(len(inf), NONE, np.int64), after_prio[rec]])
        o = np.argsort(b_key, kind="stable")
        b_time, b_pid, b_comm, b_prio = b_time[o], b_pid[o], b_comm[o], b_prio[o]
        cpus.append(np.full(len(o) + 1, c, np.int16))
        starts.append(np.concatenate([[ts[0]], b_time]))
        ends.append(np.concatenate([b_time, [ts[-1]]]))
        pids.append(np.concatenate([[before[0]], b_pid]))
        comms.append(np.concatenate([[before_comm[0]], b_comm]))
        prios.append(np.concatenate([[t.nums[r[0], 2] if is_sw[0] else NONE], b_prio]))
    if not cpus:
        z = np.zeros(0, np.int64)
        return Segments(z.astype(np.int16), z, z, z, z.astype(np.int32), z, np.zeros(ncpu + 1, np.int64))
    cpu = np.concatenate(cpus)
    start, pid = np.concatenate(starts), np.concatenate(pids).astype(np.int64)
    return Segments(cpu, start, np.concatenate(ends), pid,
                    np.concatenate(comms).astype(np.int32), np.concatenate(prios).astype(np.int64),
                    np.searchsorted(cpu, np.arange(ncpu + 1)), *_pid_index(pid, start))


def _preempted_at(t: EventTable, cpu: int, ts: np.ndarray, inf: np.ndarray, before: np.ndarray,
                  after: np.ndarray, rec: np.ndarray, after_prio: np.ndarray, times: np.ndarray,
                  up_all: np.ndarray) -> np.ndarray:
    """Inferred task-to-task switches moved back to where a higher-priority wakeup preempted the old task.

    A task woken for this CPU with a higher priority (a lower ``prio``) than
    the running one's takes the CPU as soon as the interrupt that woke it
    returns, so the switch that was not recorded happened at the old task's
    last event after the wakeup, not at the new task's first one. Seen on
    this VM: a SCHED_FIFO loop woken by the tick inside a SCHED_OTHER
    thread, whose switches out are never recorded; without this the thread
    was blamed for the millisecond the loop spun. The old task's priority
    comes from the recorded switch that put it on the CPU; when that is not
    known, the switch stays where it was.

    ``up_all``: every sched_wakeup row. Per candidate switch this is two
    binary searches (the last wakeup of the new task for this CPU at or
    before its first event), not a scan of the wakeups.
    """
    up = up_all
    cand = np.flatnonzero(after[inf - 1] != 0) if len(inf) else np.zeros(0, np.int64)
    if len(up) == 0 or len(cand) == 0:
        return times
    up = up[(t.nums[up, 2] == cpu) & np.isin(t.nums[up, 0], before[inf[cand]])]
    if len(up) == 0 or len(rec) == 0:
        return times
    i = inf[cand]
    k = np.searchsorted(rec, i - 1, side="right") - 1
    kk = np.maximum(k, 0)
    ok = (k >= 0) & (after[rec[kk]] == after[i - 1]) & (after_prio[rec[kk]] != NONE)
    if not ok.any():
        return times
    cand, i, kk = cand[ok], i[ok], kk[ok]
    # the last wakeup of before[i] at or before ts[i]: wakeups are in time (row) order, so within one
    # pid "at or before ts[i]" is a prefix; (pid rank, position) sorts as one int64
    up_ts = t.ts[up]
    up_pid = t.nums[up, 0]
    uniq, dense = np.unique(up_pid, return_inverse=True)
    m = np.int64(len(up) + 1)
    combo = dense.ravel().astype(np.int64) * m + np.arange(len(up), dtype=np.int64)
    o = np.argsort(combo, kind="stable")
    combo_sorted = combo[o]
    want = before[i]
    qpos = np.searchsorted(uniq, want)
    qq = np.minimum(qpos, len(uniq) - 1)
    known = (qpos < len(uniq)) & (uniq[qq] == want)
    n_le = np.searchsorted(up_ts, ts[i], side="right")          # wakeups with ts <= ts[i]
    j = np.searchsorted(combo_sorted, qq.astype(np.int64) * m + n_le - 1, side="right") - 1
    jj = np.maximum(j, 0)
    hit = known & (n_le > 0) & (j >= 0) & (combo_sorted[jj] // m == qq)
    w = up[o[jj]]
    hit &= t.ts[w] >= ts[rec[kk]]
    hit &= t.nums[w, 1] < after_prio[rec[kk]]
    out = times.copy()
    out[cand[hit]] = np.maximum(t.ts[w[hit]], ts[i[hit] - 1])
    return out


def first_segment_after(segs: Segments, pid: int | np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, cpu) of the first segment of ``pid`` starting at or after each ts; NONE/-1 if none.

    ``pid`` is one task or one per ts. Binary searches in the segments' by-task index.
    """
    ts = np.asarray(ts, dtype=np.int64)
    pids = np.broadcast_to(np.asarray(pid, dtype=np.int64), ts.shape)
    none = np.full(len(ts), NONE, np.int64), np.full(len(ts), -1, np.int64)
    if len(segs.by_pid) == 0 or len(ts) == 0:
        return none
    m = np.int64(len(segs.start) + 1)
    combo, uniq = segs.pid_combo, segs.pid_keys
    qpos = np.searchsorted(uniq, pids)
    qq = np.minimum(qpos, len(uniq) - 1).astype(np.int64)
    known = (qpos < len(uniq)) & (uniq[qq] == pids)
    rank = np.searchsorted(segs.starts_sorted, ts, side="left")
    k = np.searchsorted(combo, qq * m + rank, side="left")
    kk = np.minimum(k, len(combo) - 1)
    hit = known & (k < len(combo)) & (combo[kk] // m == qq)
    row = segs.by_pid[kk]
    return np.where(hit, segs.start[row], NONE), np.where(hit, segs.cpu[row].astype(np.int64), -1)


def _interrupts(t: EventTable, ncpu: int, names: dict[int, str]) -> Intervals:
    parts: list[tuple[np.ndarray, ...]] = []
    base = len(t.strings) + 1_000_000  # ids for names made here, clear of the table's strings
    label_ids: dict[str, int] = {}

    def label(text: str) -> int:
        if text not in label_ids:
            label_ids[text] = base + len(label_ids)
            names[label_ids[text]] = text
        return label_ids[text]

    # device interrupts: irq_handler_entry carries the name, the exit only the number
    entry, exit_ = t.rows("irq_handler_entry"), t.rows("irq_handler_exit")
    if len(entry) and len(exit_):
        lab = np.array([label(f"irq {int(t.nums[r, 0])} {t.string(int(t.strs[r, 0]))}".strip()) for r in entry[
            np.unique(t.nums[entry, 0], return_index=True)[1]]], dtype=np.int64)
        irq_of = dict(zip(np.unique(t.nums[entry, 0]).tolist(), lab.tolist(), strict=True))
        name_entry = np.array([irq_of[int(x)] for x in t.nums[entry, 0]], dtype=np.int64)
        parts.append(_pair(t, entry, exit_, HARD, name_entry))
    for en, ex, text in VECTOR_IRQS:
        a, b = t.rows(en), t.rows(ex)
        if len(a) and len(b):
            parts.append(_pair(t, a, b, HARD, np.full(len(a), label(text), np.int64)))
    se, sx = t.rows("softirq_entry"), t.rows("softirq_exit")
    if len(se) and len(sx):
        vec = t.nums[se, 0]
        lab = np.array([label("softirq " + (SOFTIRQ_NAMES[v] if 0 <= v < len(SOFTIRQ_NAMES) else str(v)))
                        for v in range(len(SOFTIRQ_NAMES) + 1)], dtype=np.int64)
        parts.append(_pair(t, se, sx, SOFT, lab[np.clip(vec, 0, len(SOFTIRQ_NAMES))]))
    parts = [p for p in parts if len(p[0])]
    if not parts:
        z = np.zeros(0, np.int64)
        return Intervals(z.astype(np.int16), z, z, z.astype(np.int8), z, np.zeros(ncpu + 1, np.int64))
    cpu, start, end, kind, name = (np.concatenate([p[k] for p in parts]) for k in range(5))
    o = np.lexsort((start, cpu))
    cpu = cpu[o]
    return Intervals(cpu, start[o], end[o], kind[o], name[o], np.searchsorted(cpu, np.arange(ncpu + 1)))


def _pair(t: EventTable, entries: np.ndarray, exits: np.ndarray, kind: int,
          name_of_entry: np.ndarray) -> tuple[np.ndarray, ...]:
    """Entry/exit pairs per CPU: an entry followed (on its CPU, in time) directly by an exit."""
    rows = np.concatenate([entries, exits])
    is_entry = np.concatenate([np.ones(len(entries), bool), np.zeros(len(exits), bool)])
    names = np.concatenate([name_of_entry, np.full(len(exits), -1, np.int64)])
    o = np.lexsort((rows, t.cpu[rows]))
    rows, is_entry, names = rows[o], is_entry[o], names[o]
    cpu = t.cpu[rows]
    ok = is_entry[:-1] & ~is_entry[1:] & (cpu[:-1] == cpu[1:])
    i = np.flatnonzero(ok)
    return (cpu[i].astype(np.int16), t.ts[rows[i]], t.ts[rows[i + 1]], np.full(len(i), kind, np.int8), names[i])


def _wakeups(t: EventTable, segs: Segments) -> Wakeups:
    wk = t.rows("sched_waking")
    up = t.rows("sched_wakeup")
    pid = t.nums[wk, 0]
    enq = np.full(len(wk), NONE, np.int64)
    if len(up):
        enq_rows = next_keyed(up, t.nums[up, 0], wk, pid)
        enq = np.where(enq_rows >= 0, t.ts[np.maximum(enq_rows, 0)], NONE)
    # when it first ran after the wakeup (its next segment), and whether another task ran there first
    ran, ran_cpu = first_segment_after(segs, pid, t.ts[wk])
    at_once = np.zeros(len(wk), bool)
    ok = ran != NONE
    for c in np.unique(ran_cpu[ok]):
        sl = segs.on(int(c))
        st = segs.start[sl]
        sel = np.flatnonzero(ok & (ran_cpu == c))
        k = np.searchsorted(st, ran[sel], side="left") - 1  # the segment before the woken task's
        before_start = np.where(k >= 0, st[np.maximum(k, 0)], NONE)
        at_once[sel] = before_start <= t.ts[wk[sel]]
    return Wakeups(wk, t.ts[wk], t.pid[wk], t.cpu[wk].astype(np.int64), pid, t.nums[wk, 2], enq, ran, ran_cpu,
                   at_once)


def next_keyed(rows: np.ndarray, keys: np.ndarray, after: np.ndarray, want: np.ndarray) -> np.ndarray:
    """For each query, the first of ``rows`` (sorted) whose key equals ``want`` and row > ``after``; -1 if none.

    Keys are made dense first so that (key, row) pairs sort as one int64.
    """
    if len(rows) == 0 or len(after) == 0:
        return np.full(len(after), -1, np.int64)
    uniq, dense = np.unique(keys, return_inverse=True)
    qpos = np.searchsorted(uniq, want)
    found_key = (qpos < len(uniq)) & (uniq[np.minimum(qpos, len(uniq) - 1)] == want)
    shift = np.int64(1) << np.int64(36)
    combo = dense.ravel().astype(np.int64) * shift + rows
    order = np.argsort(combo, kind="stable")
    combo_sorted = combo[order]
    q = np.minimum(qpos, len(uniq) - 1).astype(np.int64) * shift + after
    k = np.searchsorted(combo_sorted, q, side="right")
    kk = np.minimum(k, len(combo_sorted) - 1)
    hit = found_key & (k < len(combo_sorted)) & ((combo_sorted[kk] // shift) == np.minimum(qpos, len(uniq) - 1))
    return np.where(hit, rows[order[kk]], -1)


def next_row(rows: np.ndarray, after: np.ndarray) -> np.ndarray:
    """First of ``rows`` (sorted) greater than each ``after``; -1 if none."""
    if len(rows) == 0:
        return np.full(len(after), -1, np.int64)
    k = np.searchsorted(rows, after, side="right")
    return np.where(k < len(rows), rows[np.minimum(k, len(rows) - 1)], -1)


def prev_row(rows: np.ndarray, before: np.ndarray) -> np.ndarray:
    """Last of ``rows`` (sorted) smaller than each ``before``; -1 if none."""
    if len(rows) == 0:
        return np.full(len(before), -1, np.int64)
    k = np.searchsorted(rows, before, side="left") - 1
    return np.where(k >= 0, rows[np.maximum(k, 0)], -1)


@dataclass(frozen=True)
class Share:
    """Time one thing took on a CPU inside a window (net: nested interrupts not counted twice)."""

    kind: str     # task, idle, irq, softirq, self
    name: str
    pid: int
    cpu: int
    ns: int


def window_shares(tl: Timeline, cpu: int, a: int, b: int) -> list[Share]:
    """Who held CPU ``cpu`` between a and b, net of nested interrupts, largest first.

    The intervals and segments that touch the window are found by binary search, then clipped, netted
    and summed per culprit as arrays: the cost is the window's own size, with no Python step per event.
    Shares of equal size come in the order their culprit first appears (tasks, hard interrupts, softirqs).
    """
    if b <= a:
        return []
    z = np.zeros(0, np.int64)
    hard_s = hard_e = hard_n = soft_s = soft_e = soft_n = z
    sl = tl.irqs.on(cpu)
    if sl.stop > sl.start:
        st, en = tl.irqs.start[sl], tl.irqs.end[sl]
        i0 = max(0, int(np.searchsorted(st, a - 10_000_000)))  # an interrupt lasting >10 ms is not one
        i1 = int(np.searchsorted(st, b))
        s_ = np.maximum(st[i0:i1], a)
        e_ = np.minimum(en[i0:i1], b)
        keep = e_ > s_
        k = np.arange(sl.start + i0, sl.start + i1)[keep]
        s_, e_ = s_[keep], e_[keep]
        hard = tl.irqs.kind[k] == HARD
        names = tl.irqs.name[k].astype(np.int64)
        hard_s, hard_e, hard_n = s_[hard], e_[hard], names[hard]
        soft_s, soft_e, soft_n = s_[~hard], e_[~hard], names[~hard]
    soft_net = (soft_e - soft_s) - _Covered.of(hard_s, hard_e).within_many(soft_s, soft_e)
    busy = _Covered.of(np.concatenate([hard_s, soft_s]), np.concatenate([hard_e, soft_e]))
    shares: list[Share] = []
    seg = tl.segments.on(cpu)
    if seg.stop > seg.start:
        st, en = tl.segments.start[seg], tl.segments.end[seg]
        j0 = max(0, int(np.searchsorted(st, a, side="right")) - 1)
        j1 = int(np.searchsorted(st, b))
        s_ = np.maximum(st[j0:j1], a)
        e_ = np.minimum(en[j0:j1], b)
        k = np.arange(seg.start + j0, seg.start + j1)
        net = (e_ - s_) - busy.within_many(s_, e_)
        keep = (e_ > s_) & (net > 0)
        pid = tl.segments.pid[k[keep]].astype(np.int64)
        comm = tl.segments.comm[k[keep]].astype(np.int64)
        # one culprit per (pid, comm); every pid 0 is the one "idle"
        key = np.where(pid == 0, 0, pid * _KEY + comm + 1)
        for kk, ns in zip(*_sum_by_first(key, net[keep]), strict=True):
            p, c = divmod(kk, _KEY)
            shares.append(Share("idle", "idle", 0, cpu, ns) if kk == 0 else
                          Share("task", tl.comm_of(c - 1), p, cpu, ns))
    irq_parts: tuple[tuple[str, np.ndarray, np.ndarray], ...] = (("irq", hard_n, hard_e - hard_s),
                                                                 ("softirq", soft_n, soft_net))
    for kind, names, took in irq_parts:
        shares += [Share(kind, tl.comm_of(n), -1, cpu, v) for n, v in zip(*_sum_by_first(names, took), strict=True)
                   if v > 0]
    return sorted(shares, key=lambda x: -x.ns)


_KEY = 1 << 33


def _sum_by_first(keys: np.ndarray, values: np.ndarray) -> tuple[list[int], list[int]]:
    """Distinct keys in the order they first appear, and the sum of ``values`` of each."""
    if len(keys) == 0:
        return [], []
    uniq, first, inv = np.unique(keys, return_index=True, return_inverse=True)
    sums = np.zeros(len(uniq), np.int64)
    np.add.at(sums, inv.ravel(), values.astype(np.int64))
    o = np.argsort(first, kind="stable")
    return uniq[o].tolist(), sums[o].tolist()


def running_at(tl: Timeline, cpu: int, ts: int) -> int:
    """pid running on ``cpu`` at ``ts`` (-1 when unknown)."""
    seg = tl.segments.on(cpu)
    if seg.stop <= seg.start:
        return -1
    j = int(np.searchsorted(tl.segments.start[seg], ts, side="right")) - 1
    return int(tl.segments.pid[seg.start + j]) if j >= 0 else -1


def running_at_many(tl: Timeline, cpu: int, ts: np.ndarray) -> np.ndarray:
    """``running_at`` for many times on one CPU: the pid running at each (-1 when unknown)."""
    seg = tl.segments.on(cpu)
    if seg.stop <= seg.start:
        return np.full(len(ts), -1, np.int64)
    j = np.searchsorted(tl.segments.start[seg], ts, side="right") - 1
    pids = tl.segments.pid[seg.start + np.maximum(j, 0)]
    return np.where(j >= 0, pids, -1)


def silent_gaps(tl: Timeline, cpu: int, a: int, b: int, min_ns: int) -> list[tuple[int, int]]:
    """Stretches of at least ``min_ns`` inside [a, b) with no event at all on ``cpu``.

    Binary search in the CPU's event times (``Timeline.cpu_ts``): the cost is the window's events.
    """
    if cpu < 0 or cpu >= tl.ncpu or b <= a:
        return []
    ts = tl.cpu_ts[cpu]
    i0 = int(np.searchsorted(ts, a, side="right"))
    i1 = int(np.searchsorted(ts, b, side="left"))
    edges = np.concatenate([[a], ts[i0:max(i0, i1)], [b]]).astype(np.int64)
    k = np.flatnonzero(np.diff(edges) >= min_ns)
    return list(zip(edges[k].tolist(), edges[k + 1].tolist(), strict=True))


class _Covered:
    """Sorted disjoint intervals and how much of any window they cover (binary search, no scan)."""

    def __init__(self, ivals: list[tuple[int, int]]) -> None:
        self.start = np.array([s for s, _e in ivals], np.int64)
        self.end = np.array([e for _s, e in ivals], np.int64)
        self.cum = np.concatenate([[0], np.cumsum(self.end - self.start)])

    @classmethod
    def of(cls, start: np.ndarray, end: np.ndarray) -> _Covered:
        """The union of intervals [start[i], end[i]) with end > start: sorted, disjoint, touching ones merged."""
        out = cls([])
        if len(start) == 0:
            return out
        o = np.lexsort((end, start))
        s, e = start[o].astype(np.int64), end[o].astype(np.int64)
        reach = np.maximum.accumulate(e)
        new = np.ones(len(s), bool)
        new[1:] = s[1:] > reach[:-1]          # a new interval starts past everything before it
        first = np.flatnonzero(new)
        out.start = s[first]
        out.end = reach[np.concatenate([first[1:] - 1, [len(s) - 1]])]
        out.cum = np.concatenate([[0], np.cumsum(out.end - out.start)])
        return out

    def within_many(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``within`` of each window [a[i], b[i]) (windows with b <= a: whatever ``within`` says)."""
        a = np.asarray(a, np.int64)
        b = np.asarray(b, np.int64)
        if len(self.start) == 0 or len(a) == 0:
            return np.zeros(len(a), np.int64)
        i0 = np.searchsorted(self.end, a, side="right")
        i1 = np.searchsorted(self.start, b, side="left")
        ok = i1 > i0
        s0 = self.start[np.minimum(i0, len(self.start) - 1)]
        e1 = self.end[np.maximum(i1 - 1, 0)]
        total = self.cum[i1] - self.cum[i0] - np.maximum(0, a - s0) - np.maximum(0, e1 - b)
        return np.where(ok, total, 0)

    def within(self, a: int, b: int) -> int:
        i0 = int(np.searchsorted(self.end, a, side="right"))
        i1 = int(np.searchsorted(self.start, b, side="left"))
        if i1 <= i0:
            return 0
        total = int(self.cum[i1] - self.cum[i0])
        return total - max(0, a - int(self.start[i0])) - max(0, int(self.end[i1 - 1]) - b)
