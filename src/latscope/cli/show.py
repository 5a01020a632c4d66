"""`latscope show RUN`: the summary recomputed from the stored samples."""

from __future__ import annotations

import click

from latscope.analysis.summary import summarise
from latscope.cli.common import emit_json, json_option, results_option, store_from
from latscope.report.document import run_document
from latscope.report.text import summary_text


@click.command()
@click.argument("run_ref", metavar="RUN")
@results_option
@json_option
def show(run_ref: str, results: str | None, as_json: bool) -> None:
    """Summarise a stored run (id, unique id prefix, name, 'latest' or a run directory)."""
    run = store_from(results).resolve(run_ref)
    summary = summarise(run.samples(), run.record.completeness)
    if as_json:
        emit_json(run_document(run, summary))
        return
    header = run.record.name and f"{run.record.name} ({run.run_id})"
    if header:
        click.echo(header)
    click.echo(summary_text(summary, run.run_id, run.record.status))
