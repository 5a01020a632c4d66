"""The HTML report: one self-contained file, figures inline, nothing loaded from anywhere.

``build`` does the analysis and draws the figures (returning plain data);
``render`` fills the Jinja2 template. The page carries a Content-Security-Policy
that forbids every network fetch, so a report opened years later, offline or
behind a proxy, looks exactly as it did when written.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from latscope import __version__
from latscope.analysis.anomalies import Anomaly, find_anomalies
from latscope.analysis.compare import Comparison, Settings, compare_pair, quantile_shift
from latscope.analysis.envdiff import Difference, differences, flatten, setup_document
from latscope.analysis.runview import RunView
from latscope.errors import LatscopeError, StoreError
from latscope.files import atomic_output, write_atomic
from latscope.report import figures
from latscope.report.tables import group_anomalies
from latscope.report.text import context_lines
from latscope.store.layout import StoredRun
from latscope.store.samples import MISSING

#: Environment facts shown for every run (dotted keys of the flattened environment).
FACTS = (
    ("kernel", "environment.before.kernel.release"),
    ("preemption", "environment.before.kernel.preempt_model"),
    ("CPU", "environment.before.cpu.model"),
    ("CPUs", "environment.before.cpu.count"),
    ("isolated CPUs", "environment.before.cpu.isolated"),
    ("clocksource", "environment.before.cpu.clocksource"),
    ("topology", "config.topology"),
    ("period (ns)", "config.period_ns"),
    ("source", "source.kind"),
)
#: Summary columns: (label, metric key, statistic).
SUMMARY_COLUMNS = (("min", "min"), ("avg", "avg"), ("p50", "p50"), ("p99", "p99"), ("p99.9", "p999"),
                   ("p99.99", "p9999"), ("max", "max"), ("stddev", "stddev"))


@dataclass(frozen=True)
class Figure:
    """One figure: inline SVG for the page, and a file name for --png."""

    name: str
    title: str
    svg: str


@dataclass(frozen=True)
class RunSection:
    label: str
    run_id: str
    summary: dict[str, Any]
    facts: list[tuple[str, str]]
    anomalies: list[Anomaly]
    anomaly_entries: list[tuple[str, str, str]]  # (kind, when, text), frequent kinds summarised
    worst: list[dict[str, Any]]
    figure: Figure
    breakdown: dict[str, Any] | None
    selection: dict[str, Any]


@dataclass(frozen=True)
class ReportData:
    title: str
    generated: str
    runs: list[RunSection]
    comparisons: list[tuple[Comparison, Figure]]
    tail: Figure
    inter_arrival: Figure
    environment: list[Difference]
    settings: Settings
    pngs: list[tuple[str, Any]] = field(default_factory=list)  # (file name, matplotlib figure)


def build(views: list[RunView], settings: Settings = Settings(), title: str = "latscope report",
          keep_png: bool = False) -> ReportData:
    """Analyse every run, compare each with the first, and draw the figures."""
    sections: list[RunSection] = []
    tails: list[tuple[str, np.ndarray]] = []
    deltas: list[tuple[str, np.ndarray, np.ndarray, float | None]] = []
    data = []
    pngs: list[tuple[str, Any]] = []
    for i, view in enumerate(views):
        summary, kept = view.summarise(("latency", "delta", "wakeup_latency", "arrival_latency"),
                                       keep=("latency", "delta", "lost"))
        latency, lost = kept["latency"], kept["lost"]
        seq = view.seq()
        anomalies = find_anomalies(view.series(latency, lost, seq))
        worst = view.worst(latency, 10, seq)
        del seq
        t_s = np.where(view.offsets_ns != MISSING, view.offsets_ns / 1e9, np.nan)
        name = f"run{i + 1}-{_slug(view.label)}"
        fig = figures.series_with_histogram(t_s, latency / 1000.0, view.label)
        sections.append(RunSection(
            view.label, view.run.run_id, summary, _facts(view), anomalies, group_anomalies(anomalies), worst,
            Figure(f"{name}-latency", f"{view.label}: latency over time and its histogram", figures.svg(fig)),
            breakdown_summary(view.run, name, pngs if keep_png else None), view.selection.as_json()))
        if keep_png:
            pngs.append((f"{name}-latency.png", fig))
        tails.append((view.label, latency / 1000.0))
        period = view.period_ns
        deltas.append((view.label, t_s, kept["delta"] / 1000.0, period / 1000.0 if period else None))
        data.append(view.compare_data(latency, lost))
    comparisons = []
    for i, b in enumerate(data[1:], start=2):
        shift = quantile_shift(data[0], b, settings)
        fig = figures.quantile_shift(data[0].label, b.label, shift.levels, shift.difference / 1000.0,
                                     shift.low / 1000.0, shift.high / 1000.0)
        name = f"shift-run{i}-vs-run1"
        comparisons.append((compare_pair(data[0], b, settings),
                            Figure(name, f"Quantile shift: {b.label} against {data[0].label}", figures.svg(fig))))
        if keep_png:
            pngs.append((f"{name}.png", fig))
    tail_fig = figures.ccdf(tails)
    delta_fig = figures.inter_arrival(deltas)
    if keep_png:
        pngs += [("tail-ccdf.png", tail_fig), ("inter-arrival.png", delta_fig)]
    envdiff = differences([setup_document(v.run.record) for v in views]) if len(views) > 1 else []
    return ReportData(
        title=title,
        generated=_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        runs=sections, comparisons=comparisons,
        tail=Figure("tail-ccdf", "Latency tail (CCDF, log scale)", figures.svg(tail_fig)),
        inter_arrival=Figure("inter-arrival", "Inter-arrival time (delta)", figures.svg(delta_fig)),
        environment=envdiff, settings=settings, pngs=pngs)


def breakdown_summary(run: StoredRun, name: str = "run", pngs: list[tuple[str, Any]] | None = None
                      ) -> dict[str, Any] | None:
    """The trace breakdown of a run as the report shows it; None when the run has no trace.

    The breakdown is latscope.trace's work, computed now with the trace
    module's defaults (as `latscope breakdown RUN` would). Whatever fails
    there becomes a note in the report, not a failed report. Figures: each
    late packet's stages over their medians (the 50 worst), the culprits by
    total delay, and who ran on each CPU around the worst packet; ``pngs``
    (for --png) receives them under ``name``-breakdown-*.png.
    """
    if not (run.path / "trace").is_dir():
        return None
    bd, note = _compute_breakdown(run)
    if bd is None:
        return {"note": note, "sentence": "", "figures": [], "culprits": [], "dominant": {}, "warnings": []}
    from latscope.trace.report import culprit_label, to_json

    doc = to_json(bd)
    figs: list[Figure] = []
    drawn = breakdown_figures(bd)
    for key, title, fig in drawn:
        figs.append(Figure(f"{name}-breakdown-{key}", title, figures.svg(fig)))
        if pngs is not None:
            pngs.append((f"{name}-breakdown-{key}.png", fig))
    culprits = [{"label": culprit_label(c["kind"], c["comm"], c["pids"], c["where"] or ""), "kind": c["kind"],
                 "count": c["count"], "total_us": c["total_us"], "max_us": c["max_us"],
                 "note": (c["notes"] or [""])[0]} for c in doc["culprits"][:15]]
    return {"note": note, "sentence": breakdown_sentence(bd), "figures": figs, "culprits": culprits,
            "dominant": {bd.model.title(k): v for k, v in bd.dominant.items()}, "warnings": list(bd.warnings)}


def breakdown_sentence(bd: Any) -> str:
    """The breakdown's parameters in words: metric, threshold and where it came from, what was broken down."""
    from latscope.trace.report import METRIC_WORDS

    metric = METRIC_WORDS.get(bd.metric, bd.metric)
    if bd.threshold_ns == float("inf"):
        thr = "no threshold could be set (no packet has the metric)"
    else:
        src = {"p99": "the run's 99th percentile of that metric (the default)",
               "--threshold": "set with --threshold"}.get(bd.threshold_source, bd.threshold_source)
        thr = f"above {bd.threshold_ns / 1000:.3f} µs, {src}"
    pct = 100.0 * bd.late_count / bd.packets if bd.packets else 0.0
    tr = bd.trace
    text = (f"A packet is late when its {metric} is {thr}: {bd.late_count} of {bd.packets} packets "
            f"({pct:.2f} %) are late, {len(bd.late)} broken down"
            + (f" ({bd.collateral} of them collateral: delivered in the same wakeup as a late one)"
               if bd.collateral else "")
            + f". The kernel trace has {tr.get('events')} events on {tr.get('cpus')} CPUs over {tr.get('span_s')} s"
            + f" with {tr.get('overruns', 0)} overruns")
    hs = tr.get("host_steal")
    text += (f"; the run's host steal series ({hs['samples']} samples) names silent gaps hypervisor (steal) or "
             "unexplained gap." if hs else "; without a host steal series, silent gaps stay unnamed.")
    return text


