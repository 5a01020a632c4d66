"""`latscope export --dataset DIR`: stored runs into a partitioned Parquet dataset (docs/export.md, dataset.md)."""

from __future__ import annotations

from pathlib import Path

import click

from latscope.cli.common import results_option, selected_runs, store_from
from latscope.safetext import printable


@click.command(name="export")
@click.argument("refs", nargs=-1, metavar="[RUN]...")
@click.option("--dataset", "dataset_dir", required=True, type=click.Path(file_okay=False), metavar="DIR",
              help="The dataset directory (created if new; else it must hold a latscope dataset).")
@click.option("--where", "where", multiple=True, metavar="KEY=VALUE",
              help="Only runs matching these filters (those of `latscope ls --where`; repeatable, ANDed).")
@results_option
def export(refs: tuple[str, ...], dataset_dir: str, where: tuple[str, ...], results: str | None) -> None:
    """Export stored runs into a dataset: hive-partitioned Parquet that DuckDB, Spark and Dask read as is.

    Samples go to DIR/samples/host=H/date=YYYY-MM-DD/hour=HH/ (the UTC hour
    of each packet's send time), one row per run to DIR/runs/, the schema to
    DIR/_latscope_dataset.json. Without RUN every run of the store (that
    passes --where) is exported; exporting a run again replaces its files.
    """
    from latscope.store import catalog, dataset

    if refs:
        store = store_from(results)
        runs = [store.resolve(ref) for ref in refs]
        runs = catalog.select(runs, [catalog.parse_filter(w) for w in where])
    else:
        _store, runs, _filters = selected_runs(results, where)
    target = dataset.open_dataset(Path(dataset_dir), create=True)
    if not runs:
        click.echo("no runs to export", err=True)
        return
    done = dataset.export_runs(target, runs)
    for d in done:
        replaced = f", {d.removed} old file{'s' if d.removed != 1 else ''} removed" if d.removed else ""
        click.echo(f"{d.run_id}  host={printable(d.host)}  {d.rows} packets in {len(d.files)} "
                   f"file{'s' if len(d.files) != 1 else ''}{replaced}")
    total = sum(d.rows for d in done)
    click.echo(f"exported {len(done)} run{'s' if len(done) != 1 else ''} ({total} packets) to {target.root}",
               err=True)
