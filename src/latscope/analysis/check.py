"""Limits for CI gates: parse `p99.9=150us`, `delta.max=1.2ms`, `loss=0`, and judge a summary against them.

A limit is ``[METRIC.]STAT=VALUE``. METRIC defaults to latency; STAT is one of
min, avg, max, stddev, p50, p90, p99, p99.9, p99.99, p99.999. Time values need
a unit (150us, 1.2ms): a bare 150 could mean µs or s, and a gate that guesses
wrong passes silently. ``loss`` counts lost packets (``loss=0``), or with a
percent sign the share of sent packets (``loss=0.1%``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from latscope.analysis.metrics import METRICS
from latscope.analysis.summary import SUMMARY_METRICS
from latscope.errors import ConfigError
from latscope.units import parse_duration_ns

#: What a user may type -> key in the summary's statistics.
STATS = {
    "min": "min", "avg": "avg", "mean": "avg", "max": "max", "stddev": "stddev", "stdev": "stddev",
    "p50": "p50", "median": "p50", "p90": "p90", "p99": "p99", "p99.9": "p999", "p999": "p999",
    "p99.99": "p9999", "p9999": "p9999", "p99.999": "p99999", "p99999": "p99999",
}


@dataclass(frozen=True)
class Limit:
    """One bound: ``metric``'s ``stat`` must stay at or below (``max``) or at or above (``min``) ``value``."""

    text: str
    bound: str  # "max" or "min"
    metric: str  # latency, delta, ... or "loss"
    stat: str  # key in the summary (p999, max, ...), "count" or "percent" for loss
    value: float  # µs for time statistics, packets or percent for loss

    @property
    def unit(self) -> str:
        return {"count": "packets", "percent": "%"}.get(self.stat, "us")


@dataclass(frozen=True)
class Verdict:
    """A limit and what the run showed."""

    limit: Limit
    actual: float | None
    ok: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "limit": self.limit.text, "bound": self.limit.bound, "metric": self.limit.metric,
            "stat": self.limit.stat, "unit": self.limit.unit, "limit_value": self.limit.value,
            "actual": self.actual, "ok": self.ok,
        }


def parse_limit(text: str, bound: str = "max") -> Limit:
    """One ``[METRIC.]STAT=VALUE`` limit; a ConfigError says what is wrong."""
    key, sep, raw = text.partition("=")
    key, raw = key.strip().lower(), raw.strip()
    if not sep or not key or not raw:
        raise ConfigError(f"--{bound} {text!r}: expected STAT=VALUE such as p99.9=150us or loss=0")
    if key in ("loss", "lost"):
        return _loss_limit(text, bound, raw)
    metric, stat = "latency", key
    if key not in STATS and "." in key:
        metric, _, stat = key.partition(".")
    if metric not in METRICS or metric not in SUMMARY_METRICS:
        raise ConfigError(f"--{bound} {text!r}: unknown metric {metric!r} (one of {', '.join(SUMMARY_METRICS)})")
    if stat not in STATS:
        raise ConfigError(f"--{bound} {text!r}: unknown statistic {stat!r} (one of min, avg, max, stddev, "
                          "p50, p90, p99, p99.9, p99.99, p99.999)")
    if re.fullmatch(r"[\d.]+", raw):
        raise ConfigError(f"--{bound} {text!r}: give the value a unit, e.g. {raw}us or {raw}ms")
    negative = raw.startswith("-")
    ns = parse_duration_ns(raw.lstrip("-"), default_unit="us")
    return Limit(text, bound, metric, STATS[stat], (-ns if negative else ns) / 1000.0)


def _loss_limit(text: str, bound: str, raw: str) -> Limit:
    percent = raw.endswith("%")
    number = raw.rstrip("%").strip()
    try:
        value = float(number)
    except ValueError:
        raise ConfigError(f"--{bound} {text!r}: loss is a packet count (loss=0) or a share (loss=0.1%)") from None
    if value < 0 or (not percent and value != int(value)):
        raise ConfigError(f"--{bound} {text!r}: loss is a whole number of packets or a percentage")
    return Limit(text, bound, "loss", "percent" if percent else "count", value)


def metrics_needed(limits: list[Limit]) -> tuple[str, ...]:
    """The summary metrics the limits refer to (latency always: it is the summary's spine)."""
    return tuple(dict.fromkeys(["latency"] + [lim.metric for lim in limits if lim.metric != "loss"]))


def judge(limits: list[Limit], summary: dict[str, Any]) -> list[Verdict]:
    """Each limit against ``summary`` (summary.summarise form). A statistic with no data breaks its limit."""
    out = []
    packets = summary.get("packets", {})
    for lim in limits:
        actual: float | None
        if lim.metric == "loss":
            lost, sent = packets.get("lost", 0), packets.get("sent", 0)
            actual = float(lost) if lim.stat == "count" else (100.0 * lost / sent if sent else None)
        else:
            actual = (summary.get(SUMMARY_METRICS[lim.metric]) or {}).get(lim.stat)
        if actual is None:
            ok = False
        elif lim.bound == "max":
            ok = actual <= lim.value
        else:
            ok = actual >= lim.value
        out.append(Verdict(lim, actual, ok))
    return out
