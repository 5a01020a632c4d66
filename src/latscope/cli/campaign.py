"""`latscope campaign plan|run|status|report FILE`: an experiment of many runs, from one TOML file.

The file names the factors and their levels (each a set of `latscope run`
options), the repeats and the order; see docs/campaign.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from latscope.cli.common import (
    emit_json,
    json_option,
    results_option,
    store_from,
    warn,
)
from latscope.cli.ranges import make_range, range_options
from latscope.errors import ConfigError
from latscope.experiment.campaign import (
    Campaign,
    describe_cells,
    expected_seconds,
    load,
)
from latscope.safetext import printable

FILE = click.argument("file", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path))


def trial_options(f: Any) -> Any:
    """--set and --repeats: the same campaign at other base options (a quick trial at a small count)."""
    f = click.option("--repeats", type=click.IntRange(1, 1000), default=None,
                     help="Repeats instead of the file's (part of the plan).")(f)
    f = click.option("--set", "sets", multiple=True, metavar="OPTION=VALUE",
                     help="Override a [base] option, e.g. --set count=500 (repeatable; part of the plan).")(f)
    return f


def loaded(file: Path, sets: tuple[str, ...], repeats: int | None) -> Campaign:
    from latscope.experiment.campaign import parse_sets

    return load(file, parse_sets(sets), repeats)


def checked(path: Path, sets: tuple[str, ...] = (), repeats: int | None = None) -> Campaign:
    """The campaign file, read, and every cell's options checked as `latscope run` would check them."""
    from latscope.cli.run import RunArgs, prepare
    from latscope.cli.run import run as run_cmd

    campaign = loaded(path, sets, repeats)
    for cell in campaign.cells:
        args = _cell_argv(cell.options)
        where = _where(campaign, cell)
        try:
            with run_cmd.make_context("run", args, resilient_parsing=False) as ctx:
                params = dict(ctx.params)
        except click.exceptions.Exit:
            raise ConfigError(f"{where}: an option there asks `run` for help, not a run") from None
        except click.ClickException as exc:
            message = exc.format_message().splitlines()[0]
            raise ConfigError(f"{where}: {printable(message)}") from None
        try:
            prepare(RunArgs(**params))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        except Exception as exc:  # PrivilegeError and kin: the level cannot run here
            from latscope.errors import LatscopeError

            if isinstance(exc, LatscopeError):
                raise type(exc)(f"{where}: {exc}") from None
            raise
    return campaign


def _cell_argv(options: dict[str, Any]) -> list[str]:
    from latscope.experiment.campaign import argv

    return argv(options)


def _where(campaign: Campaign, cell: Any) -> str:
    """file:line of the level that made a cell impossible (the first level that sets an option; else [base])."""
    line = campaign.line_of("base")
    for factor, level in cell.levels:
        opts = [k for k in cell.options if campaign.lines.get(f"factors.{factor}.{level}.{k}")
                or campaign.lines.get(f"factors.{factor}.{level}.{k.replace('-', '_')}")]
        if opts:
            line = campaign.line_of("factors", factor, level)
    return f"{campaign.path}:{line}: cell {cell.name}"


@click.group()
def campaign() -> None:
    """Plan, run, follow and report an experiment: runs under several configurations, repeated."""


@campaign.command()
@FILE
@trial_options
@results_option
@json_option
def plan(file: Path, sets: tuple[str, ...], repeats: int | None, results: str | None, as_json: bool) -> None:
    """The runs the campaign will make, in order, and how long that takes."""
    from latscope.experiment.runner import done_runs

    c = checked(file, sets, repeats)
    runs = c.plan()
    made = done_runs(c, store_from(results))
    total = sum(expected_seconds(r.cell.options) for r in runs if r.key not in made)
    if as_json:
        emit_json({"campaign": c.name,
                   "plan": c.fingerprint, "repeats": c.repeats, "order": c.order, "seed": c.seed,
                   "factors": {f: list(levels) for f, levels in c.factors}, "baseline": c.baseline,
                   "cells": describe_cells(c), "expected_s": round(total, 1),
                   "runs": [{"index": r.index, "cell": r.cell.name, "repeat": r.repeat,
                             "name": c.run_name(r), "tags": c.run_tags(r), "made": made.get(r.key)}
                            for r in runs]}, verb="campaign plan")
        return
    click.echo(f"campaign {c.name} (plan {c.fingerprint}): {len(c.factors)} factors, {len(c.cells)} cells, "
               f"{c.repeats} repeats, {len(runs)} runs, {c.order} order")
    for f, levels in c.factors:
        click.echo(f"  factor {f}: " + ", ".join(lv + (" (baseline)" if c.baseline[f] == lv else "")
                                                  for lv in levels))
    click.echo("cells:")
    for doc in describe_cells(c):
        click.echo(f"  {doc['cell']}: latscope run {' '.join(doc['argv'])}")
    click.echo("order:")
    for r in runs:
        done = f"  (made: {made[r.key]})" if r.key in made else ""
        click.echo(f"  {r.index + 1:>4}  {r.cell.name}  repeat {r.repeat + 1}{done}")
    from latscope.experiment.runner import eta

    click.echo(f"expected duration: about {eta(total)} (streams plus set-up; the runner refines it as it goes)")


