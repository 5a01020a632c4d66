"""`latscope doctor`: the host's environment and a verdict on what it can measure."""

from __future__ import annotations

import click

from latscope.cli.common import emit_json, json_option, results_option
from latscope.env import collect_environment
from latscope.env.doctor import checks, has_failures, leftovers_check, topology_check, verdict
from latscope.leftovers import reap
from latscope.store.layout import resolve_results_root
from latscope.topo.available import TOPOLOGIES, available

_MARK = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "info": "info"}


@click.command()
@results_option
@json_option
@click.pass_context
def doctor(ctx: click.Context, results: str | None, as_json: bool) -> None:
    """Check what this host can measure: privileges, kernel, clocks, timestamping, tracing, qdiscs, topologies.

    Also removes what killed latscope runs left behind (namespaces, tracefs instances, staging
    directories in the results root) and says what it removed.
    """
    reaped = reap(resolve_results_root(results))
    env = collect_environment()
    topologies = {kind: available(kind) for kind in TOPOLOGIES}
    found = [*checks(env), topology_check(topologies), leftovers_check(reaped.removed, reaped.kept)]
    summary = verdict(found, topologies)
    if as_json:
        emit_json({"checks": [c.to_json() for c in found], "verdict": summary, "environment": env,
                   "topologies": {k: {"available": why is None, "reason": why} for k, why in topologies.items()},
                   "leftovers": {"removed": list(reaped.removed), "kept": list(reaped.kept)}})
    else:
        for c in found:
            click.echo(f"[{_MARK.get(c.status, c.status)}] {c.name:<12} {c.found}")
            if c.meaning:
                click.echo(f"       {'':<12} {c.meaning}")
        click.echo("")
        click.echo("This host can measure:")
        for line in summary["can"]:
            click.echo(f"  + {line}")
        if summary["cannot"]:
            click.echo("It cannot measure:")
            for line in summary["cannot"]:
                click.echo(f"  - {line}")
    if has_failures(found):
        ctx.exit(1)
