"""run.json: the run's identity, configuration, environment, completeness and summary.

Every file carries ``format`` (its magic) and an integer ``schema_version``.
Loaders reject newer files and migrate older ones one step at a time; the
history of versions is written down in docs/format.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latscope.errors import FormatError
from latscope.files import write_atomic

RUN_FORMAT = "latscope-run"
RUN_SCHEMA_VERSION = 1

#: Migrations from version N to N+1. Version 1 is the first released format.
_MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}

COMPLETENESS_KEYS = (
    "sent",
    "received",
    "lost",
    "duplicated",
    "reordered",
    "foreign",
    "send_failed",
    "missing_tx_timestamps",
    "missing_rx_timestamps",
    "trace_overruns",
)


@dataclass(frozen=True)
class RunRecord:
    """The parsed, migrated content of a run.json."""

    run_id: str
    name: str
    tags: tuple[str, ...]
    created: str
    status: str
    config: dict[str, Any]
    environment: dict[str, Any]
    completeness: dict[str, int]
    summary: dict[str, Any]
    source: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The document written to run.json."""
        doc: dict[str, Any] = {
            "format": RUN_FORMAT,
            "schema_version": RUN_SCHEMA_VERSION,
            "run_id": self.run_id,
            "name": self.name,
            "tags": list(self.tags),
            "created": self.created,
            "status": self.status,
            "source": self.source,
            "config": self.config,
            "environment": self.environment,
            "completeness": self.completeness,
            "summary": self.summary,
        }
        doc.update(self.extra)
        return doc


def parse_run_json(doc: Any, origin: str = "run.json") -> RunRecord:
    """Validate and migrate a decoded run.json document into a RunRecord."""
    if not isinstance(doc, dict) or doc.get("format") != RUN_FORMAT:
        raise FormatError(f"{origin}: not a latscope run file (format must be {RUN_FORMAT!r})")
    version = doc.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise FormatError(f"{origin}: schema_version must be a positive integer, got {version!r}")
    if version > RUN_SCHEMA_VERSION:
        raise FormatError(
            f"{origin}: schema_version {version} is newer than this latscope supports "
            f"({RUN_SCHEMA_VERSION}); upgrade latscope"
        )
    while version < RUN_SCHEMA_VERSION:
        doc = _MIGRATIONS[version](doc)
        version += 1
        doc["schema_version"] = version
    try:
        known = {
            "format", "schema_version", "run_id", "name", "tags", "created", "status",
            "source", "config", "environment", "completeness", "summary",
        }
        record = RunRecord(
            run_id=str(doc["run_id"]),
            name=str(doc.get("name") or ""),
            tags=tuple(str(t) for t in doc.get("tags") or ()),
            created=str(doc["created"]),
            status=str(doc.get("status", "complete")),
            config=dict(doc.get("config") or {}),
            environment=dict(doc.get("environment") or {}),
            completeness={k: int(v) for k, v in (doc.get("completeness") or {}).items()},
            summary=dict(doc.get("summary") or {}),
            source=dict(doc.get("source") or {}),
            extra={k: v for k, v in doc.items() if k not in known},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"{origin}: malformed run file ({exc.__class__.__name__}: {exc})") from None
    return record


def load_run_json(path: Path) -> RunRecord:
    """Read and validate ``path`` (a run.json)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FormatError(f"{path}: run.json is missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path}: cannot read run.json ({exc})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FormatError(f"{path}: corrupt run.json (line {exc.lineno}: {exc.msg})") from None
    return parse_run_json(doc, str(path))


def write_json_atomic(path: Path, doc: Any) -> None:
    """Write JSON to ``path`` through latscope's one atomic writer (StoreError when it cannot)."""
    text = json.dumps(doc, indent=2, sort_keys=False, allow_nan=False, default=_json_default) + "\n"
    write_atomic(path, text)


def _json_default(value: Any) -> Any:
    # numpy scalars sneak into summaries; JSON has no int64/float64.
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
