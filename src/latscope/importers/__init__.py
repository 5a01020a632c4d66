"""Other tools' measurements -> latscope runs (docs/import.md).

Each importer turns one file into contract columns and says in the run's
``source`` what it stored where, and how the tool's metric differs from
latscope's one-way latency. `import_run` writes the result to the store in
one atomic step: a file that fails to parse leaves the store untouched.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

from latscope.analysis.summary import summarise
from latscope.errors import ConfigError, FormatError
from latscope.importers import csvfile, irtt, isochron, sockperf
from latscope.importers.common import Imported, read_file
from latscope.safetext import check_name, check_tags, printable
from latscope.store.layout import ResultsStore, StoredRun, new_run_id
from latscope.store.runfile import RunRecord
from latscope.store.samples import Samples

#: kind -> (parser, the --metric values it accepts; the first is its default when it has a choice).
KINDS: dict[str, tuple[Callable[..., Imported], tuple[str, ...]]] = {
    "csv": (csvfile.parse, ()),
    "isochron": (isochron.parse, ()),
    "irtt": (irtt.parse, irtt.METRICS),
    "sockperf": (sockperf.parse, sockperf.METRICS),
}
#: kind -> what recognises it from the file's first bytes, before the file is read whole.
SNIFFERS = {"csv": csvfile.sniff, "isochron": isochron.sniff, "irtt": irtt.sniff, "sockperf": sockperf.sniff}
#: Longest error message an import gives: parsers quote the file, and the file may be anything.
MAX_MESSAGE = 400

__all__ = ["KINDS", "Imported", "import_run", "parse_file"]


def parse_file(kind: str, path: str | Path, metric: str | None = None) -> tuple[Imported, dict[str, Any]]:
    """Parse ``path`` as ``kind``: the columns and the file's provenance for run.json; nothing is written."""
    if kind not in KINDS:
        raise ConfigError(f"unknown import kind {kind!r}; known: {', '.join(KINDS)}")
    parser, metrics = KINDS[kind]
    if metric is not None and not metrics:
        raise ConfigError(f"--metric does not apply to {kind} imports (they are one-way already)")
    if metric is not None and metric not in metrics:
        raise ConfigError(f"--metric for {kind} must be one of {', '.join(metrics)}, got {metric!r}")
    try:
        raw = read_file(path, SNIFFERS[kind])
        imported = parser(raw, metric) if metrics else parser(raw)
    except FormatError as exc:
        text = printable(str(exc))
        if len(text) > MAX_MESSAGE:
            raise FormatError(text[:MAX_MESSAGE] + f"... ({len(text)} characters)") from None
        raise
    # Only the provenance outlives parsing: the file's bytes are released here.
    return imported, raw.provenance()


def import_run(store: ResultsStore, kind: str, path: str | Path, *, name: str, tags: tuple[str, ...] = (),
               metric: str | None = None, now: _dt.datetime | None = None) -> StoredRun:
    """Parse ``path`` and store it as a new run; all of it or nothing."""
    check_name(name)
    check_tags(tags)
    imported, provenance = parse_file(kind, path, metric)
    now = now or _dt.datetime.now(_dt.UTC)
    record = build_record(imported, provenance, kind=kind, name=name, tags=tags, now=now)
    return store.save(record, imported.columns)


def build_record(imported: Imported, provenance: dict[str, Any], *, kind: str, name: str,
                 tags: tuple[str, ...], now: _dt.datetime) -> RunRecord:
    """The run.json of an import: the measurement's own start time when the file has one."""
    imported_at = now.isoformat(timespec="milliseconds")
    source = {"kind": "imported", "import_kind": kind, **imported.source, **provenance,
              "imported_at": imported_at, "created_from": "file" if imported.started else "import time"}
    return RunRecord(
        run_id=new_run_id(now),
        name=name,
        tags=tuple(tags),
        created=imported.started or imported_at,
        status="complete",
        config={"topology": "imported", **imported.config},
        environment=imported.environment,
        completeness=imported.counts,
        summary=summarise(Samples(imported.columns), imported.counts),
        source=source,
    )
