"""`latscope compare RUN_A RUN_B ...`: what differs between runs, and whether it is real.

An argument may name several runs of one configuration separated by commas
(`compare a1,a2,a3 b1,b2,b3`): the group is then resampled run by run, so
the verdict accounts for how much whole runs differ, which one run per
configuration cannot show.
"""

from __future__ import annotations

from typing import Any

import click

from latscope.analysis.compare import Comparison, RunData, Settings, compare_pair
from latscope.analysis.envdiff import differences, metric_mismatch, setup_document
from latscope.analysis.runview import RunView
from latscope.cli.common import DURATION, emit_json, json_option, results_option, store_from, warn
from latscope.cli.ranges import make_range, range_options
from latscope.errors import ConfigError
from latscope.report.tables import compare_text


@click.command()
@click.argument("run_refs", metavar="RUN_A RUN_B [RUN...]", nargs=-1, required=True)
@range_options
@click.option("--alpha", type=click.FloatRange(0.0001, 0.5), default=0.05, show_default=True,
              help="Significance level; intervals are (1 - alpha).")
@click.option("--bootstrap", "resamples", type=click.IntRange(100, 100_000), default=1000, show_default=True,
              help="Block-bootstrap resamples per run.")
@click.option("--min-effect", "min_effect_ns", type=DURATION, default="1us", show_default=True, metavar="DURATION",
              help="Smallest latency difference that counts as a difference (e.g. 500ns, 2us).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the resampling (same seed, same output).")
@results_option
@json_option
def compare(run_refs: tuple[str, ...], range_from: int | None, range_to: int | None, skip_warmup: int | None,
            alpha: float, resamples: int, min_effect_ns: int, seed: int, results: str | None,
            as_json: bool) -> None:
    """Compare runs with the first (A): table, differences, intervals, verdicts, environment differences.

    RUN may be several runs of one configuration joined by commas (a1,a2,a3).
    """
    if len(run_refs) < 2:
        raise ConfigError("compare needs at least two runs (or groups of runs)")
    rng = make_range(range_from, range_to, skip_warmup)
    store = store_from(results)
    groups = []
    for ref in run_refs:
        parts = [p for p in ref.split(",") if p]
        if not parts:
            raise ConfigError(f"empty run reference {ref!r}")
        groups.append([RunView.open(store.resolve(p), rng) for p in parts])
    settings = Settings(alpha=alpha, resamples=resamples, min_effect_ns=float(min_effect_ns), seed=seed)
    data = [_data(g) for g in groups]
    comparisons = [compare_pair(data[0], d, settings) for d in data[1:]]
    views = [v for g in groups for v in g]
    envdiff = differences([setup_document(v.run.record) for v in views])
    mismatch = metric_mismatch([v.run.record for v in views])
    if mismatch:
        warn(mismatch)
    runs = [_group_doc(g, d) for g, d in zip(groups, data, strict=True)]
    if as_json:
        emit_json({
            "baseline": runs[0]["run_ids"][0] if len(groups[0]) == 1 else runs[0]["run_ids"],
            "runs": runs,
            "comparisons": [_comparison_doc(c, groups[0], g) for c, g in zip(comparisons, groups[1:], strict=True)],
            "environment_runs": [v.run.run_id for v in views],
            "environment_differences": [d.as_json() for d in envdiff],
            "settings": {"alpha": alpha, "bootstrap": resamples, "min_effect_us": min_effect_ns / 1000,
                         "seed": seed},
        })
        return
    click.echo("\n".join(compare_text(runs, comparisons, envdiff, settings)))


def _data(group: list[RunView]) -> RunData:
    series = []
    for view in group:
        _, kept = view.summarise(("latency",), keep=("latency", "lost"), percentiles={"latency": {"p50": 50.0}})
        series.append(view.compare_data(kept["latency"], kept["lost"]).latency_ns)
    label = group[0].label if len(group) == 1 else f"{group[0].label} (+{len(group) - 1} runs)"
    return RunData.group(label, series)


def _group_doc(group: list[RunView], data: RunData) -> dict[str, Any]:
    first = group[0].run.record
    n = len(data.latency_ns)
    received = len(data.received)
    return {"run_id": first.run_id, "name": first.name, "label": data.label,
            "run_ids": [v.run.run_id for v in group], "packets": n, "received": received, "lost": n - received,
            "selection": group[0].selection.as_json()}


def _comparison_doc(c: Comparison, a: list[RunView], b: list[RunView]) -> dict[str, Any]:
    doc = c.as_json()
    doc["a"] = a[0].run.run_id if len(a) == 1 else [v.run.run_id for v in a]
    doc["b"] = b[0].run.run_id if len(b) == 1 else [v.run.run_id for v in b]
    return doc
