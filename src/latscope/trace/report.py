"""A breakdown as a person reads it (text, top-down) and as one stable JSON document.

The text starts with the answer (what delayed the late packets, ranked),
then where in the path the time went, the normal cost of each stage, and
last the worst packets one by one, each stage as ``+N us`` with what held
its CPU. Numbers are microseconds with three decimals; packets are named by
``seq`` so they can be found in the trace.
"""

from __future__ import annotations

from typing import Any

from latscope.trace.attribution import Culprit, LatePacket, Ranked
from latscope.trace.breakdown import Breakdown
from latscope.trace.stages import STAGES

BREAKDOWN_FORMAT = "latscope-breakdown"
BREAKDOWN_SCHEMA_VERSION = 1
METRIC_WORDS = {
    "e2e": "e2e = rx_user_ns - sched_ns (scheduled send to receiver in user space)",
    "latency": "latency = rx_best - send_ns (send call to the kernel's receive timestamp); stages marked - lie "
               "outside it: listed with their whole time, never blamed",
    "trace": "receiver marker - sender marker (trace only)",
}


def us(ns: float | None) -> float | None:
    return None if ns is None else round(float(ns) / 1000.0, 3)


def fmt(ns: float) -> str:
    return f"{float(ns) / 1000.0:.3f}"


def culprit_label(kind: str, name: str, pids: tuple[int, ...] | list[int] = (), where: str = "") -> str:
    label = name
    if kind in ("task", "self", "qemu", "vcpu") and pids:
        shown = ",".join(str(p) for p in list(pids)[:3]) + ("..." if len(pids) > 3 else "")
        label = f"{name} ({'tid' if kind in ('qemu', 'vcpu') else 'pid'} {shown})"
        label += " [itself]" if kind == "self" else " runnable" if kind == "vcpu" else ""
    return f"{where}: {label}" if where else label


def to_json(bd: Breakdown) -> dict[str, Any]:
    """The --json document (docs/breakdown.md describes every field)."""
    by_count = sorted(bd.culprits, key=lambda c: (-c.count, -c.total_ns))
    return {
        "format": BREAKDOWN_FORMAT,
        "schema_version": BREAKDOWN_SCHEMA_VERSION,
        "run_id": bd.run_id,
        "metric": bd.metric,
        "threshold_us": us(bd.threshold_ns) if bd.threshold_ns != float("inf") else None,
        "threshold_source": bd.threshold_source,
        "packets": bd.packets,
        "packets_traced": bd.traced,
        "late_count": bd.late_count,
        "late_untraced": bd.late_untraced,
        "late_broken_down": len(bd.late),
        "collateral": bd.collateral,
        "sender_pid": bd.sender_pid,
        "receiver_pid": bd.receiver_pid,
        "trace": {k: v for k, v in bd.trace.items()},
        "warnings": list(bd.warnings),
        "stage_model": bd.model.key,
        "vm": _vm_json(bd.vm),
        "stages": [{"name": b.stage, "title": bd.model.title(b.stage), "baseline_median_us": us(b.median_ns),
                    "baseline_p99_us": us(b.p99_ns), "baseline_packets": b.count, "in_metric": b.in_metric}
                   for b in bd.baselines],
        "dominant_stages": dict(bd.dominant),
        "culprits": [_ranked(c) for c in bd.culprits],
        "culprits_by_count": [_ranked(c) for c in by_count],
        "late_packets": [_late(p) for p in bd.late],
    }


def _ranked(c: Ranked) -> dict[str, Any]:
    return {"comm": c.name, "kind": c.kind, "count": c.count, "total_us": us(c.total_ns), "max_us": us(c.max_ns),
            "pids": list(c.pids), "cpus": list(c.cpus), "stages": list(c.stages), "notes": list(c.notes),
            "where": c.where or None}


def _culprit(c: Culprit) -> dict[str, Any]:
    return {"comm": c.name, "kind": c.kind, "pid": c.pid if c.pid >= 0 else None, "cpu": c.cpu, "us": us(c.ns),
            "stage": c.stage or None, "note": c.note or None, "where": c.where or None, "victim": c.victim or None}


def _vm_json(vm: dict[str, Any] | None) -> dict[str, Any] | None:
    if vm is None:
        return None
    out = {k: v for k, v in vm.items() if k != "vcpu_preemption"}
    out["vcpu_preemption"] = [{"kind": r["kind"], "name": r["name"], "pids": r["pids"], "packets": r["packets"],
                               "total_us": us(r["total_ns"]), "max_us": us(r["max_ns"])}
                              for r in vm.get("vcpu_preemption") or []]
    return out


