"""`latscope ls`: the runs in the results store."""

from __future__ import annotations

import click

from latscope.cli.common import emit_json, json_option, results_option, store_from, warn


def _row(run) -> dict:
    rec = run.record
    lat = rec.summary.get("latency_us", {})
    pk = rec.summary.get("packets", {})
    return {
        "run_id": rec.run_id, "name": rec.name, "tags": list(rec.tags), "created": rec.created,
        "status": rec.status, "packets": pk.get("received"), "lost": pk.get("lost"),
        "latency_avg_us": lat.get("avg"), "latency_p99_us": lat.get("p99"), "latency_max_us": lat.get("max"),
    }


@click.command(name="ls")
@results_option
@json_option
def ls(results: str | None, as_json: bool) -> None:
    """List stored runs: id, name, time, packets and latency avg/p99/max."""
    store = store_from(results)
    runs, bad = store.runs()
    for path, reason in bad:
        warn(f"skipping unreadable run {path.name}: {reason}")
    rows = [_row(r) for r in runs]
    if as_json:
        emit_json({"results": str(store.root), "runs": rows})
        return
    if not rows:
        click.echo(f"no runs in {store.root}")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for col, justify in (("run", "left"), ("name", "left"), ("created (UTC)", "left"), ("packets", "right"),
                         ("lost", "right"), ("avg us", "right"), ("p99 us", "right"), ("max us", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]

    def f(v) -> str:
        return "-" if v is None else f"{v:.3f}"

    for r in rows:
        table.add_row(r["run_id"], r["name"] + (f" [{','.join(r['tags'])}]" if r["tags"] else ""),
                      r["created"][:19].replace("T", " "), str(r["packets"]), str(r["lost"]),
                      f(r["latency_avg_us"]), f(r["latency_p99_us"]), f(r["latency_max_us"]),
                      style=None if r["status"] == "complete" else "yellow")
    Console(width=200).print(table)
