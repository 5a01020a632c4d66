"""Entry point: the verb group and the mapping of errors to one line and an exit code."""

from __future__ import annotations

import errno
import sys

import click

from latscope import __version__
from latscope.errors import LatscopeError
from latscope.safetext import printable
from latscope.stopping import Stopped, raise_on_signals

#: verb -> (where its command lives, its one-line summary). The summary is what `latscope --help` lists,
#: so that listing the verbs imports none of them; tests/unit/test_cli_lazy.py keeps it equal to the first
#: sentence of each command's own help.
VERBS = {
    "run": ("latscope.cli.run:run",
            ("Measure one-way latency (or round trips, --mode rtt): a periodic packet stream across a topology, "
             "saved as a run.")),
    "send": ("latscope.cli.send:send",
             "Send the periodic stream; the receiver stores the run (its parameters travel in the packets)."),
    "recv": ("latscope.cli.recv:recv", "Receive a stream from `latscope send`, then save and summarise the run."),
    "ls": ("latscope.cli.ls:ls", "List stored runs: id, name, time, packets and latency avg/p99/max."),
    "show": ("latscope.cli.show:show",
             "Summarise a stored run (id, unique id prefix, name, 'latest' or a run directory)."),
    "doctor": ("latscope.cli.doctor:doctor",
               "Check what this host can measure: privileges, kernel, clocks, timestamping, tracing, qdiscs, topologies."),
    "import": ("latscope.cli.importcmd:import_",
               "Import FILE written by another tool (csv, isochron .dat, irtt JSON, sockperf --full-log) as a run."),
    "sql": ("latscope.cli.sql:sql",
            "Run SQL (DuckDB) over the views `runs` (one row per run) and `samples` (one row per packet, all runs)."),
    "export": ("latscope.cli.export:export",
               "Export stored runs into a dataset: hive-partitioned Parquet that DuckDB, Spark and Dask read as is."),
    "compare": ("latscope.cli.compare:compare",
                "Compare runs with the first (A): table, differences, intervals, verdicts, environment differences."),
    "check": ("latscope.cli.check:check", "Check a stored run against limits; exit 1 when one is broken (for CI gates)."),
    "report": ("latscope.cli.report:report",
               "Write an HTML report of runs (the first is the baseline of the comparison)."),
    "breakdown": ("latscope.cli.breakdown:breakdown",
                  "Split each late packet's latency into stages and name what held it back."),
    "agent": ("latscope.cli.agent:agent",
              ("Serve measurement requests from authenticated controllers (`latscope run --from/--to`) until "
               "stopped.")),
    "monitor": ("latscope.cli.monitor:monitor",
                "Measure without end on a local topology: one Parquet file per interval, Prometheus metrics, alert limits."),
    "campaign": ("latscope.cli.campaign:campaign",
                 "Plan, run, follow and report an experiment: runs under several configurations, repeated."),
}


#: Verbs that start worker processes and create namespaces: stop signals follow latscope.stopping.
MEASURING = ("run", "send", "recv", "monitor")


class LazyGroup(click.Group):
    """Imports a verb's module only when it runs, so `latscope ls` does not load the probe
    and `latscope --help` loads no verb at all."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(VERBS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = VERBS.get(name)
        if target is None:
            return None
        if name in MEASURING:
            # Before the verb's (slow) import: a stop signal from here on ends it with a message
            # instead of silently, and the phases after it each have one outcome (docs/run.md).
            raise_on_signals()
        module, _, attr = target[0].partition(":")
        return getattr(__import__(module, fromlist=[attr]), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The verbs and their summaries, as click lists them, from VERBS instead of the commands."""
        width = formatter.width - 6 - max(len(name) for name in VERBS)
        # A bare Command shortens the summary exactly as click would the verb's own (click.utils'
        # make_default_short_help is deprecated).
        rows = [(name, click.Command(name, help=summary).get_short_help_str(width))
                for name, (_, summary) in VERBS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="latscope")
def cli() -> None:
    """Measure, explain and compare the network latency of a Linux system."""


