"""What held a packet back on its way through a hypervisor: host tasks, QEMU's own threads, the guest.

A stage on the host side (latscope.trace.vmpath) is explained as on one
host, with QEMU's threads named by what they do ("QEMU IO thread IO io0",
"QEMU worker thread", "QEMU main loop"). Everything the guest does needs
the vCPU thread to run on the host, so a stage that waits on the vCPU
thread (the vCPU's wakeup, and every guest stage) is also explained by the
host's view of that thread: each stretch in which it was *runnable but not
running* (switched out with prev_state R/R+, or woken and not yet on a CPU)
is divided among what ran on its CPU meanwhile. Those are the seed's
culprits: "vCPU thread CPU 0/TCG runnable, preempted by QEMU IO thread IO
io0 for 1.2 ms". The stretch as a whole is reported too, as the vCPU
thread's own entry (kind ``vcpu``; its preemptors' entries add up to it).

A guest stage's own CPU (the guest's view) is divided as on one host, except
that the guest's silent gaps are first matched against the host: the part
in which the vCPU thread was off its host CPU is explained by the host
culprits above (or was the guest idling in a halted vCPU), and only the
rest stays a gap.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from latscope.store.samples import MISSING
from latscope.trace.attribution import GAP_MIN_NS, MIN_SHARE_NS, Baseline, Culprit, _stage_culprits, on_its_way
from latscope.trace.model import Timeline, running_at, running_at_many, silent_gaps
from latscope.trace.qemuthreads import QemuThreads
from latscope.trace.vmpath import VmPackets


def _overlaps(ivals: list[tuple[int, int]], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each window [a[k], b[k]): the sum over ``ivals`` of their overlap with it (no scan per window).

    The overlap of [s, e) with [a, b) is F(b) - F(a), with F(x) = sum of max(x - s, 0) - max(x - e, 0)
    over the intervals; each sum is a count and a prefix sum over the sorted starts (ends). Times are
    taken relative to the smallest one so the products stay far inside int64.
    """
    if not ivals or len(a) == 0:
        return np.zeros(len(a), np.int64)
    iv = np.asarray(ivals, np.int64)
    base = min(int(iv.min()), int(a.min()))
    starts, ends = np.sort(iv[:, 0] - base), np.sort(iv[:, 1] - base)
    cs = np.concatenate([[0], np.cumsum(starts)])
    ce = np.concatenate([[0], np.cumsum(ends)])

    def f(x: np.ndarray) -> np.ndarray:
        x = x - base
        ks, ke = np.searchsorted(starts, x, side="right"), np.searchsorted(ends, x, side="right")
        return (ks * x - cs[ks]) - (ke * x - ce[ke])

    return f(b) - f(a)


def fmt_ms(ns: int) -> str:
    return f"{ns / 1e6:.1f} ms" if ns >= 100_000 else f"{ns / 1e3:.0f} us"


def _who(kind: str, name: str, pid: int) -> str:
    return name if kind == "qemu" or pid <= 0 else f"{name} (pid {pid})"


def _sentence(vname: str, key: tuple[str, str, int, int, str], ns: int, times: int) -> str:
    """The seed's words: "vCPU thread CPU 0/TCG runnable, preempted by QEMU IO thread IO io0 for 1.2 ms"."""
    kind, name, pid, cpu, why = key
    n = f" ({times} times)" if times > 1 else ""
    if why == "blocked":
        return (f"{vname} blocked while its guest was busy, until {_who(kind, name, pid)} woke it: {fmt_ms(ns)}{n} "
                "(big QEMU lock or device emulation)")
    if kind == "idle":
        return f"{vname} runnable while CPU {cpu} was idle: wakeup or migration latency"
    return f"{vname} runnable, preempted by {_who(kind, name, pid)} for {fmt_ms(ns)}{n}"


def _summary(vname: str, runnable: int, blocked: int, by: dict[tuple[str, str, int, int, str], int]) -> str:
    """The vCPU thread's own entry: how long it was off its CPU and the three largest reasons."""
    merged: dict[tuple[str, str, int], int] = {}
    for (kind, name, pid, _cpu, _why), ns in by.items():
        merged[(kind, name, pid)] = merged.get((kind, name, pid), 0) + ns
    top = sorted(merged.items(), key=lambda kv: -kv[1])[:3]
    who = ", ".join(f"{_who(k, n, p)} {fmt_ms(ns)}" for (k, n, p), ns in top if ns >= MIN_SHARE_NS)
    what = " and ".join(x for x in (f"runnable, not running for {fmt_ms(runnable)}" if runnable else "",
                                    f"blocked for {fmt_ms(blocked)}" if blocked else "") if x)
    return f"{vname} {what}" + (f": {who}" if who else "")


