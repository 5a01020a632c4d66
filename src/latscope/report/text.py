"""The text summary, in the shape engineers already know from the kernel's sample apps."""

from __future__ import annotations

from typing import Any

from latscope.units import duration_words


def _line(stats: dict[str, Any], keys: tuple[str, ...]) -> str:
    return "/".join("-" if stats.get(k) is None else f"{stats[k]:.3f}" for k in keys)


def summary_text(summary: dict[str, Any], run_id: str | None = None, status: str | None = None) -> str:
    """The classic three lines, then percentiles, wakeup latency, packet counts and the run id."""
    pk = summary["packets"]
    lat = summary["latency_us"]
    dlt = summary["delta_us"]
    lines = [
        f"Total: {pk['received']} packets (~= {duration_words(summary.get('duration_ns', 0))})",
        f"  latency min/avg/max/stddev (usec): {_line(lat, ('min', 'avg', 'max', 'stddev'))}",
        f"  delta min/avg/max/stdev (usec): {_line(dlt, ('min', 'avg', 'max', 'stddev'))}",
        f"  latency p50/p90/p99/p99.9/p99.99 (usec): {_line(lat, ('p50', 'p90', 'p99', 'p999', 'p9999'))}",
    ]
    wake = summary.get("wakeup_latency_us") or {}
    if wake.get("count"):
        lines.append(
            f"  wakeup latency min/avg/max/p99 (usec): {_line(wake, ('min', 'avg', 'max', 'p99'))}"
        )
    arr = summary.get("arrival_latency_us") or {}
    if arr.get("count"):
        lines.append(
            f"  arrival latency min/avg/max/p99 (usec): {_line(arr, ('min', 'avg', 'max', 'p99'))}"
        )
    lines.append(
        "  packets: sent {sent}, received {received}, lost {lost}, duplicated {duplicated}, "
        "reordered {reordered}, foreign {foreign}".format(**pk)
    )
    worst = summary.get("worst") or []
    if worst:
        lines.append(
            "  worst latency (usec) by seq: "
            + ", ".join(f"#{w['seq']} {w['latency_us']:.3f}" for w in worst)
        )
    if run_id:
        suffix = f" ({status})" if status and status != "complete" else ""
        lines.append(f"  run: {run_id}{suffix}")
    return "\n".join(lines)
