"""The hive-partitioned layout `latscope monitor` writes (and DuckDB, Spark and Dask read as it is).

::

    DIR/samples/host=<hostname>/date=YYYY-MM-DD/hour=HH/<stream>-<first seq>.parquet
    DIR/intervals/host=<hostname>/date=YYYY-MM-DD/<stream>-<first seq>.parquet

A samples file holds one interval of one stream: the columns of a run's
samples.parquet (store.samples.ARROW_SCHEMA, same magic and version) plus
``run_id``, rows in seq order, every seq from the first to the last once. The
date and hour (UTC) are those of the interval's start; host, date and hour are
in the path only. Files are written through latscope.files (a temporary
``.NAME.*.tmp`` beside the final name, renamed when complete): a reader that
takes ``*.parquet`` never sees half a file.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from latscope.errors import FormatError, StoreError
from latscope.files import atomic_output, reason
from latscope.store.samples import ARROW_SCHEMA, samples_table

SAMPLES_DIR = "samples"
INTERVALS_DIR = "intervals"
MONITOR_SCHEMA = ARROW_SCHEMA.append(pa.field("run_id", pa.string(), nullable=False))
_FILE = re.compile(r"^(\d+)-(\d+)\.parquet$")
_TEMP = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")
#: Rows a row group collects before it is written (bounds the writer's memory: ~80 bytes a row).
ROW_GROUP_ROWS = 65_536

INTERVAL_SCHEMA = pa.schema([
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("stream", pa.int32(), nullable=False),
    pa.field("interval_start_ns", pa.int64(), nullable=False),
    pa.field("interval_end_ns", pa.int64(), nullable=False),
    pa.field("first_seq", pa.int64(), nullable=False),
    pa.field("last_seq", pa.int64(), nullable=False),
    pa.field("packets", pa.int64(), nullable=False),
    pa.field("received", pa.int64(), nullable=False),
    pa.field("lost", pa.int64(), nullable=False),
    pa.field("reordered", pa.int64(), nullable=False),
    pa.field("duplicates", pa.int64(), nullable=False),
    pa.field("foreign", pa.int64(), nullable=False),
    pa.field("late", pa.int64(), nullable=False),
    pa.field("p50_ns", pa.int64()),
    pa.field("p99_ns", pa.int64()),
    pa.field("p999_ns", pa.int64()),
    pa.field("max_ns", pa.int64()),
])


def safe_host(host: str) -> str:
    """A host name as a partition value: what is not [A-Za-z0-9._-] becomes '_'."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", host) or "_"


def _day_hour(start_ns: int) -> tuple[str, str]:
    t = dt.datetime.fromtimestamp(start_ns / 1e9, dt.UTC)
    return t.strftime("%Y-%m-%d"), t.strftime("%H")


def samples_path(root: Path, host: str, start_ns: int, stream: int, first_seq: int) -> Path:
    """Where the samples of the interval starting at ``start_ns`` (first seq ``first_seq``) go."""
    day, hour = _day_hour(start_ns)
    return (root / SAMPLES_DIR / f"host={safe_host(host)}" / f"date={day}" / f"hour={hour}"
            / f"{stream}-{first_seq}.parquet")


def intervals_path(root: Path, host: str, start_ns: int, stream: int, first_seq: int) -> Path:
    """Where the summary row of that interval goes."""
    day, _hour = _day_hour(start_ns)
    return root / INTERVALS_DIR / f"host={safe_host(host)}" / f"date={day}" / f"{stream}-{first_seq}.parquet"


@dataclass(frozen=True)
class StoredTail:
    """The newest samples file of a stream on this host, and the last seq it holds."""

    path: Path
    first_seq: int
    last_seq: int


def last_stored(root: Path, host: str, stream: int) -> StoredTail | None:
    """The newest file of ``stream`` under ``root`` for ``host`` (highest first seq); None when there is none.

    Every file holds its seqs from the first (in its name) on without a gap,
    so the last seq is first + rows - 1; the column's own maximum confirms it.
    """
    base = root / SAMPLES_DIR / f"host={safe_host(host)}"
    best: tuple[int, Path] | None = None
    for path in base.glob(f"date=*/hour=*/{stream}-*.parquet"):
        m = _FILE.match(path.name)
        if m and int(m.group(1)) == stream and (best is None or int(m.group(2)) > best[0]):
            best = (int(m.group(2)), path)
    if best is None:
        return None
    first, path = best
    try:
        meta = pq.ParquetFile(path).metadata
    except (pa.ArrowException, OSError) as exc:
        raise FormatError(f"{path}: not a readable samples file ({exc}); move it away to start over") from None
    rows = meta.num_rows
    if rows == 0:
        raise FormatError(f"{path}: an empty samples file; latscope never writes one")
    seq_col = meta.schema.to_arrow_schema().get_field_index("seq")
    top = None
    for g in range(meta.num_row_groups):
        stats = meta.row_group(g).column(seq_col).statistics
        if stats is not None and stats.has_min_max:
            top = stats.max if top is None else max(top, stats.max)
    last = first + rows - 1
    if top is not None and top != last:
        raise FormatError(f"{path}: seqs {first}..{top} in {rows} rows: not one contiguous interval")
    return StoredTail(path, first, last)


