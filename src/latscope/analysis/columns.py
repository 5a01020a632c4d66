"""Column-at-a-time access to samples.parquet, for runs too large to load whole.

A 10-million-packet run holds eleven 80 MB columns; loading all of them at once
(and converting nulls with a second copy) costs more than 2 GB. The analysis
verbs need only a few columns at a time, so they read each one when a metric
asks for it, one row group at a time straight into a preallocated array, and
drop it when the metric is done. Columns that are null in every row (no
hardware timestamps, the usual case) cost no memory at all: they are a
read-only broadcast of ``MISSING``.

The file is validated (magic, version) by the store's own reader first, so
this module adds speed, not a second notion of what a valid file is.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from latscope.errors import FormatError
from latscope.store.samples import MISSING, SAMPLE_COLUMNS, SAMPLES_MAGIC, SAMPLES_SCHEMA_VERSION, TIME_COLUMNS
from latscope.store.versioned import open_parquet

#: Rows to read: every row (None), a contiguous range, or explicit row indices.
Rows = slice | np.ndarray | None


class ColumnReader:
    """Reads single columns of one samples.parquet, optionally restricted to some rows."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        # Regular file, magic, version, readability: the store decides.
        self._file = open_parquet(self.path, str(self.path), "samples file", SAMPLES_MAGIC, SAMPLES_SCHEMA_VERSION)
        meta = self._file.metadata
        self.num_rows = int(meta.num_rows)
        self._present = set(self._file.schema_arrow.names)
        self._group_rows = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        self._group_start = np.concatenate(([0], np.cumsum(self._group_rows))).astype(np.int64)

    @property
    def group_edges(self) -> np.ndarray:
        """First row of each row group, and the row count at the end."""
        return self._group_start

    def read(self, name: str, rows: Rows = None) -> np.ndarray:
        """Column ``name`` (int64 with ``MISSING`` for null timestamps) for ``rows``."""
        if name not in SAMPLE_COLUMNS:
            raise FormatError(f"{self.path}: unknown samples column {name!r}")
        start, stop, index = _bounds(rows, self.num_rows)
        n = stop - start
        if name not in self._present or self._all_null(name):
            fill = MISSING if name in TIME_COLUMNS else 0
            full = np.broadcast_to(np.int64(fill), (n,))
            return full if index is None else np.broadcast_to(np.int64(fill), (len(index),))
        out = np.empty(n, dtype=np.int64)
        for g, (g0, g1) in enumerate(zip(self._group_start[:-1], self._group_start[1:], strict=True)):
            lo, hi = max(start, int(g0)), min(stop, int(g1))
            if lo >= hi:
                continue
            try:
                col = self._file.read_row_group(g, columns=[name]).column(0)
            except (pa.ArrowException, OSError) as exc:
                raise FormatError(f"{self.path}: corrupt samples file ({_first_line(exc)})") from None
            _fill(out[lo - start:hi - start], col, lo - int(g0))
        return out if index is None else out[index - start]

    def read_many(self, names: Iterable[str], rows: slice) -> dict[str, np.ndarray]:
        """Several columns of a contiguous range in one Parquet call (decoded in parallel by Arrow)."""
        names = list(dict.fromkeys(names))
        lazy = {n for n in names if n not in self._present or self._all_null(n)}
        real = [n for n in names if n not in lazy]
        out = {n: self.read(n, rows) for n in lazy}
        start, stop, _ = _bounds(rows, self.num_rows)
        groups = [g for g, (g0, g1) in enumerate(zip(self._group_start[:-1], self._group_start[1:], strict=True))
                  if g0 < stop and g1 > start]
        if not real:
            return out
        if len(groups) != 1:
            out.update({n: self.read(n, rows) for n in real})
            return out
        g = groups[0]
        try:
            table = self._file.read_row_group(g, columns=real)
        except (pa.ArrowException, OSError) as exc:
            raise FormatError(f"{self.path}: corrupt samples file ({_first_line(exc)})") from None
        skip = start - int(self._group_start[g])
        for n in real:
            col = np.empty(stop - start, dtype=np.int64)
            _fill(col, table.column(n), skip)
            out[n] = col
        return out

    def _all_null(self, name: str) -> bool:
        # Row-group statistics say "all null" without decompressing anything.
        meta = self._file.metadata
        idx = self._file.schema_arrow.get_field_index(name)
        for g in range(meta.num_row_groups):
            stats = meta.row_group(g).column(idx).statistics
            if stats is None or stats.null_count != meta.row_group(g).num_rows:
                return False
        return meta.num_row_groups > 0


