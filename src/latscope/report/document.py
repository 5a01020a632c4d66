"""The stable JSON document of a run, shared by `run --json`, `recv --json` and `show --json`."""

from __future__ import annotations

from typing import Any

from latscope.store.layout import StoredRun


def run_document(run: StoredRun, summary: dict[str, Any]) -> dict[str, Any]:
    """run_id, status, packets, per-metric statistics (µs), completeness, config and environment."""
    rec = run.record
    doc: dict[str, Any] = {
        "run_id": rec.run_id,
        "name": rec.name,
        "tags": list(rec.tags),
        "created": rec.created,
        "status": rec.status,
        "path": str(run.path),
        "source": rec.source,
    }
    doc.update(summary)
    doc["completeness"] = rec.completeness
    if "capture" in rec.extra:
        doc["capture"] = rec.extra["capture"]
    doc["config"] = rec.config
    doc["environment"] = rec.environment
    return doc
