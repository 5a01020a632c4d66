"""`latscope compare RUN_A RUN_B ...`: what differs between runs, and whether it is real."""

from __future__ import annotations

from typing import Any

import click

from latscope.analysis.compare import Comparison, RunData, Settings, compare_pair
from latscope.analysis.envdiff import differences
from latscope.analysis.runview import RunView
from latscope.cli.common import DURATION, emit_json, json_option, results_option, store_from
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
    """Compare runs with the first one (A): table, differences, intervals, verdicts, environment differences."""
    if len(run_refs) < 2:
        raise ConfigError("compare needs at least two runs")
    rng = make_range(range_from, range_to, skip_warmup)
    store = store_from(results)
    views = [RunView.open(store.resolve(ref), rng) for ref in run_refs]
    settings = Settings(alpha=alpha, resamples=resamples, min_effect_ns=float(min_effect_ns), seed=seed)
    data = [_data(v) for v in views]
    comparisons = [compare_pair(data[0], d, settings) for d in data[1:]]
    envdiff = differences([{"config": v.run.record.config, "environment": v.run.record.environment}
                           for v in views])
    runs = [_run_doc(v, d) for v, d in zip(views, data)]
    if as_json:
        emit_json({
            "baseline": views[0].run.run_id,
            "runs": runs,
            "comparisons": [_comparison_doc(c, views[0], v) for c, v in zip(comparisons, views[1:])],
            "environment_differences": [d.as_json() for d in envdiff],
            "settings": {"alpha": alpha, "bootstrap": resamples, "min_effect_us": min_effect_ns / 1000,
                         "seed": seed},
        })
        return
    click.echo("\n".join(compare_text(runs, comparisons, envdiff, settings)))


def _data(view: RunView) -> RunData:
    _, kept = view.summarise(("latency",), keep=("latency", "lost"), percentiles={"latency": {"p50": 50.0}})
    return view.compare_data(kept["latency"], kept["lost"])


def _run_doc(view: RunView, data: RunData) -> dict[str, Any]:
    rec = view.run.record
    n = len(data.latency_ns)
    received = int(len(data.received))
    return {"run_id": rec.run_id, "name": rec.name, "label": view.label, "packets": n, "received": received,
            "lost": n - received, "selection": view.selection.as_json()}


def _comparison_doc(c: Comparison, a: RunView, b: RunView) -> dict[str, Any]:
    doc = c.as_json()
    doc["a"], doc["b"] = a.run.run_id, b.run.run_id
    return doc
