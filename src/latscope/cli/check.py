"""`latscope check RUN --max p99.9=150us --max loss=0`: a CI gate that exits 1 when a limit is broken."""

from __future__ import annotations

import click

from latscope.analysis.check import judge, metrics_needed, parse_limit
from latscope.analysis.runview import RunView
from latscope.cli.common import emit_json, json_option, results_option, store_from
from latscope.cli.ranges import make_range, range_options
from latscope.errors import CheckFailed, ConfigError
from latscope.report.tables import check_text
from latscope.safetext import printable


@click.command()
@click.argument("run_ref", metavar="RUN")
@click.option("--max", "maxima", multiple=True, metavar="STAT=VALUE",
              help="Upper limit, e.g. p99.9=150us, max=1ms, delta.p99=1.1ms, loss=0, loss=0.1%. Repeatable.")
@click.option("--min", "minima", multiple=True, metavar="STAT=VALUE",
              help="Lower limit, e.g. min=2us (timestamps that make latency impossibly low). Repeatable.")
@range_options
@results_option
@json_option
def check(run_ref: str, maxima: tuple[str, ...], minima: tuple[str, ...], range_from: int | None,
          range_to: int | None, skip_warmup: int | None, results: str | None, as_json: bool) -> None:
    """Check a stored run against limits; exit 1 when one is broken (for CI gates)."""
    limits = [parse_limit(t, "max") for t in maxima] + [parse_limit(t, "min") for t in minima]
    if not limits:
        raise ConfigError("no limits given: use --max STAT=VALUE (e.g. --max p99.9=150us --max loss=0)")
    rng = make_range(range_from, range_to, skip_warmup)
    run = store_from(results).resolve(run_ref)
    view = RunView.open(run, rng)
    summary, _ = view.summarise(metrics_needed(limits))
    verdicts = judge(limits, summary)
    broken = [v for v in verdicts if not v.ok]
    if as_json:
        emit_json({"run_id": run.run_id, "name": run.record.name, "passed": not broken,
                   "selection": view.selection.as_json(), "limits": [v.as_json() for v in verdicts]})
    else:
        click.echo("\n".join(check_text(printable(run.record.name) or run.run_id, run.run_id, verdicts)))
    if broken:
        raise CheckFailed(f"{len(broken)} of {len(verdicts)} limits broken: "
                          + ", ".join(v.limit.text for v in broken))