def breakdown_figures(bd: Any, top: int = 50) -> list[tuple[str, str, Any]]:
    """(key, title, figure) of the breakdown figures drawn from ``bd``'s own numbers."""
    from latscope.trace.report import culprit_label

    out: list[tuple[str, str, Any]] = []
    if bd.late:
        stages = [b.stage for b in bd.baselines]
        rows = []
        for p in bd.late[:top]:
            ex = {s.name: s.excess_ns / 1000.0 for s in p.stages}
            rows.append((str(p.seq), [ex.get(st, 0.0) for st in stages]))
        out.append(("stages", f"The {len(rows)} worst late packets: each stage's time over its median",
                    figures.stage_excess(rows, stages, [bd.model.title(st) for st in stages])))
    if bd.culprits:
        ranked = [(culprit_label(c.kind, c.name, c.pids, c.where)[:48], c.total_ns / 1000.0, c.count)
                  for c in bd.culprits[:15]]
        out.append(("culprits", "Culprits by total delay over the late packets (with the number of packets)",
                    figures.culprit_bars(ranked)))
    worst = worst_packet_timeline(bd)
    if worst is not None:
        out.append(("timeline", f"Who ran on each CPU around the worst packet (seq {bd.late[0].seq})", worst))
    return out


def worst_packet_timeline(bd: Any, margin_ns: int = 50_000) -> Any:
    """The per-CPU timeline of the worst late packet: tasks, silent stretches and the packet's checkpoints."""
    from latscope.trace.attribution import GAP_MIN_NS
    from latscope.trace.model import silent_gaps

    tl, pk = bd.timeline, bd.packets_detail
    if not bd.late or tl is None or pk is None:
        return None
    worst = bd.late[0]
    hit = np.flatnonzero(pk.seq == worst.seq)
    if not len(hit):
        return None
    times = pk.times[int(hit[0])]
    seen = times[times != MISSING]
    if not len(seen):
        return None
    a, b = int(seen.min()) - margin_ns, int(seen.max()) + margin_ns
    rows = []
    for cpu in range(tl.ncpu):
        seg = tl.segments.on(cpu)
        tasks = []
        for k in range(seg.start, seg.stop):
            s, e = max(int(tl.segments.start[k]), a), min(int(tl.segments.end[k]), b)
            pid = int(tl.segments.pid[k])
            if e > s and pid != 0:
                tasks.append(((s - a) / 1000.0, (e - a) / 1000.0, f"{tl.comm_of(int(tl.segments.comm[k]))} {pid}"))
        silent = [((s - a) / 1000.0, (e - a) / 1000.0) for s, e in silent_gaps(tl, cpu, a, b, GAP_MIN_NS)]
        rows.append(figures.CpuRow(f"CPU {cpu}", tasks, silent))
    names = bd.model.names
    stages = []
    last = int(times[0]) if times[0] != MISSING else None
    for k in range(1, len(times)):
        if times[k] == MISSING or last is None:
            continue
        stages.append(((last - a) / 1000.0, (int(times[k]) - a) / 1000.0, bd.model.title(names[k - 1])))
        last = int(times[k])
    return figures.cpu_timeline(rows, f"seq {worst.seq}", stages, [bd.model.title(b.stage) for b in bd.baselines])


