"""`latscope ls`: the runs in the results store, filtered and sorted (docs/ls.md)."""

from __future__ import annotations

import click

from latscope.cli.common import emit_json, json_option, results_option, selected_runs
from latscope.safetext import printable


def _row(run) -> dict:
    rec = run.record
    lat = rec.summary.get("latency_us", {})
    pk = rec.summary.get("packets", {})
    return {
        "run_id": rec.run_id, "name": rec.name, "tags": list(rec.tags), "created": rec.created,
        "status": rec.status, "packets": pk.get("received"), "lost": pk.get("lost"),
        "latency_avg_us": lat.get("avg"), "latency_p99_us": lat.get("p99"), "latency_max_us": lat.get("max"),
        "source": rec.source.get("kind"), "tool": rec.source.get("tool"), "metric": rec.source.get("metric"),
    }


@click.command(name="ls")
@click.option("--where", "where", multiple=True, metavar="KEY=VALUE",
              help="Keep runs matching KEY=VALUE (globs), KEY!=VALUE, KEY~REGEX or KEY<N, <=, >, >= "
                   "(e.g. tag=bridge, source=imported, 'latency_p99_us<50'); repeat to AND them.")
@click.option("--sort", "sort_key", default=None, metavar="KEY",
              help="Sort by KEY (-KEY: descending), e.g. --sort -latency_max_us. Default: oldest first.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Show at most this many runs (after sorting).")
@click.option("-q", "--quiet", "ids_only", is_flag=True, help="Print only run ids, one per line (for scripts).")
@results_option
@json_option
def ls(where: tuple[str, ...], sort_key: str | None, limit: int | None, ids_only: bool, results: str | None,
       as_json: bool) -> None:
    """List stored runs: id, name, time, packets and latency avg/p99/max.

    Keys for --where and --sort: tag, name, status, source (measured/imported),
    tool, metric, created, run_id, packet counts (sent, received, lost, ...),
    summary statistics such as latency_p99_us or wakeup_latency_max_us, and
    dotted paths into run.json (config.period_ns, source.tool, ...).
    Values of *_us keys may carry a unit: 'latency_max_us>1ms'.
    """
    from latscope.store import catalog

    store, runs, filters = selected_runs(results, where)
    if sort_key:
        runs = catalog.sort_runs(runs, sort_key)
    if limit is not None:
        runs = runs[:limit]
    if ids_only:
        for run in runs:
            click.echo(run.path.name)  # a run id: checked against a strict pattern when the run was read
        return
    rows = [_row(r) for r in runs]
    if as_json:
        emit_json({"results": str(store.root), "filters": [str(f) for f in filters], "runs": rows})
        return
    if not rows:
        click.echo(f"no runs in {store.root}" + (" match " + " ".join(map(str, filters)) if filters else ""))
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, pad_edge=False)
    for col, justify in (("run", "left"), ("name", "left"), ("created (UTC)", "left"), ("source", "left"),
                         ("packets", "right"), ("lost", "right"), ("avg us", "right"), ("p99 us", "right"),
                         ("max us", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]

    def f(v) -> str:
        return f"{v:.3f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"

    def cell(v) -> Text:
        # Text, not str: rich would read "[...]" in a name as markup. Control characters are escaped.
        return Text(printable(str(v)))

    for r in rows:
        source = str(r["tool"] or r["source"] or "-")
        if r["metric"] == "round-trip":
            source += " (rtt)"
        table.add_row(cell(r["run_id"]), cell(r["name"] + (f" [{','.join(r['tags'])}]" if r["tags"] else "")),
                      cell(r["created"][:19].replace("T", " ")), cell(source), cell(r["packets"]), cell(r["lost"]),
                      f(r["latency_avg_us"]), f(r["latency_p99_us"]), f(r["latency_max_us"]),
                      style=None if r["status"] == "complete" else "yellow")
    Console(width=200).print(table)