def _bounds(rows: Rows, n: int) -> tuple[int, int, np.ndarray | None]:
    """The contiguous [start, stop) that covers ``rows``, and indices into it when not contiguous."""
    if rows is None:
        return 0, n, None
    if isinstance(rows, slice):
        start, stop, step = rows.indices(n)
        if step != 1:
            raise ValueError("row slices must be contiguous")
        return start, max(start, stop), None
    index = np.asarray(rows, dtype=np.int64)
    if len(index) == 0:
        return 0, 0, index
    start, stop = int(index.min()), int(index.max()) + 1
    return start, stop, index


def _fill(out: np.ndarray, col: pa.ChunkedArray, skip: int) -> None:
    """Copy ``len(out)`` values of ``col`` from row ``skip`` into ``out``, nulls as MISSING."""
    pos = 0
    need = len(out)
    for chunk in col.chunks:
        if pos >= need:
            break
        if skip >= len(chunk):
            skip -= len(chunk)
            continue
        part = chunk.slice(skip, min(len(chunk) - skip, need - pos))
        skip = 0
        values = part.to_numpy(zero_copy_only=False) if part.null_count == 0 else None
        if values is None:
            # Null slots hold arbitrary bytes in the value buffer; the validity bitmap says which.
            valid = part.is_valid().to_numpy(zero_copy_only=False)
            values = part.fill_null(0).to_numpy(zero_copy_only=False)
            seg = out[pos:pos + len(part)]
            seg[:] = values
            seg[~valid] = MISSING
        else:
            out[pos:pos + len(part)] = values
        pos += len(part)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


class LazyColumns:
    """A Samples-like mapping that reads a column on first use and forgets it on ``keep_only``.

    The metric functions only index ``samples[name]``, so they run unchanged on
    this object; the caller decides which columns stay in memory between metrics.
    """

    def __init__(self, reader: ColumnReader, rows: Rows = None) -> None:
        self.reader = reader
        self.rows = rows
        self._cache: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        start, stop, index = _bounds(self.rows, self.reader.num_rows)
        return len(index) if index is not None else stop - start

    def __getitem__(self, name: str) -> np.ndarray:
        col = self._cache.get(name)
        if col is None:
            col = self.reader.read(name, self.rows)
            self._cache[name] = col
        return col

    def read(self, name: str) -> np.ndarray:
        """Column ``name`` for the selected rows, without keeping it in the cache."""
        return self._cache[name] if name in self._cache else self.reader.read(name, self.rows)

    def owned(self, name: str) -> np.ndarray:
        """Column ``name`` for the selected rows as a fresh, writable array the caller may modify."""
        col = self.read(name)
        return col if name not in self._cache and col.flags.writeable and col.flags.owndata else np.array(col)

    def chunks(self) -> Iterator[tuple[int, int, LazyColumns]]:
        """(start, stop, columns of those rows) over the selection, one Parquet row group at a time.

        Row-local metrics computed chunk by chunk need a few megabytes of
        temporaries instead of several full columns. A selection of scattered
        rows (non-monotonic time) comes as one chunk.
        """
        if self.rows is not None and not isinstance(self.rows, slice):
            yield 0, len(self), self
            return
        start, stop, _ = _bounds(self.rows, self.reader.num_rows)
        edges = [start] + [int(e) for e in self.reader.group_edges if start < e < stop] + [stop]
        for lo, hi in itertools.pairwise(edges):
            yield lo - start, hi - start, LazyColumns(self.reader, slice(lo, hi))

    def prefetch(self, names: Iterable[str]) -> None:
        """Read the missing ones of ``names`` together (one call per row group, in parallel)."""
        missing = [n for n in names if n not in self._cache]
        if not missing:
            return
        if self.rows is None or isinstance(self.rows, slice):
            self._cache.update(self.reader.read_many(missing, self.rows or slice(0, self.reader.num_rows)))
        else:
            for n in missing:
                self[n]

    def keep_only(self, names: Iterable[str]) -> None:
        """Drop every cached column not in ``names``, so its memory can be reused."""
        keep = set(names)
        for name in [n for n in self._cache if n not in keep]:
            del self._cache[name]