def reap_temporaries(root: Path, host: str) -> list[Path]:
    """Remove the temporary files a killed monitor left under ``root`` for ``host``; the paths removed."""
    removed = []
    for sub in (SAMPLES_DIR, INTERVALS_DIR):
        base = root / sub / f"host={safe_host(host)}"
        for path in base.rglob(".*.tmp") if base.exists() else ():
            if _TEMP.match(path.name) and path.is_file():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                removed.append(path)
    return removed


class SamplesWriter:
    """One interval's samples file, filled block by block, committed whole by ``commit``.

    Rows are buffered up to ROW_GROUP_ROWS and written as a row group; the
    file appears under its name only at ``commit`` (a failure or ``abort``
    leaves nothing).
    """

    def __init__(self, path: Path, run_id: str) -> None:
        self.path = path
        self.run_id = run_id
        self.rows = 0
        self.first_seq: int | None = None
        self.last_seq: int | None = None
        self._pending: list[dict[str, np.ndarray]] = []
        self._pending_rows = 0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {path.parent}: {reason(exc)}") from None
        self._stack = contextlib.ExitStack()
        fh = self._stack.enter_context(atomic_output(path))
        self._writer = pq.ParquetWriter(fh, MONITOR_SCHEMA, compression="zstd")

    def add(self, cols: dict[str, np.ndarray]) -> None:
        """Append rows (the columns of samples.parquet, int64 with MISSING, in seq order, following on)."""
        n = len(cols["seq"])
        if n == 0:
            return
        first = int(cols["seq"][0])
        if self.last_seq is not None and first != self.last_seq + 1:
            raise StoreError(f"{self.path}: rows from seq {first} do not follow {self.last_seq}")
        if self.first_seq is None:
            self.first_seq = first
        self.last_seq = int(cols["seq"][-1])
        self._pending.append(cols)
        self._pending_rows += n
        self.rows += n
        if self._pending_rows >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        merged = {k: np.concatenate([c[k] for c in self._pending]) for k in self._pending[0]}
        self._pending, self._pending_rows = [], 0
        table = samples_table(merged)
        table = table.append_column(MONITOR_SCHEMA.field("run_id"),
                                    pa.array([self.run_id] * table.num_rows, pa.string()))
        self._writer.write_table(table)

    def commit(self) -> None:
        """Write what is buffered and make the file appear under its name."""
        try:
            self._flush()
            self._writer.close()
        except BaseException:
            self._stack.__exit__(StoreError, StoreError("aborted"), None)
            raise
        self._stack.close()

    def abort(self) -> None:
        """Drop the file: nothing appears under its name."""
        with contextlib.suppress(Exception):
            self._writer.close()
        with contextlib.suppress(StoreError):
            self._stack.__exit__(StoreError, StoreError("aborted"), None)


def write_interval_row(path: Path, row: dict[str, object]) -> None:
    """The one-row summary of an interval, atomically."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create {path.parent}: {reason(exc)}") from None
    table = pa.Table.from_pylist([row], schema=INTERVAL_SCHEMA)
    with atomic_output(path) as fh:
        pq.write_table(table, fh, compression="zstd")


def iter_samples_files(root: Path, host: str | None = None) -> Iterator[Path]:
    """Every committed samples file under ``root`` (of ``host``, or of every host), in path order."""
    pattern = f"host={safe_host(host)}" if host is not None else "host=*"
    yield from sorted((root / SAMPLES_DIR).glob(f"{pattern}/date=*/hour=*/*.parquet"))


__all__ = ["INTERVAL_SCHEMA", "MONITOR_SCHEMA", "ROW_GROUP_ROWS", "SamplesWriter", "StoredTail",
           "intervals_path", "iter_samples_files", "last_stored", "reap_temporaries", "safe_host",
           "samples_path", "write_interval_row"]
