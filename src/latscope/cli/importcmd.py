"""`latscope import KIND FILE --name NAME`: another tool's measurement as a latscope run."""

from __future__ import annotations

import click

from latscope.cli.common import NAME, TAG, emit_json, json_option, results_option, store_from, tag_list
from latscope.report.document import run_document
from latscope.report.text import summary_text

_KINDS = ("csv", "isochron", "irtt", "sockperf")


@click.command(name="import")
@click.argument("kind", type=click.Choice(_KINDS))
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=False))
@click.option("--name", type=NAME, required=True, help="Name of the new run.")
@click.option("--tag", "tags", type=TAG, multiple=True, callback=tag_list,
              help="Tag of the new run (repeatable), e.g. --tag bridge.")
@click.option("--metric", default=None,
              help="What to store as latency for round-trip tools. irtt: one-way (client->server, default when "
                   "the file has server timestamps), one-way-down, half-rtt, rtt. sockperf: half-rtt (default), rtt.")
@results_option
@json_option
def import_(kind: str, file: str, name: str, tags: tuple[str, ...], metric: str | None, results: str | None,
            as_json: bool) -> None:
    """Import FILE written by another tool (csv, isochron .dat, irtt JSON, sockperf --full-log) as a run.

    The run works with every verb. Its source (`latscope show RUN --json`)
    records the tool, the original file and its checksum, and what was
    stored where; round-trip tools are marked "metric": "round-trip".
    Formats and field mappings: docs/import.md.
    """
    from latscope.importers import import_run

    run = import_run(store_from(results), kind, file, name=name, tags=tags, metric=metric)
    rec = run.record
    if as_json:
        emit_json(run_document(run, rec.summary))
        return
    click.echo(f"imported {kind} {file} as {rec.name} ({run.run_id})")
    click.echo(f"  stored: {rec.source.get('metric')}" + (" (see source.notes)" if rec.source.get("notes") else ""))
    click.echo(summary_text(rec.summary, run.run_id, rec.status))