def task_shares(tl: Timeline, cpu: int, ivals: list[tuple[int, int]]) -> dict[int, tuple[int, int, str]]:
    """pid -> (ns, stretches, comm) of the tasks that ran on ``cpu`` inside the (disjoint) intervals."""
    segs = tl.segments
    sl = segs.on(cpu)
    if sl.stop <= sl.start or not ivals:
        return {}
    st, en = segs.start[sl], segs.end[sl]
    a = np.array([x[0] for x in ivals], np.int64)
    b = np.array([x[1] for x in ivals], np.int64)
    j0 = np.maximum(np.searchsorted(st, a, side="right") - 1, 0)
    j1 = np.searchsorted(st, b, side="left")
    n = np.maximum(j1 - j0, 0)
    if n.sum() == 0:
        return {}
    which = np.repeat(np.arange(len(a)), n)
    seg = np.repeat(j0, n) + (np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n))
    ns = np.minimum(en[seg], b[which]) - np.maximum(st[seg], a[which])
    keep = ns > 0
    seg, which, ns = seg[keep], which[keep], ns[keep]
    pids = segs.pid[sl][seg]
    out: dict[int, tuple[int, int, str]] = {}
    for p in np.unique(pids):
        m = pids == p
        out[int(p)] = (int(ns[m].sum()), len(np.unique(which[m])),
                       tl.comm_of(int(segs.comm[sl][seg[m][-1]])))
    return out


