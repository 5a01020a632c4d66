"""`latscope show RUN`: the summary recomputed from the stored samples, plus the analysis around it."""

from __future__ import annotations

import click

from latscope.analysis import metrics
from latscope.analysis.anomalies import find_anomalies
from latscope.analysis.histogram import histogram, parse_bins, render_text
from latscope.analysis.runview import RunView
from latscope.analysis.summary import WORST_COUNT
from latscope.analysis.window import window_series
from latscope.cli.common import DURATION, emit_json, json_option, results_option, store_from
from latscope.cli.ranges import make_range, range_options
from latscope.report.document import run_document
from latscope.report.tables import anomalies_text, windows_text, worst_text
from latscope.report.text import context_lines, summary_text
from latscope.safetext import printable

#: What the text summary prints; --json adds the other metrics of the summary.
TEXT_METRICS = ("latency", "delta", "wakeup_latency", "arrival_latency")
#: ... and the percentiles it prints of each (the rest would cost a partition of every array).
TEXT_PERCENTILES = {"delta": {"p99": 99.0}, "wakeup_latency": {"p99": 99.0}, "arrival_latency": {"p99": 99.0}}


@click.command()
@click.argument("run_ref", metavar="RUN")
@range_options
@click.option("--worst", "worst", type=click.IntRange(0, 100_000), default=None, metavar="N",
              help=f"List the N worst packets with seq and time (default: the {WORST_COUNT} worst on one line).")
@click.option("--histogram", "want_histogram", is_flag=True, help="Print a histogram (log-scaled bars).")
@click.option("--bins", "bins", default=None, metavar="SPEC",
              help="Histogram bins: auto (default), a count such as 40, or a width such as 2us.")
@click.option("--window", "window_ns", type=DURATION, default=None, is_flag=False, flag_value="1s",
              metavar="[DURATION]", help="Print p50/p99/max per window of DURATION (default 1s; e.g. 10s).")
@click.option("--metric", "metric", type=click.Choice(list(metrics.METRICS)), default="latency",
              show_default=True, help="Metric of the histogram, the windows and the worst list.")
@click.option("--no-anomalies", "no_anomalies", is_flag=True, help="Skip the anomaly detectors.")
@results_option
@json_option
def show(run_ref: str, range_from: int | None, range_to: int | None, skip_warmup: int | None,
         worst: int | None, want_histogram: bool, bins: str | None, window_ns: int | None, metric: str,
         no_anomalies: bool, results: str | None, as_json: bool) -> None:
    """Summarise a stored run (id, unique id prefix, name, 'latest' or a run directory)."""
    rng = make_range(range_from, range_to, skip_warmup)
    bin_spec = parse_bins(bins) if (bins is not None or want_histogram) else None
    run = store_from(results).resolve(run_ref)
    view = RunView.open(run, rng)
    n_worst = WORST_COUNT if worst is None else worst
    summary, kept = view.summarise(None if as_json else TEXT_METRICS, keep=(metric, "latency", "lost"),
                                   percentiles=None if as_json else TEXT_PERCENTILES)
    values = kept.get(metric)
    if values is None:
        values = view.metric(metric)
    seq = view.seq()
    worst_rows = view.worst(values, n_worst, seq)
    # The summary's own worst list, timed from the start of the run rather than of the range.
    latency_worst = worst_rows if metric == "latency" else view.worst(kept["latency"], n_worst, seq)
    summary["worst"] = [{"seq": r["seq"], "latency_us": r["value_us"], "at_s": r["at_s"]} for r in latency_worst]
    anomalies = [] if no_anomalies else find_anomalies(view.series(kept["latency"], kept["lost"], seq))
    del seq
    hist = histogram(values, bin_spec) if bin_spec is not None else None
    series = None
    if window_ns is not None:
        series = window_series(view.offsets_ns, values, window_ns, kept["lost"], view.selection.start_ns)
    for key in ("clock", "vm", "clock_check", "host_steal"):
        # Facts of the capture, not of the samples: recomputing cannot give them back.
        if key in run.record.summary:
            summary[key] = run.record.summary[key]
    if as_json:
        doc = run_document(run, summary)
        doc["selection"] = view.selection.as_json()
        doc["worst_by_metric"] = {"metric": metric, "packets": worst_rows}
        if not no_anomalies:
            doc["anomalies"] = [a.as_json() for a in anomalies]
        if hist is not None:
            doc["histogram"] = {"metric": metric, **hist.as_json()}
        if series is not None:
            doc["windows"] = {"metric": metric, **series.as_json()}
        emit_json(doc)
        return
    header = run.record.name and f"{printable(run.record.name)} ({run.run_id})"
    if header:
        click.echo(header)
    # Stored text (status, the VM's description) is escaped: the store may hold anything.
    lines = summary_text(summary, run.run_id, printable(run.record.status),
                         [printable(c) for c in context_lines(run.record)], deep=True).split("\n")
    if not rng.is_everything:
        sel = view.selection
        end = "the end" if sel.stop_ns is None else f"{sel.stop_ns / 1e9:.3f} s"
        lines.append(f"  range: {sel.start_ns / 1e9:.3f} s to {end} of a {sel.span_ns / 1e9:.3f} s run "
                     f"({sel.count} packets)")
    out = lines
    if worst is not None:
        out += worst_text(worst_rows, metric)
    if hist is not None:
        out += [f"{metric} histogram:"] + render_text(hist)
    if series is not None:
        out += windows_text(series, metric)
    if not no_anomalies:
        out += anomalies_text(anomalies)
    click.echo("\n".join(out))