_OUTPUT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EAGAIN)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return its exit code (0 ok, 1 run or check failed, 2 usage or input error)."""
    try:
        rc = cli.main(args=argv, prog_name="latscope", standalone_mode=False)
    except click.exceptions.Abort:
        # click turns a KeyboardInterrupt raised inside a verb (Ctrl-C, or a signal a verb catches) into Abort.
        click.echo("latscope: interrupted", err=True)
        return 1
    except click.ClickException as exc:
        message = exc.format_message().splitlines()[0] if exc.format_message() else str(exc)
        ctx_hint = ""
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            ctx_hint = f" (see `{exc.ctx.command_path} --help`)"
        click.echo(f"latscope: error: {printable(message)}{ctx_hint}", err=True)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except LatscopeError as exc:
        # One line whatever the message holds: a newline in a quoted path or name is shown as \n.
        click.echo(f"latscope: error: {printable(str(exc)) if str(exc) else type(exc).__name__}", err=True)
        detail = getattr(exc, "detail", "")
        if detail:
            # Evidence the one line cannot hold (a guest's console), indented below it.
            click.echo("\n".join(f"  | {printable(ln)}" for ln in detail.splitlines()), err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("latscope: interrupted", err=True)
        return 1
    except Stopped as exc:
        tail = " before the measurement started; nothing was stored" if exc.before_start else ""
        click.echo(f"latscope: stopped by {exc.name}{tail}", err=True)
        return 1
    except BrokenPipeError:
        return 1
    except OSError as exc:
        # The output could not be written (standard output on a full disk, a non-blocking pipe that is full):
        # no file name, unlike every file latscope itself writes (those are LatscopeErrors anyway).
        if exc.filename is None and exc.errno in _OUTPUT_ERRNOS:
            _say(f"latscope: error: cannot write the output: {exc.strerror}\n")
            return 1
        raise
    # Verbs that report a failed run or check end with ctx.exit(1), which
    # click returns here when not in standalone mode.
    return rc if isinstance(rc, int) else 0


class _NoPandas:
    """An import finder that says pandas is not installed."""

    @staticmethod
    def find_spec(name: str, path: object = None, target: object = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError("pandas is not imported by the latscope command", name=name)


def _single_threaded_blas() -> None:
    """numpy's OpenBLAS starts a thread per CPU at import, whose start-up spins: about 0.07 s of CPU in every
    `latscope` process, and threads that would compete with a measurement. latscope does no linear algebra
    that threads would speed up. A user's own setting is kept."""
    import os

    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # not OMP_NUM_THREADS: Arrow's CPU pool follows that


def _exit_now(rc: int) -> None:
    """End the process with ``rc`` without tearing the native libraries down, once the verb is done.

    Arrow's thread pools can abort a process in its teardown after all its work is done ("terminate called
    without an active exception", SIGABRT: apache/arrow#34314, open upstream); it hit a `latscope breakdown`
    that had already printed its one-line error. So when no other Python thread is running (nothing of
    latscope's is still at work), the exit handlers run, Python's and the C library's output buffers are
    flushed, and the process ends with _exit. Output that cannot be written is what a normal exit would make
    of it: a reader gone (EPIPE) ends the command with 1 silently, any other error (a full disk) with 1 and one
    line on stderr.
    """
    import atexit
    import os
    import threading

    if threading.active_count() > 1:
        return
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        if stream is None:  # the descriptor was closed when the process started
            continue
        try:
            stream.flush()
        except (OSError, ValueError) as exc:
            rc = rc or 1
            if stream is sys.stdout and isinstance(exc, OSError) and exc.errno != errno.EPIPE:
                _say(f"latscope: error: cannot write the output: {exc.strerror or exc}\n")
    from latscope.libc import LIBC

    LIBC.fflush(None)  # what native libraries wrote through C stdio
    os._exit(rc)


def _say(line: str) -> None:
    """One line on stderr, if there is a stderr to write it to."""
    try:
        if sys.stderr is not None:
            sys.stderr.write(line)
            sys.stderr.flush()
    except (OSError, ValueError):
        pass


def program() -> int:
    """The `latscope` command: main() in a process that never imports pandas.

    pandas is no dependency of latscope, but where it is installed (the dataset extra's dask and pyspark
    bring it) pyarrow imports it the first time it converts anything: 0.45 s of CPU in every verb that
    reads or writes Parquet, in each run's controller, and a third of the time of `latscope show`. latscope
    hands pyarrow no pandas object, so the command runs as it does on an install without pandas. In-process
    callers of main() (tests, notebooks) keep their pandas. numpy runs single-threaded (_single_threaded_blas),
    and the process ends without the native libraries' teardown (_exit_now).
    """
    sys.meta_path.insert(0, _NoPandas)
    _single_threaded_blas()
    rc = main()
    _exit_now(rc)
    return rc


if __name__ == "__main__":
    sys.exit(program())
