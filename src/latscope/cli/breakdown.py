"""`latscope breakdown [RUN] [--trace FILE]`: what held the late packets back."""

from __future__ import annotations

from pathlib import Path

import click

from latscope.cli.common import (
    DURATION,
    emit_json,
    json_option,
    results_option,
    store_from,
    warn,
)
from latscope.errors import ConfigError, TraceError
from latscope.safetext import terminal_safe


@click.command()
@click.argument("run_ref", metavar="[RUN]", required=False)
@click.option("--trace", "trace_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A trace you captured: the tracefs `trace` file or `trace-cmd report` output "
                   "(plain, .gz, .xz, .zst). Default: the run's own trace.")
@click.option("--threshold", type=DURATION, default=None,
              help="Late above this (150us, 1ms) [default: the run's p99 of the metric].")
@click.option("--metric", type=click.Choice(["e2e", "latency", "trace"]), default="e2e", show_default=True,
              help="What 'late' is judged on. e2e: scheduled send to receiver in user space; latency: send "
                   "call to the kernel's receive timestamp (only the stages inside it are blamed); trace: "
                   "sender marker to receiver marker.")
@click.option("--packet-pid", "packet_pid", type=int, default=None,
              help="pid of the sending process, for traces without latscope markers.")
@click.option("--receiver-pid", "receiver_pid", type=int, default=None,
              help="pid of the receiving process, for traces without latscope markers.")
@click.option("--top", type=click.IntRange(0), default=10, show_default=True,
              help="Late packets shown stage by stage in the text report.")
@click.option("--perfetto", "perfetto_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write a Chrome/Perfetto trace (JSON) of the late packets, for ui.perfetto.dev.")
@click.option("--whole-trace", "whole_trace", is_flag=True,
              help="Read every event of the run's trace, not only those of the packets and of the late "
                   "packets' windows (same result; slower, more memory).")
@results_option
@json_option
def breakdown(run_ref: str | None, trace_file: Path | None, threshold: int | None, metric: str,
              packet_pid: int | None, receiver_pid: int | None, top: int, perfetto_file: Path | None,
              whole_trace: bool, results: str | None, as_json: bool) -> None:
    """Split each late packet's latency into stages and name what held it back.

    RUN is a run recorded with `latscope run --trace` (id, prefix, name or
    'latest'). With --trace FILE and no RUN, a trace captured by other means
    is broken down on its own.
    """
    from latscope.trace.breakdown import (
        Options,
        analyse,
        analyse_run,
        load_run_steal,
        load_trace_file,
        round_trip,
    )
    from latscope.trace.report import to_json, to_text

    if run_ref is None and trace_file is None:
        raise ConfigError("give a RUN recorded with `latscope run --trace`, or --trace FILE")
    run = store_from(results).resolve(run_ref) if run_ref is not None else None
    options = Options(metric=metric, threshold_ns=threshold, sender_pid=packet_pid, receiver_pid=receiver_pid,
                      top=top)
    if run is not None and trace_file is None and (packet_pid is None or receiver_pid is None) \
            and (why := round_trip(run.record.config)):
        raise TraceError(f"run {run.run_id} is {why}: break down a one-way run (the default --mode)")
    overruns = run.record.completeness.get("trace_overruns") if run is not None and trace_file is None else None
    if run is not None and trace_file is None and run.record.extra.get("vm"):
        # through a QEMU guest: the host's trace and the guest's, on one path
        from latscope.trace.vmbreakdown import analyse_vm_run

        bd = analyse_vm_run(run.path, run.record.extra, run.samples(), options, run_id=run.run_id,
                            overruns=overruns)
    else:
        samples = run.samples() if run is not None else None
        if trace_file is not None:
            bd = analyse(load_trace_file(trace_file), samples, options, run_id=run.run_id if run else None)
        elif run is not None:
            # the run's steal series is on the probe's clock, as its own trace is (not a trace brought in);
            # --perfetto draws every CPU's whole timeline: it needs every event
            bd = analyse_run(run.path, run.record.extra.get("trace"), samples, options, run_id=run.run_id,
                             overruns=overruns, steal=load_run_steal(run.path),
                             whole=whole_trace or perfetto_file is not None)
        else:  # ruled out above; says so to the type checker too
            raise ConfigError("give a RUN recorded with `latscope run --trace`, or --trace FILE")
    if perfetto_file is not None:
        from latscope.trace.perfetto import write

        n = write(bd, perfetto_file)
        if not as_json:
            warn(f"wrote {n} trace events to {perfetto_file} (open it in https://ui.perfetto.dev)")
    if as_json:
        doc = to_json(bd)
        if perfetto_file is not None:
            doc["perfetto_file"] = str(perfetto_file)
        emit_json(doc)
    else:
        # Task names come from the trace, and any process can name itself with escape sequences.
        click.echo(terminal_safe(to_text(bd, top=top)), nl=False)
