"""Parsing and formatting of durations and sizes as users type and read them."""

from __future__ import annotations

import re

from latscope.errors import ConfigError
from latscope.safetext import quote

_NS_PER = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "min": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zµ]*)\s*$")
#: The longest duration any option takes: a year. Every duration then fits int64 nanoseconds with room
#: to add it to a wall-clock time, and a typo such as 99999999999999999999999h is an error, not a wait.
MAX_DURATION_NS = 366 * 86_400 * 1_000_000_000
_MAX_TEXT = 40


def parse_duration_ns(text: str, *, default_unit: str = "s") -> int:
    """Return the duration in ``text`` ("1ms", "250us", "60s", "5m", "1.5s") in nanoseconds.

    A bare number takes ``default_unit``. Negative values and durations longer than
    MAX_DURATION_NS are rejected.
    """
    text = str(text)
    match = _DURATION.match(text.lower()) if len(text) <= _MAX_TEXT else None
    if not match:
        raise ConfigError(f"invalid duration {quote(text)}: expected a number with a unit such as 250us, 1ms, 60s, 5m")
    number, unit = match.groups()
    unit = unit or default_unit
    if unit not in _NS_PER:
        raise ConfigError(f"invalid duration {quote(text)}: unknown unit {quote(unit)} (use ns, us, ms, s, m, h)")
    # Decimal arithmetic through integers keeps "0.1ms" exact.
    whole, _, frac = number.partition(".")
    scale = _NS_PER[unit]
    value = int(whole or "0") * scale
    if frac:
        value += int(frac) * scale // 10 ** len(frac)
    if value > MAX_DURATION_NS:
        raise ConfigError(f"invalid duration {quote(text)}: longer than 366 days")
    return value


def format_us(ns: float | None) -> str:
    """Microseconds with three decimals, as every human-facing latscope number is shown."""
    if ns is None:
        return "-"
    return f"{ns / 1000:.3f}"


def duration_words(ns: int) -> str:
    """Round a duration to one unit in words, e.g. "1minute", "3seconds", "2hours"."""
    seconds = ns / 1e9
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second")):
        if seconds >= size * 0.99:  # 59.999 s of a 60000-packet run is "1minute"
            count = int(seconds / size + 0.5)
            return f"{count}{unit}{'s' if count != 1 else ''}"
    ms = int(seconds * 1000 + 0.5)
    return f"{ms}millisecond{'s' if ms != 1 else ''}"


def format_duration(ns: int) -> str:
    """Shortest exact form of a duration with a unit, for echoing options back ("1ms", "250us")."""
    for unit in ("h", "m", "s", "ms", "us"):
        scale = _NS_PER[unit]
        if ns and ns % scale == 0:
            return f"{ns // scale}{unit}"
    return f"{ns}ns"