class VmCulprits:
    """The ``ctx`` of latscope.trace.attribution.explain for a VM path."""

    def __init__(self, host: Timeline, guest: Timeline | None, vp: VmPackets, threads: QemuThreads,
                 host_pids: dict[str, int], guest_pids: dict[str, int]) -> None:
        self.host, self.guest, self.vp, self.threads = host, guest, vp, threads
        self.host_pids, self.guest_pids = host_pids, guest_pids
        t = host.table
        sw = t.rows("sched_switch")
        self._out: dict[int, np.ndarray] = {}
        for v in threads.tids("vcpu"):
            self._out[v] = sw[t.nums[sw, 0] == v]
        wk = t.rows("sched_waking")
        self._wake = {v: wk[t.nums[wk, 0] == v] for v in threads.tids("vcpu")}
        self.guest_cpu = {tid: c for c, tids in threads.vcpu_of_guest_cpu().items() for tid in tids}
        # per packet, over all its stages: (kind, name, pid, cpu, why) -> (ns, stretches); vCPU -> [runnable, blocked]
        self._acc: dict[int, dict[tuple[str, str, int, int, str], tuple[int, int]]] = {}
        self._vacc: dict[int, dict[int, list[int]]] = {}

    # -- the Ctx protocol -------------------------------------------------

    def stage_culprits(self, idx: int, k: int, cpu: int, a: int, b: int, base: Baseline) -> list[Culprit]:
        model = self.vp.packets.model
        stage, role, dom = model.names[k], model.roles[k], model.domains[k]
        if dom == "host":
            if role == "vcpu":
                return self.vcpu_offcpu(idx, stage, a, b)[0]
            if cpu < 0:
                return []
            victim = self._victim(idx, role, self.host_pids)
            return [self._name_host(c, victim) for c in _stage_culprits(self.host, stage, cpu, a, b, victim, base)]
        host_side, offcpu = self.vcpu_offcpu(idx, stage, a, b)
        if self.guest is None or cpu < 0:
            return host_side
        victim = self._victim(idx, role, self.guest_pids)
        inside = [replace(c, where="guest") for c in _stage_culprits(self.guest, stage, cpu, a, b, victim, base)
                  if c.kind != "gap"]
        return host_side + inside + self._guest_gaps(stage, cpu, a, b, victim, base, offcpu)

    def extra(self, idx: int, span: tuple[int, int] | None = None) -> list[Culprit]:
        """The sender's and receiver's moves to another CPU while the packet was on its way (inside ``span``)."""
        out: list[Culprit] = []
        window = on_its_way(self.vp.packets.times[idx], span)
        if window is None:
            return out
        a, b = window
        for tl, where, pids in ((self.host, "host", self.host_pids), (self.guest, "guest", self.guest_pids)):
            if tl is None:
                continue
            t = tl.table
            rows = tl.migrations
            want = [p for r, p in pids.items() if r in ("sender", "receiver") and p > 0]
            sel = rows[(t.ts[rows] >= a) & (t.ts[rows] <= b) & np.isin(t.nums[rows, 0], want)]
            out += [Culprit("migration", t.string(int(t.strs[r, 0])), int(t.nums[r, 0]), int(t.nums[r, 3]), 0, "",
                            f"moved from CPU {int(t.nums[r, 2])} to CPU {int(t.nums[r, 3])}", where) for r in sel]
        return out

    # -- host side --------------------------------------------------------

    def _victim(self, idx: int, role: str, pids: dict[str, int]) -> int:
        if role in ("reader", "writer"):
            return int(self.vp.reader[idx])
        if role == "vcpu":
            return int(self.vp.vcpu[idx])
        return int(pids.get(role, -1))

    def _name_host(self, c: Culprit, victim: int) -> Culprit:
        whom = self.threads.label(victim) if victim in self.threads else ""
        if c.kind in ("task", "self") and c.pid in self.threads:
            label = self.threads.label(c.pid)
            if c.kind == "self":
                return replace(c, name=label, where="host")
            return replace(c, kind="qemu", name=label, where="host", victim=whom,
                           note=f"kept {whom or 'it'} off its CPU")
        return replace(c, where="host", victim=whom if c.kind != "self" else "")

    def offcpu(self, v: int, a: int, b: int) -> tuple[list[tuple[str, int, int, int, int]], list[tuple[int, int]]]:
        """Why vCPU thread ``v`` was not running in [a, b]: ([(why, start, end, cpu, waker)], [every stretch off CPU]).

        ``why`` is "runnable" (``cpu``: the CPU it waited for) or "blocked" (``waker``: the thread that
        woke it; only while its guest CPU had a task to run, so not a halted, idle guest). Stretches
        whose start the trace does not show (an inferred switch) are left out.
        """
        segs = self.host.segments
        t = self.host.table
        sel = np.flatnonzero(segs.pid == v)
        if len(sel) == 0:
            return [], []
        o = sel[np.argsort(segs.start[sel], kind="stable")]
        st, en, cp = segs.start[o], segs.end[o], segs.cpu[o]
        i0 = max(0, int(np.searchsorted(en, a, side="left")) - 1)
        i1 = int(np.searchsorted(st, b, side="right"))
        outs = self._out.get(v, np.zeros(0, np.int64))
        out_ts = t.ts[outs]
        wakes = self._wake.get(v, np.zeros(0, np.int64))
        wake_ts = t.ts[wakes]
        gcpu = self.guest_cpu.get(v, -1)
        found: list[tuple[str, int, int, int, int]] = []
        off: list[tuple[int, int]] = []
        for i in range(i0, min(i1, len(st) - 1)):
            gs, ge = int(en[i]), int(st[i + 1])
            s, e = max(gs, a), min(ge, b)
            if e <= s:
                continue
            off.append((s, e))
            # the switch that ended run i says whether it was preempted (runnable) or went to sleep
            j = int(np.searchsorted(out_ts, gs, side="left"))
            if j >= len(outs) or out_ts[j] != gs or t.cpu[outs[j]] != cp[i]:
                continue
            state = int(t.nums[outs[j], 4])
            if state != MISSING and (state & 0xFFFF) == 0:
                found.append(("runnable", s, e, int(cp[i]), -1))
                continue
            w = int(np.searchsorted(wake_ts, gs, side="left"))
            woke = int(wake_ts[w]) if w < len(wakes) and wake_ts[w] < ge else ge
            if woke > s and self._guest_busy(gcpu, gs) and w < len(wakes):
                found.append(("blocked", s, min(woke, e), int(cp[i]), int(t.pid[wakes[w]])))
            if woke < e:
                found.append(("runnable", max(woke, s), e, int(cp[i + 1]), -1))
        return found, off

    def _guest_busy(self, gcpu: int, ts: int) -> bool:
        """Had the guest CPU a task to run at ``ts`` (not its idle task)? False when the guest trace is missing."""
        if self.guest is None or gcpu < 0:
            return False
        return running_at(self.guest, gcpu, ts) > 0

    def vcpu_offcpu(self, idx: int, stage: str, a: int, b: int) -> tuple[list[Culprit], list[tuple[int, int]]]:
        """Culprits of the vCPU thread's runnable and blocked stretches in [a, b], and all its stretches off CPU."""
        v = int(self.vp.vcpu[idx])
        vcpus = [v] if v >= 0 else self.threads.tids("vcpu")
        out: list[Culprit] = []
        off_all: list[tuple[int, int]] = []
        for v in vcpus:
            spans, off = self.offcpu(v, a, b)
            off_all += off
            vname = self.threads.label(v)
            runnable = blocked = 0
            by: dict[tuple[str, str, int, int, str], int] = {}
            times: dict[tuple[str, str, int, int, str], int] = {}
            runnable_by_cpu: dict[int, list[tuple[int, int]]] = {}
            for why, s, e, x, waker in spans:
                if why == "blocked":
                    blocked += e - s
                    kind, name = ("qemu", self.threads.label(waker)) if waker in self.threads else \
                        ("task", self._comm(waker))
                    key = (kind, name, waker, x, "blocked")
                    by[key] = by.get(key, 0) + e - s
                    times[key] = times.get(key, 0) + 1
                    continue
                runnable += e - s
                runnable_by_cpu.setdefault(x, []).append((s, e))
            for x, ivals in runnable_by_cpu.items():
                # who ran there meanwhile (interrupts count for the task they interrupted)
                for pid, (ns, n, comm) in task_shares(self.host, x, ivals).items():
                    if pid == v:
                        continue  # an inferred boundary inside the stretch; not a culprit
                    if pid in self.threads:
                        key = ("qemu", self.threads.label(pid), pid, x, "runnable")
                    elif pid == 0:
                        key = ("idle", f"idle CPU {x}", 0, x, "runnable")
                    else:
                        key = ("task", comm, pid, x, "runnable")
                    by[key] = by.get(key, 0) + ns
                    times[key] = times.get(key, 0) + n
            parts = sorted(by.items(), key=lambda kv: -kv[1])
            acc = self._acc.setdefault(idx, {})
            for key, ns in parts:
                prev = acc.get(key, (0, 0))
                acc[key] = (prev[0] + ns, prev[1] + times[key])
                kind, name, pid, cpu, why = key
                if ns >= MIN_SHARE_NS:
                    out.append(Culprit(kind, name, pid, cpu, int(ns), stage, _sentence(vname, key, ns, times[key]),
                                       "host", vname))
            if runnable + blocked >= MIN_SHARE_NS:
                total = self._vacc.setdefault(idx, {}).setdefault(v, [0, 0])
                total[0] += runnable
                total[1] += blocked
                cpu = spans[0][3] if spans else -1
                out.append(Culprit("vcpu", vname, v, cpu, int(runnable + blocked), stage,
                                   _summary(vname, runnable, blocked, by), "host", vname))
        return out, off_all

    def finish(self, idx: int, merged: list[Culprit]) -> list[Culprit]:
        """One sentence per culprit of the vCPU thread over the whole packet, not one per stage."""
        acc, vacc = self._acc.pop(idx, {}), self._vacc.pop(idx, {})
        out = []
        for c in merged:
            if c.kind == "vcpu" and c.pid in vacc:
                runnable, blocked = vacc[c.pid]
                mine = {k: ns for k, (ns, _n) in acc.items()}
                c = replace(c, note=_summary(c.name, runnable, blocked, mine))
            elif c.victim.startswith("vCPU thread"):
                said = [_sentence(c.victim, key, ns, n) for key, (ns, n) in acc.items()
                        if key[:4] == (c.kind, c.name, c.pid, c.cpu) and ns >= MIN_SHARE_NS]
                c = replace(c, note="; ".join(said) or c.note)
            out.append(c)
        return out

    def _comm(self, pid: int) -> str:
        t = self.host.table
        rows = np.flatnonzero(t.pid == pid)
        return t.string(int(t.comm[rows[-1]])) if len(rows) else f"pid {pid}"

    # -- guest side -------------------------------------------------------

    def _guest_gaps(self, stage: str, cpu: int, a: int, b: int, victim: int, base: Baseline,
                    offcpu: list[tuple[int, int]]) -> list[Culprit]:
        """The guest's silent stretches, less what the host explains (the vCPU thread was not running)."""
        assert self.guest is not None
        gap_min = int(max(GAP_MIN_NS, base.p99_ns))
        gaps = np.asarray(silent_gaps(self.guest, cpu, a, b, gap_min), np.int64).reshape(-1, 2)
        s, e = gaps[:, 0], gaps[:, 1]
        mine = np.isin(running_at_many(self.guest, cpu, (s + e) // 2), (victim, 0, -1))
        rest = (e - s) - _overlaps(offcpu, s, e)
        return [Culprit("gap", "silent gap (no events)", -1, cpu, int(r), stage,
                        "no guest event while the vCPU thread ran: emulation or untraced guest work", "guest")
                for r in rest[mine & (rest >= MIN_SHARE_NS)]]

