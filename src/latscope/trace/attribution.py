"""Which stage made a late packet late, and what held that stage back.

1. Baseline: per stage, the median and p99 over the packets that were not
   late. A stage's *excess* in a late packet is its time minus that median.
2. The *dominant stage* of a late packet is the one with the largest excess.
3. Culprits: for every stage with a real excess (at least 5 us and a tenth
   of the packet's total excess), the stage's window on the CPU where it
   waited is split among what held that CPU (latscope.trace.model):
   other tasks (comm, pid), interrupts and softirqs (net of nesting), the
   CPU being idle (a wakeup that had to bring an idle CPU back), the waiting
   task's own work ("self"), and silent gaps: stretches without a single
   event on that CPU while only the waiting task or idle was there, which a
   guest cannot explain (the host or hypervisor took the CPU, or kernel work
   that no enabled event shows). With the run's host steal series
   (latscope.env.steal) a gap is ``hypervisor (steal)`` when that CPU's
   steal grew over the gap's window, else ``unexplained gap``; a gap while
   another task was current stays that task's time (a busy loop makes no
   events either), with a note when steal grew meanwhile.
   Without a series it stays ``silent gap (no events)``. Migrations of the
   waiting task and a wakeup that only preempted at the next tick are noted.
4. Across late packets: culprits ranked by total time and by how many late
   packets they delayed.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np

from latscope.env.steal import StealSeries
from latscope.store.samples import MISSING
from latscope.trace.model import Timeline, running_at, silent_gaps, window_shares
from latscope.trace.stages import ONE_HOST, STAGE_ROLE, STAGES, Packets, stage_durations, stage_starts

MIN_EXCESS_NS = 5_000
MIN_SHARE_NS = 1_000
GAP_MIN_NS = 20_000
MAX_CULPRITS = 8
TICK_FUNCTIONS = ("tick_nohz_handler", "tick_sched_timer", "tick_handle_periodic")
#: Steal is accounted at the CPU's next tick after it happened (4 ms at HZ=250, 10 ms at HZ=100).
STEAL_LAG_NS = 10_000_000
STEAL_NAME, UNEXPLAINED_NAME, SILENT_NAME = "hypervisor (steal)", "unexplained gap", "silent gap (no events)"


@dataclass(frozen=True)
class Baseline:
    """A stage's time in packets that were not late (its time inside the metric's span, for latency)."""

    stage: str
    count: int
    median_ns: float
    p99_ns: float
    #: Whether the stage had time inside the metric's span in any of those packets.
    in_metric: bool = True


@dataclass(frozen=True)
class Culprit:
    """Something that held the CPU a late packet waited on."""

    kind: str      # task, self, idle, irq, softirq, gap, migration
    name: str
    pid: int
    cpu: int
    ns: int
    stage: str
    note: str = ""
    #: Which kernel it ran on: "" on a one-host path, "host" or "guest" across a hypervisor.
    where: str = ""
    #: Whom it held up, where that is not the stage's packet or probe task ("vCPU thread CPU 0/TCG").
    victim: str = ""


@dataclass(frozen=True)
class StageTime:
    name: str
    ns: float
    cpu: int
    excess_ns: float
    #: Whether the stage overlaps the span of the metric late is judged on (False: listed, never blamed).
    in_metric: bool = True


@dataclass(frozen=True)
class LatePacket:
    seq: int
    value_ns: float
    start_ns: int
    dominant_stage: str
    excess_ns: float
    stages: tuple[StageTime, ...]
    culprits: tuple[Culprit, ...]
    collateral_of: int | None


@dataclass(frozen=True)
class Ranked:
    """A culprit across all late packets."""

    kind: str
    name: str
    count: int
    total_ns: int
    max_ns: int
    pids: tuple[int, ...]
    cpus: tuple[int, ...]
    stages: tuple[str, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)
    where: str = ""


def baselines(durations: np.ndarray, normal: np.ndarray, present: np.ndarray,
              names: tuple[str, ...] = STAGES, clipped: bool = False) -> list[Baseline]:
    """Median and p99 of each stage over normal packets where the stage's end was seen.

    ``clipped``: ``durations`` are the stages' times inside the metric's span (``clip_to_spans``); a stage
    with none in any normal packet is marked outside the metric.
    """
    out = []
    for k, name in enumerate(names):
        sel = normal & present[:, k] & ~np.isnan(durations[:, k])
        v = durations[sel, k]
        inside = not clipped or bool((v > 0).any())
        if len(v):
            med, p99 = np.percentile(v, [50, 99])
            out.append(Baseline(name, len(v), float(med), float(p99), inside))
        else:
            out.append(Baseline(name, 0, 0.0, 0.0, inside))
    return out


def clip_to_spans(times: np.ndarray, durations: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """Each stage's time inside its packet's span (``spans``: (n, 2) start and end, MISSING where the
    packet has none): what ``--metric latency`` is judged on. NaN where the duration or the span is
    unknown, 0 for a stage wholly outside. Integer arithmetic: the times are nanoseconds since 1970."""
    starts, ends = stage_starts(times), times[:, 1:]
    lo, hi = spans[:, :1], spans[:, 1:]
    known = (starts != MISSING) & (ends != MISSING) & (lo != MISSING) & (hi != MISSING)
    inside = np.minimum(ends, hi) - np.maximum(starts, lo)
    out = np.where(known, np.clip(inside, 0, None), 0).astype(np.float64)
    out[(spans[:, 0] == MISSING) | (spans[:, 1] == MISSING)] = np.nan
    out[np.isnan(durations)] = np.nan
    return out


def explain(tl: Timeline, pk: Packets, idx: int, value_ns: float, durations: np.ndarray,
            base: list[Baseline], ctx=None, steal: StealSeries | None = None,
            span: tuple[int, int] | None = None) -> LatePacket:
    """Stages, dominant stage and culprits of packet ``idx`` of ``pk``.

    ``steal``: the run's host steal series (on the trace's clock), which splits silent gaps.

    ``span``: (start, end) of the metric on the trace's clock when it covers only part of the path
    (``--metric latency``: the send call to the kernel's receive timestamp); ``durations`` and ``base``
    are then the stages' times inside it (``clip_to_spans``). Every stage is listed: those inside with
    their time inside, those outside with their whole time, no excess and ``in_metric`` false. The
    dominant stage is one inside, and culprits are looked for only inside the span.

    ``ctx`` finds the culprits of each stage for models other than one host's
    (latscope.trace.vmculprits): ``ctx.stage_culprits(idx, k, cpu, a, b, base)``, ``ctx.extra(idx, span)``, and
    ``ctx.finish(idx, merged)`` to word the merged culprits.
    """
    names = pk.model.names
    d = durations[idx]
    times, cpus = pk.times[idx], pk.cpus[idx]
    starts = stage_starts(times[None])[0]
    present = times[1:] != MISSING
    inside, shown = present, d
    if span is not None:
        inside = present & (np.nan_to_num(d) > 0)
        shown = np.where(inside, d, stage_durations(pk.times[idx:idx + 1])[0])
    excess = np.where(inside, d - np.array([b.median_ns for b in base]), 0.0)
    excess = np.nan_to_num(excess)
    total_excess = float(np.clip(excess, 0, None).sum())
    dominant = int(np.argmax(np.where(inside, excess, -np.inf))) if inside.any() else 0
    stages = tuple(StageTime(names[k], float(shown[k]), int(cpus[k + 1]), float(excess[k]), bool(inside[k]))
                   for k in range(len(names)) if present[k])
    culprits: list[Culprit] = []
    for k in range(len(names)):
        if not inside[k] or excess[k] < max(MIN_EXCESS_NS, 0.1 * total_excess):
            continue
        a, b = int(starts[k]), int(times[k + 1])
        if span is not None:
            a, b = max(a, span[0]), min(b, span[1])
        cpu = int(cpus[k + 1])
        if ctx is not None:
            if b > a:
                culprits += ctx.stage_culprits(idx, k, cpu, a, b, base[k])
            continue
        if cpu < 0 or b <= a:
            continue
        victim = (pk.sender_pid, -1, pk.receiver_pid)[STAGE_ROLE[k]]
        culprits += _stage_culprits(tl, names[k], cpu, a, b, victim, base[k], steal)
        if names[k] == "runqueue_wait" and pk.model is ONE_HOST:
            culprits = _note_tick(tl, pk, idx, culprits)
    culprits += _migrations(tl, pk, idx, span) if ctx is None else ctx.extra(idx, span)
    merged = _merge(culprits)
    if ctx is not None:
        merged = ctx.finish(idx, merged)
    cause = int(pk.cause[idx]) if pk.collateral[idx] and pk.cause[idx] >= 0 else None
    return LatePacket(int(pk.seq[idx]), float(value_ns), int(times[0]) if times[0] != MISSING else 0,
                      names[dominant], float(excess[dominant]), stages, _keep(merged), cause)


def _keep(merged: list[Culprit]) -> tuple[Culprit, ...]:
    """The largest culprits, every QEMU thread and vCPU entry (what a VM breakdown is for) and every
    migration (no time of its own, so it ranks last, but the text report prints each)."""
    return tuple(merged[:MAX_CULPRITS]) + tuple(c for c in merged[MAX_CULPRITS:]
                                                if c.kind in ("qemu", "vcpu", "migration"))


def _stage_culprits(tl: Timeline, stage: str, cpu: int, a: int, b: int, victim: int,
                    base: Baseline, steal: StealSeries | None = None) -> list[Culprit]:
    shares = window_shares(tl, cpu, a, b)
    out: list[Culprit] = []
    gap_min = int(max(GAP_MIN_NS, base.p99_ns))
    gaps: list[tuple[int, int, int | None, int]] = []   # (start, end, steal growth, ns) while the waiting
    #                                                   task or idle was current
    # While another task was current and nothing showed, that task keeps the time: a busy loop makes no
    # events either, and a task that held the CPU when the host stole it still held it after (the tests
    # plant exactly that: a SCHED_FIFO spinner logging its own intervals). Steal meanwhile is said, not billed.
    stolen: dict[int, int] = defaultdict(int)      # that task's pid -> silent time with steal growing
    # A silent stretch can lie inside an interrupt (entry, nothing, exit): the interrupt's share counts it
    # already. With steal growing over it the hypervisor took that time from the handler: it is the gap's,
    # and leaves the interrupt's share; without, the handler took it: it stays the interrupt's, not a gap's.
    taken_from_irqs: dict[tuple[str, str], int] = defaultdict(int)
    gap_ns = 0                                     # the gaps' time outside interrupts (self/idle hold it)
    for s, e in silent_gaps(tl, cpu, a, b, gap_min):
        current = running_at(tl, cpu, (s + e) // 2)
        grew = steal.grew(cpu, s, e, STEAL_LAG_NS) if steal is not None else None
        if current in (victim, 0, -1):
            inside = {(x.kind, x.name): x.ns for x in window_shares(tl, cpu, s, e) if x.kind in ("irq", "softirq")}
            outside = e - s - sum(inside.values())
            if grew:
                gaps.append((s, e, grew, e - s))
                gap_ns += outside
                for key, ns in inside.items():
                    taken_from_irqs[key] += ns
            elif outside >= MIN_SHARE_NS:
                gaps.append((s, e, grew, outside))
                gap_ns += outside
        elif grew:
            stolen[current] += e - s
    for sh in shares:
        if sh.ns < MIN_SHARE_NS:
            continue
        kind, name, note = sh.kind, sh.name, ""
        ns = sh.ns - taken_from_irqs.get((kind, name), 0)
        if kind == "task" and sh.pid == victim:
            kind, note = "self", "the waiting task's own time"
        if kind in ("self", "idle") and gap_ns:
            # the silent part is reported as a gap, not as the task's own time
            take = min(ns, gap_ns)
            ns -= take
            gap_ns -= take
        if kind == "task" and stolen.get(sh.pid):
            note = (f"{min(ns, stolen[sh.pid]) / 1000:.0f} us of it without any event while the host's steal "
                    "time on this CPU grew: part of that may be the hypervisor's")
        if kind == "idle":
            name = f"idle CPU {cpu}"
            note = "the CPU was idle: wakeup IPI or idle-state exit latency"
        if ns >= MIN_SHARE_NS:
            out.append(Culprit(kind, name, sh.pid, cpu, int(ns), stage, note))
    for _s, _e, grew, ns in gaps:
        out.append(_gap_culprit(cpu, ns, grew, stage))
    return out


def _gap_culprit(cpu: int, ns: int, grew: int | None, stage: str) -> Culprit:
    """A silent gap of ``ns`` named by the steal series: hypervisor, unexplained, or (no series) just silent."""
    if grew is None:
        return Culprit("gap", SILENT_NAME, -1, cpu, int(ns), stage,
                       "no event on this CPU: host/hypervisor preemption or untraced kernel work")
    if grew > 0:
        return Culprit("steal", STEAL_NAME, -1, cpu, int(ns), stage,
                       "no event on this CPU, and the host's steal time on this CPU grew around it: "
                       "the hypervisor ran something else")
    return Culprit("gap", UNEXPLAINED_NAME, -1, cpu, int(ns), stage,
                   "no event on this CPU and no host steal around it: kernel work no enabled event shows "
                   "(or steal shorter than the steal counter's 10 ms step)")


def _note_tick(tl: Timeline, pk: Packets, idx: int, culprits: list[Culprit]) -> list[Culprit]:
    """A runqueue wait that ended right after a tick by preempting a runnable task: say so."""
    row = int(pk.rows[idx, 10])
    if row < 0:
        return culprits
    t = tl.table
    state = int(t.nums[row, 4])
    prev_pid = int(t.nums[row, 0])
    if prev_pid <= 0 or state == MISSING or state & 0xFFFF:  # prev was not runnable: it blocked
        return culprits
    cpu = int(t.cpu[row])
    hr = tl.rows_on("hrtimer_expire_entry", cpu)
    k = int(np.searchsorted(hr, row, side="left"))
    if k == 0:
        return culprits
    last = int(hr[k - 1])
    fn = t.string(int(t.strs[last, 0]))
    if not fn.startswith(TICK_FUNCTIONS) or t.ts[row] - t.ts[last] > 100_000:
        return culprits
    return [Culprit(c.kind, c.name, c.pid, c.cpu, c.ns, c.stage, "preempted for the receiver only at the next tick")
            if c.pid == prev_pid and c.kind == "task" else c for c in culprits]


def on_its_way(times: np.ndarray, span: tuple[int, int] | None = None) -> tuple[int, int] | None:
    """(first, last) checkpoint time of one packet's ``times``, cut to ``span``; None with fewer than two."""
    valid = times[times != MISSING]
    if len(valid) < 2:
        return None
    a, b = int(valid.min()), int(valid.max())
    return (max(a, span[0]), min(b, span[1])) if span is not None else (a, b)


def _migrations(tl: Timeline, pk: Packets, idx: int, span: tuple[int, int] | None = None) -> list[Culprit]:
    """The sender's and receiver's moves to another CPU while the packet was on its way (inside ``span``)."""
    t = tl.table
    rows = tl.migrations
    window = on_its_way(pk.times[idx], span)
    if len(rows) == 0 or window is None:
        return []
    a, b = window
    ts = tl.migration_ts()
    rows = rows[int(np.searchsorted(ts, a, side="left")):int(np.searchsorted(ts, b, side="right"))]
    sel = rows[np.isin(t.nums[rows, 0], [pk.sender_pid, pk.receiver_pid])]
    return [Culprit("migration", t.string(int(t.strs[r, 0])), int(t.nums[r, 0]), int(t.nums[r, 3]), 0,
                    "", f"moved from CPU {int(t.nums[r, 2])} to CPU {int(t.nums[r, 3])}") for r in sel]


def _merge(culprits: list[Culprit]) -> list[Culprit]:
    """One entry per (kind, name, pid, cpu, where, victim): times added, stages and notes joined."""
    acc: dict[tuple[str, str, int, int, str, str], list[Culprit]] = defaultdict(list)
    for c in culprits:
        acc[(c.kind, c.name, c.pid, c.cpu, c.where, c.victim)].append(c)
    out = []
    for (kind, name, pid, cpu, where, victim), items in acc.items():
        stages = ",".join(dict.fromkeys(c.stage for c in items if c.stage))
        notes = "; ".join(dict.fromkeys(c.note for c in items if c.note))
        out.append(Culprit(kind, name, pid, cpu, sum(c.ns for c in items), stages, notes, where, victim))
    return sorted(out, key=lambda c: (-c.ns, c.kind != "migration"))


def rank(late: list[LatePacket]) -> list[Ranked]:
    """Culprits across late packets: by total time, then by count."""
    Key = tuple[str, str, str]
    total: Counter[Key] = Counter()
    count: Counter[Key] = Counter()
    worst: dict[Key, int] = {}
    pids: dict[Key, set[int]] = defaultdict(set)
    cpus: dict[Key, set[int]] = defaultdict(set)
    stages: dict[Key, Counter[str]] = defaultdict(Counter)
    notes: dict[Key, Counter[str]] = defaultdict(Counter)
    for p in late:
        seen = set()
        for c in p.culprits:
            key = (c.kind, c.name, c.where)
            total[key] += c.ns
            worst[key] = max(worst.get(key, 0), c.ns)
            if c.pid >= 0:
                pids[key].add(c.pid)
            cpus[key].add(c.cpu)
            for s in c.stage.split(","):
                if s:
                    stages[key][s] += 1
            if c.note:
                notes[key][c.note] += 1
            if key not in seen:
                count[key] += 1
                seen.add(key)
    keys = sorted(total, key=lambda k: (-total[k], -count[k]))
    return [Ranked(k[0], k[1], count[k], int(total[k]), int(worst[k]), tuple(sorted(pids[k])), tuple(sorted(cpus[k])),
                   tuple(s for s, _ in stages[k].most_common()), tuple(n for n, _ in notes[k].most_common(2)), k[2])
            for k in keys]
