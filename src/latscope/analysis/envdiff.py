"""Differences between the configurations and environments of runs.

A comparison is only as good as the knowledge of what else changed between
the runs: another kernel, another clocksource, a different CPU pinning. The
documents are flattened to dotted keys and every key whose value is not the
same in all runs is listed. Values that differ in every run by nature (pids,
capture times, random stream ids) are left out, or every comparison would
list them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: Last key components that change from run to run whatever the configuration.
VOLATILE = {
    "captured_at", "pid", "base_time_ns", "stream", "name", "tags", "git_commit", "created", "port",
    "ifindex", "address", "ifname", "namespace", "mac", "prog_id",
}
#: Whole subtrees that describe the moment, not the setup.
VOLATILE_PREFIXES = ("environment.after.", "environment.topology.namespaces", "environment.topology.interfaces")


@dataclass(frozen=True)
class Difference:
    """One key whose value differs between runs; ``values`` are in run order (None: absent)."""

    key: str
    values: tuple[Any, ...]

    def as_json(self) -> dict[str, Any]:
        return {"key": self.key, "values": list(self.values)}


def flatten(doc: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys to scalar values. Lists of named items are keyed by name (interfaces[eth0])."""
    out: dict[str, Any] = {}
    if isinstance(doc, dict):
        for key, value in doc.items():
            out.update(flatten(value, f"{prefix}{key}."))
    elif isinstance(doc, list) and doc and all(isinstance(x, dict) and "name" in x for x in doc):
        for item in doc:
            out.update(flatten({k: v for k, v in item.items() if k != "name"}, f"{prefix[:-1]}[{item['name']}]."))
    elif isinstance(doc, list):
        out[prefix[:-1]] = json.dumps(doc, sort_keys=True, default=str)
    else:
        out[prefix[:-1]] = doc
    return out


def _volatile(key: str) -> bool:
    last = key.rsplit(".", 1)[-1].split("[", 1)[0]
    return last in VOLATILE or key.startswith(VOLATILE_PREFIXES)


def setup_document(record: Any) -> dict[str, Any]:
    """What describes a run's setup for comparison: how it was measured (source), config, environment.

    The source matters most: a round-trip time imported from irtt is not a
    one-way latency, and a comparison across the two must say so.
    """
    source = {k: record.source.get(k) for k in ("kind", "tool", "metric") if k in record.source}
    return {"source": source, "config": record.config, "environment": record.environment}


def metric_mismatch(records: Sequence[Any]) -> str | None:
    """A warning when runs measure different things (one-way latency vs round trip), else None."""
    metrics = sorted({str(r.source.get("metric") or "one-way latency") for r in records})
    if len(metrics) > 1:
        return "the runs measure different things (" + " vs ".join(metrics) + "): differences mix metrics"
    return None


def differences(documents: Sequence[dict[str, Any]]) -> list[Difference]:
    """Keys (config.*, environment.*) whose values are not equal across ``documents``."""
    flat = [flatten(doc) for doc in documents]
    keys = sorted({k for f in flat for k in f})
    out = []
    for key in keys:
        if _volatile(key):
            continue
        values = tuple(f.get(key) for f in flat)
        if any(v != values[0] for v in values[1:]):
            out.append(Difference(key, values))
    return out
