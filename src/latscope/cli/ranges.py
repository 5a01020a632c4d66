"""The data-range options every analysis verb shares: --from, --to, --skip-warmup."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from latscope.analysis.window import Range
from latscope.cli.common import DURATION


def range_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add --from/--to/--skip-warmup; the command receives them as range_from, range_to, skip_warmup."""
    f = click.option("--skip-warmup", "skip_warmup", type=DURATION, default=None, metavar="DURATION",
                     help="Leave out the first DURATION of the run (e.g. 2s).")(f)
    f = click.option("--to", "range_to", type=DURATION, default=None, metavar="DURATION",
                     help="Use packets sent before this offset into the run (e.g. 10m).")(f)
    f = click.option("--from", "range_from", type=DURATION, default=None, metavar="DURATION",
                     help="Use packets sent from this offset into the run (e.g. 5m).")(f)
    return f


def make_range(range_from: int | None, range_to: int | None, skip_warmup: int | None) -> Range:
    """The Range the options describe (validated: an empty range is a usage error)."""
    rng = Range(range_from, range_to, skip_warmup or 0)
    rng.check()
    return rng
