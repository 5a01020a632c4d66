"""run.json: the run's identity, configuration, environment, completeness and summary.

Every file carries ``format`` (its magic) and an integer ``schema_version``.
Loaders reject newer files and migrate older ones one step at a time; the
history of versions is written down in docs/format.md.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latscope.errors import FormatError
from latscope.files import read_regular, reason, write_atomic
from latscope.safetext import quote

RUN_FORMAT = "latscope-run"
RUN_SCHEMA_VERSION = 1
#: A run.json is a few kB to a few MB (environment, imported tool output); more is not a run.json.
MAX_RUN_JSON = 16 << 20
#: Run ids: UTC creation time to the microsecond, then 6 random hex digits
#: (20261201-150143-123456-cc74f6). Ids written before 0.2 have whole seconds
#: (20261201-150143-cc74f6) and stay valid. Nothing else is a run id.
RUN_ID = re.compile(r"\A\d{8}-\d{6}(?:-\d{6})?-[0-9a-f]{6}\Z")
#: Bounds of stored values every verb computes with (docs/format.md).
MAX_STORED_PERIOD_NS = 86_400 * 1_000_000_000
MAX_STORED_COUNT = (1 << 63) - 1

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
            completeness={str(k): _count(v, f"completeness.{k}") for k, v in (doc.get("completeness") or {}).items()},
            summary=dict(doc.get("summary") or {}),
            source=dict(doc.get("source") or {}),
            extra={k: v for k, v in doc.items() if k not in known},
        )
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise FormatError(f"{origin}: malformed run file ({exc.__class__.__name__}: {quote(str(exc))})") from None
    try:
        check_record(record)
    except ValueError as exc:
        raise FormatError(f"{origin}: {exc}") from None
    return record


def check_record(record: RunRecord) -> None:
    """ValueError unless the fields every verb relies on hold values latscope can work with.

    The store is data, not trusted code: a run.json edited by hand or written
    by a broken tool must be refused when it is read (and never written), not
    break `ls`, `sql` or `show` for every other run.
    """
    if not is_run_id(record.run_id):
        raise ValueError(f"run_id {quote(record.run_id)} is not a latscope run id")
    created_at(record.created)
    period = record.config.get("period_ns")
    if period is not None and not (_is_int(period) and 1 <= period <= MAX_STORED_PERIOD_NS):
        raise ValueError(f"config.period_ns {quote(period)} is not a period of 1 ns to 1 day")
    count = record.config.get("count")
    if count is not None and not (_is_int(count) and 0 <= count <= MAX_STORED_COUNT):
        raise ValueError(f"config.count {quote(count)} is not a packet count")


def created_at(text: str) -> _dt.datetime:
    """The creation time of a run (its ``created`` field) as an aware UTC datetime; ValueError if it is none."""
    try:
        value = _dt.datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        value = None
    if value is None:
        raise ValueError(f"created {quote(text)} is not an ISO 8601 time")
    return value if value.tzinfo else value.replace(tzinfo=_dt.UTC)


def is_run_id(text: str) -> bool:
    """True for the id forms latscope writes (see RUN_ID)."""
    return isinstance(text, str) and RUN_ID.match(text) is not None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _count(value: Any, what: str) -> int:
    # JSON numbers may be floats (1e3) or absurd (1e400 is inf); a count is a non-negative int64.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not _is_int(value) or not 0 <= value <= MAX_STORED_COUNT:
        raise ValueError(f"{what} {quote(value)} is not a count")
    return value


def load_run_json(path: Path) -> RunRecord:
    """Read and validate ``path`` (a run.json): a regular file of at most MAX_RUN_JSON bytes."""
    try:
        text = read_regular(path, MAX_RUN_JSON).decode("utf-8")
    except FileNotFoundError:
        raise FormatError(f"{path}: run.json is missing") from None
    except OSError as exc:
        raise FormatError(f"{path}: cannot read run.json ({reason(exc)})") from None
    except UnicodeDecodeError as exc:
        raise FormatError(f"{path}: run.json is not UTF-8 (byte {exc.start})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FormatError(f"{path}: corrupt run.json (line {exc.lineno}: {exc.msg})") from None
    except RecursionError:
        raise FormatError(f"{path}: corrupt run.json (nested too deeply)") from None
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