@campaign.command(name="run")
@FILE
@trial_options
@click.option("--retry-failed", is_flag=True, help="Try the runs that failed (twice) before, once more.")
@click.option("--max-runs", type=click.IntRange(1), default=None,
              help="Make at most this many runs now, then stop (run again to go on).")
@results_option
@click.pass_context
def run_(ctx: click.Context, file: Path, sets: tuple[str, ...], repeats: int | None, retry_failed: bool,
         max_runs: int | None, results: str | None) -> None:
    """Make the campaign's runs that are not made yet (Ctrl-C, then run again: it resumes)."""
    from latscope.experiment.runner import Runner, done_runs
    from latscope.stopping import Stopped, raise_on_signals

    c = checked(file, sets, repeats)
    store = store_from(results)
    raise_on_signals()

    def notify(text: str) -> None:
        click.echo(f"latscope: campaign {c.name}: {text}", err=True)  # echo flushes: progress shows in logs too

    try:
        state = Runner(c, store, notify, retry_failed, max_runs).run()
    except Stopped as exc:
        # The runner's own line: main's generic "stopped before the measurement started; nothing was
        # stored" would be wrong here (runs were made, and the one in progress keeps what it measured).
        made = len(done_runs(c, store))
        click.echo(f"latscope: campaign {c.name} stopped by {exc.name}: {made} of {len(c.plan())} runs made; "
                   f"run the same `campaign run` again to go on", err=True)
        ctx.exit(1)
    counts = state.counts()
    click.echo(f"campaign {c.name}: {counts['done']} of {len(c.plan())} runs made, {counts['failed']} failed"
               f" (state: {state.path})")
    if counts["failed"]:
        warn("failed runs: see `latscope campaign status`; `campaign run --retry-failed` tries them again")
        ctx.exit(1)


@campaign.command()
@FILE
@trial_options
@results_option
@json_option
def status(file: Path, sets: tuple[str, ...], repeats: int | None, results: str | None, as_json: bool) -> None:
    """Done / to do / failed, per cell."""
    from latscope.experiment.runner import status as campaign_status

    c = loaded(file, sets, repeats)
    doc = campaign_status(c, store_from(results))
    if as_json:
        emit_json(doc, verb="campaign status")
        return
    click.echo(f"campaign {c.name} (plan {c.fingerprint}): {doc['done']} done, {doc['to_do']} to do, "
               f"{doc['failed']} failed of {doc['runs']} runs")
    for cell in doc["cells"]:
        extra = f", {cell['interrupted_attempts']} interrupted attempts" if cell["interrupted_attempts"] else ""
        click.echo(f"  {cell['cell']}: {cell['done']} done, {cell['to_do']} to do, {cell['failed']} failed{extra}")
        for err in cell["errors"]:
            click.echo(f"    error: {err}")


@campaign.command()
@FILE
@trial_options
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The HTML file to write [default: FILE with .html for its suffix, next to it].")
@click.option("--png", "png_dir", type=click.Path(file_okay=False, path_type=Path), default=None, metavar="DIR",
              help="Also write every figure as a PNG file into DIR.")
@click.option("--title", default=None, help="Title of the report [default: the campaign's name].")
@click.option("--bootstrap", "resamples", type=click.IntRange(100, 100_000), default=1000, show_default=True,
              help="Bootstrap resamples per comparison.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the resampling.")
@range_options
@results_option
@json_option
def report(file: Path, sets: tuple[str, ...], repeats: int | None, output: Path | None, png_dir: Path | None,
           title: str | None, resamples: int, seed: int, range_from: int | None, range_to: int | None,
           skip_warmup: int | None, results: str | None, as_json: bool) -> None:
    """One HTML page: every factor's levels against its baseline, interactions, spread, figures."""
    from latscope.analysis.compare import Settings
    from latscope.experiment.analysis import findings, read_repeats
    from latscope.experiment.runner import done_runs

    c = loaded(file, sets, repeats)
    store = store_from(results)
    run_ids = done_runs(c, store)
    # The options, where given, replace the file's windows (a trial at a small count may need no warm-up).
    rng = make_range(c.from_ns if range_from is None else range_from, c.to_ns if range_to is None else range_to,
                     c.skip_warmup_ns if skip_warmup is None else skip_warmup)
    made, missing = read_repeats(c, store, run_ids, rng)
    found = findings(c, made, missing, Settings(resamples=resamples, seed=seed))
    if missing:
        warn(f"{len(missing)} of {len(c.plan())} planned runs are not made (yet): the report uses the others")
    if as_json:
        emit_json(found.as_json(), verb="campaign report")
        return
    from latscope.experiment.page import figures_of, render
    from latscope.report import html

    figs, pngs = figures_of(found, keep_png=png_dir is not None)
    out = output or file.with_suffix(".html")
    html.write(render(found, title or f"latscope campaign {c.name}", figs), out)
    for line in found.conclusions.values():
        click.echo(line)
    click.echo(f"wrote {out}")
    if png_dir is not None:
        for path in html.write_pngs(pngs, png_dir):
            click.echo(f"wrote {path}")