def _late(p: LatePacket) -> dict[str, Any]:
    return {
        "seq": p.seq, "latency_us": us(p.value_ns), "dominant_stage": p.dominant_stage,
        "dominant_excess_us": us(p.excess_ns), "collateral_of": p.collateral_of,
        "stages": [{"name": s.name, "us": us(s.ns), "cpu": s.cpu if s.cpu >= 0 else None,
                    "excess_us": us(s.excess_ns), "in_metric": s.in_metric} for s in p.stages],
        "culprits": [_culprit(c) for c in p.culprits],
    }


def to_text(bd: Breakdown, top: int = 10, culprits: int = 10) -> str:
    """The human report."""
    T = bd.model.title
    out: list[str] = []
    title = f"Breakdown of run {bd.run_id}" if bd.run_id else "Breakdown of trace"
    src = bd.trace.get("source")
    out.append(title + (f" ({src})" if src and not bd.run_id else ""))
    pct = 100.0 * bd.late_count / bd.packets if bd.packets else 0.0
    thr = "-" if bd.threshold_ns == float("inf") else fmt(bd.threshold_ns)
    out.append(f"  metric: {METRIC_WORDS.get(bd.metric, bd.metric)}")
    out.append(f"  late: above {thr} us ({bd.threshold_source}): {bd.late_count} of {bd.packets} packets "
               f"({pct:.2f}%), {len(bd.late)} broken down"
               + (f", {bd.collateral} collateral" if bd.collateral else ""))
    tr = bd.trace
    out.append(f"  trace: {tr.get('events')} events on {tr.get('cpus')} CPUs over {tr.get('span_s')} s, "
               f"clock {tr.get('clock') or '?'} ({tr.get('clock_mapping')}), "
               f"{tr.get('overruns', 0)} overruns, sender pid {bd.sender_pid}, receiver pid {bd.receiver_pid}")
    hs = tr.get("host_steal")
    if hs:
        out.append(f"  host steal: {hs['samples']} samples of each CPU's steal time"
                   + ("" if hs.get("covers_trace") else " (not covering the whole trace)")
                   + ": silent gaps are hypervisor (steal) where it grew, else unexplained gap")
    out.extend(_vm_lines(bd))
    for w in bd.warnings:
        out.append(f"  warning: {w}")
    if not bd.late:
        out.append("")
        out.append("No late packet could be broken down." if bd.late_count else "No late packets.")
        out.extend(_baseline_lines(bd))
        return "\n".join(out) + "\n"
    out.append("")
    out.append(f"Culprits of the {len(bd.late)} late packets, by total delay")
    out.append(f"  {'#':>2}  {'culprit':<36} {'kind':<9} {'packets':>7} {'total us':>12} {'max us':>10}  where")
    for i, c in enumerate(bd.culprits[:culprits], 1):
        cpu = f"{c.where} CPU" if c.where else "CPU"
        where = ", ".join([f"{cpu} {','.join(str(x) for x in c.cpus)}"] + [T(s) for s in c.stages[:2]])
        out.append(f"  {i:>2}  {culprit_label(c.kind, c.name, c.pids)[:36]:<36} {c.kind:<9} {c.count:>7} "
                   f"{fmt(c.total_ns):>12} {fmt(c.max_ns):>10}  {where}")
        for note in c.notes[:1]:
            out.append(f"      {note}")
    if len(bd.culprits) > culprits:
        out.append(f"  ... {len(bd.culprits) - culprits} more (--json lists all)")
    out.extend(_vcpu_lines(bd))
    out.append("")
    out.append("Where the late packets lost their time (dominant stage)")
    for stage, n in bd.dominant.items():
        out.append(f"  {T(stage):<24} {n:>6} packets")
    out.extend(_baseline_lines(bd))
    out.append("")
    shown = min(top, len(bd.late))
    out.append(f"Late packets, worst first ({shown} of {len(bd.late)}; --top N for more)")
    base = {b.stage: b for b in bd.baselines}
    for p in bd.late[:top]:
        head = f"  seq {p.seq}  {fmt(p.value_ns)} us  dominant: {T(p.dominant_stage)} " \
               f"(+{fmt(p.excess_ns)} us over its median)"
        if p.collateral_of is not None:
            head += f"  collateral of seq {p.collateral_of}"
        out.append(head)
        by_stage: dict[str, list[Culprit]] = {}
        for cu in p.culprits:
            # once, under the first stage it struck in: its time is the sum over them (" across A + B")
            by_stage.setdefault(cu.stage.split(",")[0] if cu.stage else "-", []).append(cu)
        for s in p.stages:
            mark = "  <" if s.name == p.dominant_stage else "   " if s.in_metric else "  -"
            who = [c for c in by_stage.get(s.name, []) if c.kind != "vcpu"]
            tail = ""
            if who:
                tail = "  " + "; ".join(f"{culprit_label(c.kind, c.name, [c.pid] if c.pid >= 0 else [], c.where)} "
                                        f"{fmt(c.ns)}" + _across(c, T) for c in who[:3])
            median = fmt(base[s.name].median_ns) if s.name in base and s.in_metric else "-"
            cpu = ("g" if bd.model.domains[bd.model.index(s.name)] == "guest" and bd.vm else "") + \
                (str(s.cpu) if s.cpu >= 0 else "?")
            out.append(f"    +{fmt(s.ns):>11} us  {T(s.name):<22}{mark} CPU {cpu:<3}"
                       f" median {median:>9}{tail}")
            # the seed's words: "vCPU thread CPU 0/TCG runnable, preempted by QEMU IO thread IO io0 for 1.2 ms"
            for cu in by_stage.get(s.name, []):
                if cu.kind == "vcpu" or (cu.kind == "qemu" and cu.victim.startswith("vCPU thread")):
                    out.append(f"        {cu.note}")
        for cu in p.culprits:
            if cu.kind == "migration":
                out.append(f"    migration: {cu.name} (pid {cu.pid}) {cu.note}")
    return "\n".join(out) + "\n"


