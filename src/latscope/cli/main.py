"""Entry point: the verb group and the mapping of errors to one line and an exit code."""

from __future__ import annotations

import sys

import click

from latscope import __version__
from latscope.errors import LatscopeError
from latscope.stopping import Stopped, raise_on_signals

VERBS = {
    "run": "latscope.cli.run:run",
    "send": "latscope.cli.send:send",
    "recv": "latscope.cli.recv:recv",
    "ls": "latscope.cli.ls:ls",
    "show": "latscope.cli.show:show",
    "doctor": "latscope.cli.doctor:doctor",
    "import": "latscope.cli.importcmd:import_",
    "sql": "latscope.cli.sql:sql",
    "compare": "latscope.cli.compare:compare",
    "check": "latscope.cli.check:check",
    "report": "latscope.cli.report:report",
    "breakdown": "latscope.cli.breakdown:breakdown",
}


#: Verbs that start worker processes and create namespaces: stop signals follow latscope.stopping.
MEASURING = ("run", "send", "recv")


class LazyGroup(click.Group):
    """Imports a verb's module only when it runs, so `latscope ls` does not load the probe."""

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
        module, _, attr = target.partition(":")
        return getattr(__import__(module, fromlist=[attr]), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="latscope")
def cli() -> None:
    """Measure, explain and compare the network latency of a Linux system."""


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return its exit code (0 ok, 1 run or check failed, 2 usage or input error)."""
    try:
        rc = cli.main(args=argv, prog_name="latscope", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("latscope: aborted", err=True)
        return 1
    except click.ClickException as exc:
        message = exc.format_message().splitlines()[0] if exc.format_message() else str(exc)
        ctx_hint = ""
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            ctx_hint = f" (see `{exc.ctx.command_path} --help`)"
        click.echo(f"latscope: error: {message}{ctx_hint}", err=True)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except LatscopeError as exc:
        click.echo(f"latscope: error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", err=True)
        detail = getattr(exc, "detail", "")
        if detail:
            # Evidence the one line cannot hold (a guest's console), indented below it.
            click.echo("\n".join(f"  | {ln}" for ln in detail.splitlines()), err=True)
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
    # Verbs that report a failed run or check end with ctx.exit(1), which
    # click returns here when not in standalone mode.
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    sys.exit(main())
