"""Option types and helpers shared by the verbs."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click

from latscope.errors import ConfigError
from latscope.safetext import check_name, check_tags, printable
from latscope.store.layout import ResultsStore, resolve_results_root
from latscope.units import parse_duration_ns


class Duration(click.ParamType):
    """A duration with a unit (250us, 1ms, 60s, 5m) as integer nanoseconds."""

    name = "duration"

    def __init__(self, default_unit: str = "s") -> None:
        self.default_unit = default_unit

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_duration_ns(value, default_unit=self.default_unit)
        except ConfigError as exc:
            self.fail(str(exc).replace("invalid duration ", ""), param, ctx)


class IntOrHex(click.ParamType):
    """An integer written in decimal or 0x hex (EtherTypes, priorities)."""

    name = "integer"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return int(str(value), 0)
        except ValueError:
            self.fail(f"{value!r} is not an integer", param, ctx)


class Label(click.ParamType):
    """A run name or tag: printable text of bounded length (latscope.safetext)."""

    name = "text"

    def __init__(self, check: Callable[[str, str], Any], what: str) -> None:
        self.check = check
        self.what = what

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            self.check(value, self.what)
        except ConfigError as exc:
            self.fail(str(exc).removeprefix(f"{self.what}: "), param, ctx)
        return value


DURATION = Duration()
INT_OR_HEX = IntOrHex()
NAME = Label(check_name, "--name")
TAG = Label(lambda v, what: check_tags((v,), what), "--tag")


def tag_list(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    """Callback of --tag: at most MAX_TAGS of them (each one is checked by TAG)."""
    try:
        return check_tags(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def check_memory(count: int, bytes_per_packet: int, meminfo: str = "/proc/meminfo") -> None:
    """ConfigError when ``count`` packets at ``bytes_per_packet`` do not fit the memory available now."""
    need = count * bytes_per_packet
    try:
        with open(meminfo) as fh:
            avail = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return  # no /proc: nothing to check against
    if need > avail:
        raise ConfigError(f"--count {count} needs about {need / 2**30:.1f} GiB of memory; "
                          f"{avail / 2**30:.1f} GiB are available (use a smaller --count or --duration)")

results_option = click.option(
    "--results", "results", type=click.Path(file_okay=False), default=None,
    help="Results root (default: $LATSCOPE_RESULTS or ./latscope-results).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of text.")


def store_from(results: str | None) -> ResultsStore:
    """The results store the user pointed at."""
    return ResultsStore(resolve_results_root(results))


#: Every verb's --json document: its ``format`` and ``schema_version`` (docs/format.md, "JSON output", lists
#: them with their top-level keys). Bump a version when a key changes meaning or goes away; adding keys does not.
JSON_DOCUMENTS: dict[str, tuple[str, int]] = {
    "run": ("latscope-run-summary", 1),
    "recv": ("latscope-run-summary", 1),
    "import": ("latscope-run-summary", 1),
    "send": ("latscope-send", 1),
    "show": ("latscope-show", 1),
    "ls": ("latscope-ls", 1),
    "compare": ("latscope-compare", 1),
    "check": ("latscope-check", 1),
    "sql": ("latscope-sql", 1),
    "doctor": ("latscope-doctor", 1),
    "breakdown": ("latscope-breakdown", 1),
    "campaign plan": ("latscope-campaign-plan", 1),
    "campaign status": ("latscope-campaign-status", 1),
    "campaign report": ("latscope-campaign-report", 1),
}


def json_header(verb: str | None = None) -> dict[str, Any]:
    """``{"format": ..., "schema_version": ...}`` of ``verb``'s --json document (default: the verb running)."""
    if verb is None:
        verb = click.get_current_context().command.name
    if verb not in JSON_DOCUMENTS:
        raise KeyError(f"no --json document declared for verb {verb!r} (add it to JSON_DOCUMENTS)")
    fmt, version = JSON_DOCUMENTS[verb]
    return {"format": fmt, "schema_version": version}


def emit_json(doc: dict[str, Any], verb: str | None = None) -> None:
    """Print ``doc`` as ``verb``'s JSON document on stdout, ``format`` and ``schema_version`` first.

    A document that names its own format (breakdown's) must name the one declared for the verb.
    """
    header = json_header(verb)
    for key, value in header.items():
        if key in doc and doc[key] != value:
            raise ValueError(f"--json document says {key} {doc[key]!r}, its verb declares {value!r}")
    click.echo(json.dumps({**header, **doc}, indent=2, default=_default, allow_nan=False))


def _default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def warn(message: str) -> None:
    """A warning line on stderr."""
    click.echo(f"latscope: warning: {printable(message)}", err=True)


def stderr_is_tty() -> bool:
    return sys.stderr.isatty()


def selected_runs(results: str | None, where: tuple[str, ...] | list[str]) -> tuple[ResultsStore, list, list]:
    """The store, its readable runs that pass the --where filters, and the filters; unreadable runs are warned about."""
    from latscope.store import catalog

    filters = [catalog.parse_filter(w) for w in where]
    store = store_from(results)
    runs, bad = store.runs()
    for path, reason in bad:
        warn(f"skipping unreadable run {path.name}: {reason}")
    return store, catalog.select(runs, filters), filters
