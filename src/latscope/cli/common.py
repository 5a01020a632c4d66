"""Option types and helpers shared by the verbs."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from latscope.errors import ConfigError
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


DURATION = Duration()
INT_OR_HEX = IntOrHex()

results_option = click.option(
    "--results", "results", type=click.Path(file_okay=False), default=None,
    help="Results root (default: $LATSCOPE_RESULTS or ./latscope-results).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of text.")


def store_from(results: str | None) -> ResultsStore:
    """The results store the user pointed at."""
    return ResultsStore(resolve_results_root(results))


def emit_json(doc: Any) -> None:
    """Print one JSON document on stdout."""
    click.echo(json.dumps(doc, indent=2, default=_default, allow_nan=False))


def _default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def warn(message: str) -> None:
    """A warning line on stderr."""
    click.echo(f"latscope: warning: {message}", err=True)


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