def _compute_breakdown(run: StoredRun) -> tuple[Any, str]:
    """(the Breakdown or None, a note on how it was computed or why it could not be)."""
    try:
        from latscope.trace.breakdown import Options, analyse_run, load_run_steal, round_trip
    except ImportError as exc:
        return None, f"a kernel trace was recorded, but the breakdown is not available here ({exc})"
    if why := round_trip(run.record.config):
        return None, f"a kernel trace was recorded, but this run is {why}"
    try:
        overruns = run.record.completeness.get("trace_overruns")
        if run.record.extra.get("vm"):
            # through a QEMU guest: the host's and the guest's traces on one path
            from latscope.trace.vmbreakdown import analyse_vm_run

            bd = analyse_vm_run(run.path, run.record.extra, run.samples(), Options(), run_id=run.run_id,
                                overruns=overruns)
        else:
            # as `latscope breakdown` does: only the rows around the late packets of a long trace
            bd = analyse_run(run.path, run.record.extra.get("trace"), run.samples(), Options(), run_id=run.run_id,
                             overruns=overruns, steal=load_run_steal(run.path))
    except LatscopeError as exc:
        return None, f"a kernel trace was recorded but could not be broken down: {exc}"
    return bd, ("computed for this report as latscope breakdown does by default: judged on e2e (scheduled send to "
                "the receiver in user space), so its late packets need not be the worst latencies above")


def render(data: ReportData) -> str:
    """The HTML text of the report."""
    return render_page("report.html.j2", data=data, summary_columns=SUMMARY_COLUMNS)


def render_page(template: str, **context: Any) -> str:
    """A page from one of latscope's templates (report, campaign), with its filters and version."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("latscope.report", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )
    env.filters["us"] = lambda v: "-" if v is None else f"{v:.3f}"
    env.filters["signed"] = lambda v: "-" if v is None else f"{v:+.3f}"
    return env.get_template(template).render(version=__version__, **context)


def write(text: str, path: Path) -> None:
    """Write the report atomically: a reader never sees half a file."""
    write_atomic(path, text)


def write_pngs(pngs: list[tuple[str, Any]], directory: Path) -> list[Path]:
    """Every figure as a PNG file in ``directory`` (created if needed)."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot write figures into {directory}: {exc.strerror}") from None
    out = []
    for name, fig in pngs:
        # Each PNG is replaced atomically like the page (and never renamed over a device or a link).
        with atomic_output(directory / name) as fh:
            figures.save_png(fig, fh)
        out.append(directory / name)
    return out


def _facts(view: RunView) -> list[tuple[str, str]]:
    rec = view.run.record
    flat = flatten({"config": rec.config, "environment": rec.environment, "source": rec.source})
    facts = [(label, str(flat[key])) for label, key in FACTS if flat.get(key) not in (None, "")]
    # A VM run's numbers come with caveats a reader of the report must see next to them.
    facts += [(line.split(":", 1)[0].strip(), line.split(":", 1)[1].strip()) for line in context_lines(rec)]
    return facts


def _slug(text: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_" else "-" for c in text)
    return keep.strip("-")[:40] or "run"
