"""Differences between the configurations and environments of runs.

A comparison is only as good as the knowledge of what else changed between
the runs: another kernel, another clocksource, a different CPU pinning. The
documents are flattened to dotted keys and every key whose value is not the
same in all runs is listed. Values that differ in every run by nature (pids,
capture times, random stream ids) are left out, or every comparison would
list them: the environment's schema (latscope.env.schema) and CONFIG below
declare which they are.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from latscope.env.schema import RUN, VOLATILE, rule_of

#: run.json ``config`` keys that change from run to run whatever the configuration: random stream ids, the
#: start time, labels, ports picked per run, and the sender's own copies of these (``recv``'s ``sender``).
#: Every other config key is compared. docs/format.md ("Environment keys") lists them.
CONFIG: dict[str, str] = {
    "base_time_ns": VOLATILE,
    "stream": VOLATILE,
    "name": VOLATILE,
    "tags": VOLATILE,
    "port": VOLATILE,
    "sender_endpoint.port": VOLATILE,
    "receiver_endpoint.port": VOLATILE,
    "listen.port": VOLATILE,
    "sender.base_time_ns": VOLATILE,
    "sender.run_id": VOLATILE,
    "sender.name": VOLATILE,
    "sender.tags": VOLATILE,
}


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


def volatile(key: str) -> bool:
    """Whether a key of the setup document (config.*, environment.*) is left out of the differences.

    The environment's keys follow latscope.env.schema, the config's CONFIG; a key neither declares
    (an imported tool's environment, a key a newer latscope added) is compared.
    """
    section, _, rest = key.partition(".")
    if section == "environment":
        return rule_of(rest, RUN) == VOLATILE
    if section == "config":
        return rule_of(rest, CONFIG) == VOLATILE
    return False


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
        if volatile(key):
            continue
        values = tuple(f.get(key) for f in flat)
        if any(v != values[0] for v in values[1:]):
            out.append(Difference(key, values))
    return out
