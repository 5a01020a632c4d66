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
from latscope.store.layout import StoredRun
from latscope.report.text import context_lines
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
            breakdown_summary(view.run), view.selection.as_json()))
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
        generated=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        runs=sections, comparisons=comparisons,
        tail=Figure("tail-ccdf", "Latency tail (CCDF, log scale)", figures.svg(tail_fig)),
        inter_arrival=Figure("inter-arrival", "Inter-arrival time (delta)", figures.svg(delta_fig)),
        environment=envdiff, settings=settings, pngs=pngs)


def breakdown_summary(run: StoredRun) -> dict[str, Any] | None:
    """The trace breakdown of a run; None when the run has no trace.

    The breakdown is latscope.trace's work, computed now with the trace
    module's defaults (as `latscope breakdown RUN --json` would). Whatever
    fails there becomes a note in the report, not a failed report.
    """
    if not (run.path / "trace").is_dir():
        return None
    doc = _compute_breakdown(run)
    culprits = [c for c in doc.get("culprits") or [] if isinstance(c, dict)][:15]
    late = [p for p in doc.get("late_packets") or [] if isinstance(p, dict)]
    scalars = {k: v for k, v in doc.items()
               if isinstance(v, (str, int, float, bool)) and k not in ("note", "format", "schema_version", "run_id")}
    dominant = doc.get("dominant_stages") if isinstance(doc.get("dominant_stages"), dict) else {}
    return {
        "culprits": culprits,
        "culprit_keys": _keys(culprits, ("comm", "kind", "count", "total_us", "max_us")),
        "late_count": len(late),
        "late": [{"seq": p.get("seq"), "latency_us": p.get("latency_us"), "stage": p.get("dominant_stage")}
                 for p in late[:10]],
        "dominant": dominant,
        "scalars": scalars,
        "note": doc.get("note"),
    }


def _compute_breakdown(run: StoredRun) -> dict[str, Any]:
    try:
        from latscope.trace.breakdown import Options, analyse, load_run_steal, load_run_table
        from latscope.trace.report import to_json
    except ImportError as exc:
        return {"note": f"a kernel trace was recorded, but the breakdown is not available here ({exc})"}
    try:
        overruns = run.record.completeness.get("trace_overruns")
        if run.record.extra.get("vm"):
            # through a QEMU guest: the host's and the guest's traces on one path
            from latscope.trace.vmbreakdown import analyse_vm_run

            bd = analyse_vm_run(run.path, run.record.extra, run.samples(), Options(), run_id=run.run_id,
                                overruns=overruns)
        else:
            bd = analyse(load_run_table(run.path), run.samples(), Options(), run_id=run.run_id, overruns=overruns,
                         steal=load_run_steal(run.path))
    except LatscopeError as exc:
        return {"note": f"a kernel trace was recorded but could not be broken down: {exc}"}
    doc = to_json(bd)
    doc["note"] = "computed for this report with `latscope breakdown`'s defaults (late: above the run's p99 of e2e)"
    return doc


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


def _keys(rows: list[dict[str, Any]], first: tuple[str, ...]) -> list[str]:
    seen = [k for k in first if any(k in r for r in rows)]
    for r in rows:
        seen += [k for k, v in r.items() if k not in seen and isinstance(v, (str, int, float, bool))]
    return seen[:8]


def _slug(text: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_" else "-" for c in text)
    return keep.strip("-")[:40] or "run"