def _vm_lines(bd: Breakdown) -> list[str]:
    """The hypervisor's part of the header: direction, guest trace, how its clock was mapped."""
    vm = bd.vm
    if not vm:
        return []
    arrow = "guest -> host" if vm.get("direction") == "reverse" else "host -> guest"
    out = [f"  vm: {arrow} over {vm.get('variant') or '?'}, {vm.get('accel') or '?'}"
           + ("" if vm.get("accel") != "tcg" else " (emulated CPU: not a hardware figure)")]
    gt, ck = vm.get("guest_trace"), vm.get("clock")
    if gt and ck:
        how = (f"vCPU fit {ck['correction_ns'] / 1000:+.1f} us, +-{ck['uncertainty_ns'] / 1000:.1f} us "
               f"(fit {ck['fit']:.0%}; clock exchange alone +-{ck['exchange_uncertainty_ns'] / 1000:.0f} us)"
               if ck["method"] == "vcpu-fit" else
               f"clock exchange, +-{ck['exchange_uncertainty_ns'] / 1000:.0f} us")
        out.append(f"  guest trace: {gt.get('events')} events on {gt.get('cpus')} CPUs, {gt.get('overruns', 0)} "
                   f"overruns; on the host clock by {how}")
    threads = vm.get("threads") or []
    roles = [t["label"] + f" ({t['tid']})" for t in threads if t["role"] in ("vcpu", "iothread", "main")]
    if roles:
        out.append(f"  QEMU threads: {', '.join(roles)}"
                   + (f", {sum(t['role'] == 'worker' for t in threads)} worker threads"
                      if any(t["role"] == "worker" for t in threads) else ""))
    return out


def _vcpu_lines(bd: Breakdown) -> list[str]:
    rows = (bd.vm or {}).get("vcpu_preemption") or []
    if not rows:
        return []
    out = ["", "What kept the vCPU thread off its host CPU while its guest had work (late packets)"]
    for r in rows[:8]:
        out.append(f"  {r['name'][:44]:<44} {r['kind']:<8} {r['packets']:>5} packets  total {fmt(r['total_ns']):>12} us"
                   f"  max {fmt(r['max_ns']):>10} us")
    return out


def _across(c: Culprit, title: Any) -> str:
    """' across A + B' for a culprit that struck in more than one stage of the packet."""
    names = c.stage.split(",") if c.stage else []
    return f" across {' + '.join(title(n) for n in names)}" if len(names) > 1 else ""


def _baseline_lines(bd: Breakdown) -> list[str]:
    T = bd.model.title
    what = "Stage times inside latency" if bd.metric == "latency" else "Stage times"
    out = ["", f"{what} of packets that were not late (us)",
           f"  {'stage':<24} {'median':>10} {'p99':>10} {'packets':>8}"]
    for b in bd.baselines:
        if b.count and b.in_metric:
            out.append(f"  {T(b.stage):<24} {fmt(b.median_ns):>10} {fmt(b.p99_ns):>10} {b.count:>8}")
    outside = [T(b.stage) for b in bd.baselines if b.count and not b.in_metric]
    if outside:
        out.append(f"  outside {bd.metric}: {', '.join(outside)}")
    missing = [T(b.stage) for b in bd.baselines if not b.count]
    if missing:
        out.append(f"  not seen in this trace: {', '.join(missing)}")
    return out


__all__ = ["STAGES", "to_json", "to_text"]
