"""The parsed trace: one columnar table of events, whatever format it came from.

Every event is a row: when (``ts``, ns on the trace clock), where (``cpu``),
who (``pid``, ``comm``), what (``event``), the interrupt context it ran in
(``ctx``), and up to five numbers and two strings whose meaning depends on
the event (latscope.trace.fields lists them). Strings are ids into one shared
string table so a two-million-row table holds a few hundred distinct strings.

Stored as ``trace/events.parquet`` in a run directory, with its magic and
schema version in the Parquet metadata like every latscope file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from latscope.errors import FormatError
from latscope.files import atomic_output
from latscope.store.versioned import open_parquet

EVENTS_MAGIC = b"latscope-trace-events"
EVENTS_SCHEMA_VERSION = 1
#: Missing numeric field (same sentinel as the samples).
NONE = np.iinfo(np.int64).min
NUM_FIELDS = ("a0", "a1", "a2", "a3", "a4")
STR_FIELDS = ("s0", "s1")

#: ctx values: the kernel's hardirq/softirq flag character of the event, or 0 when unknown.
CTX_HARDIRQ = ord("h")
CTX_SOFTIRQ = ord("s")


@dataclass(frozen=True)
class EventTable:
    """Columns of a parsed trace, sorted by ``ts`` (stable, so per-CPU order is kept)."""

    ts: np.ndarray            # int64 ns on the trace clock
    cpu: np.ndarray           # int16
    pid: np.ndarray           # int32
    comm: np.ndarray          # int32 id into strings
    event: np.ndarray         # int16 id into event_names
    ctx: np.ndarray           # uint8
    nums: np.ndarray          # int64 (n, 5): a0..a4, NONE where absent
    strs: np.ndarray          # int32 (n, 2): s0, s1 ids into strings, -1 where absent
    event_names: tuple[str, ...]
    strings: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ts)

    def code(self, name: str) -> int:
        """The event id of ``name`` in this table, -1 if the trace has none."""
        try:
            return self.event_names.index(name)
        except ValueError:
            return -1

    def rows(self, *names: str) -> np.ndarray:
        """Row indices of the events called any of ``names``, in time order."""
        codes = [c for c in (self.code(n) for n in names) if c >= 0]
        if not codes:
            return np.zeros(0, dtype=np.int64)
        if len(codes) == 1:
            return np.flatnonzero(self.event == codes[0])
        return np.flatnonzero(np.isin(self.event, codes))

    def string(self, sid: int) -> str:
        """The string with id ``sid`` ('' for -1)."""
        return self.strings[sid] if 0 <= sid < len(self.strings) else ""

    def string_id(self, text: str) -> int:
        """Id of ``text`` in the string table, -1 when absent."""
        try:
            return self.strings.index(text)
        except ValueError:
            return -1

    def counts(self) -> dict[str, int]:
        """Events per name, most frequent first."""
        c = np.bincount(self.event, minlength=len(self.event_names))
        order = np.argsort(-c, kind="stable")
        return {self.event_names[i]: int(c[i]) for i in order if c[i]}

    def with_meta(self, **kw: Any) -> EventTable:
        return replace(self, meta={**self.meta, **kw})

    def shifted(self, offset_ns: int) -> EventTable:
        """The same events with ``offset_ns`` added to every timestamp (trace clock -> probe clock)."""
        return replace(self, ts=self.ts + np.int64(offset_ns))


def empty_table(meta: dict[str, Any] | None = None) -> EventTable:
    return EventTable(
        ts=np.zeros(0, np.int64), cpu=np.zeros(0, np.int16), pid=np.zeros(0, np.int32),
        comm=np.zeros(0, np.int32), event=np.zeros(0, np.int16), ctx=np.zeros(0, np.uint8),
        nums=np.full((0, len(NUM_FIELDS)), NONE, np.int64), strs=np.full((0, len(STR_FIELDS)), -1, np.int32),
        event_names=(), strings=(), meta=dict(meta or {}),
    )


def sort_by_time(t: EventTable) -> EventTable:
    """Rows in time order; ties keep input order (the order the kernel printed them)."""
    if len(t) < 2 or bool(np.all(t.ts[1:] >= t.ts[:-1])):
        return t
    o = np.argsort(t.ts, kind="stable")
    return replace(t, ts=t.ts[o], cpu=t.cpu[o], pid=t.pid[o], comm=t.comm[o], event=t.event[o], ctx=t.ctx[o],
                   nums=t.nums[o], strs=t.strs[o])


# -- Parquet --------------------------------------------------------------

#: Rows per row group, at most: readers skip groups by their ``ts`` statistics.
ROW_GROUP_ROWS = 1 << 20
#: String columns: dictionary-encoded ids into the table's strings (the rest gain nothing from a dictionary).
DICT_COLUMNS = ("comm", "event", "s0", "s1")
#: zstd level 1 compresses these columns within a few percent of the default level at half its CPU;
#: min/max statistics only on ts (what readers skip by).
PARQUET_OPTIONS: dict[str, Any] = {"compression": "zstd", "compression_level": 1,
                                   "use_dictionary": list(DICT_COLUMNS), "write_statistics": ["ts"]}


def _file_meta(meta: dict[str, Any]) -> dict[bytes, bytes]:
    return {b"magic": EVENTS_MAGIC, b"schema_version": str(EVENTS_SCHEMA_VERSION).encode(),
            b"latscope_meta": json.dumps(meta, default=str).encode()}


def _arrow(t: EventTable) -> pa.Table:
    """The Arrow table of ``t``: its strings and event names as the dictionaries of the id columns."""
    strings = pa.array(list(t.strings) or [""], type=pa.string())
    names = pa.array(list(t.event_names) or [""], type=pa.string())

    def dict_col(ids: np.ndarray, dictionary: pa.Array) -> pa.DictionaryArray:
        ids = ids.astype(np.int32, copy=False)
        mask = ids < 0
        return pa.DictionaryArray.from_arrays(pa.array(np.where(mask, 0, ids), pa.int32(),
                                                       mask=mask if mask.any() else None), dictionary)

    cols: dict[str, pa.Array] = {
        "ts": pa.array(t.ts, pa.int64()),
        "cpu": pa.array(t.cpu, pa.int16()),
        "pid": pa.array(t.pid, pa.int32()),
        "comm": dict_col(t.comm, strings),
        "event": dict_col(t.event.astype(np.int32), names),
        "ctx": pa.array(t.ctx, pa.uint8()),
    }
    for k, name in enumerate(NUM_FIELDS):
        col = np.ascontiguousarray(t.nums[:, k])
        mask = col == NONE
        cols[name] = pa.array(col, pa.int64(), mask=mask if mask.any() else None)
    for k, name in enumerate(STR_FIELDS):
        cols[name] = dict_col(t.strs[:, k], strings)
    return pa.table(cols)


def write_table(t: EventTable, path: Path) -> None:
    """Write ``t`` as Parquet (zstd), strings dictionary-encoded, via a temporary name."""
    table = _arrow(t).replace_schema_metadata(_file_meta(t.meta))
    with atomic_output(path) as fh:
        pq.write_table(table, fh, row_group_size=ROW_GROUP_ROWS, **PARQUET_OPTIONS)


class TableWriter:
    """events.parquet written a slice of rows at a time (the slices in time order), via a temporary name.

    Each ``write`` adds the rows as row groups of at most ROW_GROUP_ROWS
    (each with the dictionaries of its slice); ``close(meta)``
    stores the table's final metadata (the file's key-value metadata, which
    read_table prefers to the schema's, written with ``start_meta`` before
    any row). Nothing appears under ``path`` unless ``close`` succeeds.
    """

    def __init__(self, path: Path, start_meta: dict[str, Any]) -> None:
        self.rows = 0
        self._cm = atomic_output(path)
        fh = self._cm.__enter__()
        try:
            schema = _arrow(empty_table()).schema.with_metadata(_file_meta(start_meta))
            self._schema = schema
            self._writer = pq.ParquetWriter(fh, schema, **PARQUET_OPTIONS)
        except BaseException as exc:
            self._cm.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self._open = True

    def write(self, t: EventTable) -> None:
        """The rows of ``t`` (which come after every row written so far), as one or more row groups."""
        if len(t) == 0:
            return
        table = _arrow(t).replace_schema_metadata(self._schema.metadata)
        self._writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
        self.rows += len(t)

    def close(self, meta: dict[str, Any]) -> None:
        if not self._open:
            return
        self._open = False
        try:
            self._writer.add_key_value_metadata({"latscope_meta": json.dumps(meta, default=str)})
            self._writer.close()
        except BaseException as exc:
            self._cm.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self._cm.__exit__(None, None, None)

    def abort(self) -> None:
        """Discard the file (nothing is left under its name or the temporary one)."""
        if not self._open:
            return
        self._open = False
        try:
            self._writer.close()
        except (pa.ArrowException, OSError):
            pass
        err = FormatError("trace table discarded")
        self._cm.__exit__(FormatError, err, None)


def read_table(path: Path, rows: np.ndarray | None = None) -> EventTable:
    """Read events.parquet, checking magic and version.

    Row group by row group into preallocated columns, so the peak is the
    table plus one decoded row group. ``rows`` (sorted, unique row numbers of
    the file) reads only those rows: row groups without any are not decoded.
    The table is the file's rows (or the selected ones) in file order; string
    and event ids are assigned in the order the row groups name them.
    """
    pf = open_parquet(path, str(path), "trace table", EVENTS_MAGIC, EVENTS_SCHEMA_VERSION)
    try:
        return _read_groups(pf, rows)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise FormatError(f"{path}: corrupt trace table ({exc})") from None


def file_meta(pf: pq.ParquetFile) -> dict[str, Any]:
    """The table's latscope metadata: written a slice at a time (TableWriter), the final copy is the
    file's key-value metadata; the schema's was written first, before the parse counts were known."""
    raw = (pf.metadata.metadata or {}).get(b"latscope_meta") or \
        (pf.schema_arrow.metadata or {}).get(b"latscope_meta", b"{}")
    meta: dict[str, Any] = json.loads(raw)
    return meta


def row_group_bounds(pf: pq.ParquetFile) -> np.ndarray:
    """First row of each row group of ``pf``, and the row count last."""
    md = pf.metadata
    return np.concatenate([[0], np.cumsum([md.row_group(g).num_rows for g in range(md.num_row_groups)])]
                          ).astype(np.int64)


def _read_groups(pf: pq.ParquetFile, rows: np.ndarray | None) -> EventTable:
    meta = file_meta(pf)
    bounds = row_group_bounds(pf)
    if rows is not None:
        rows = np.asarray(rows, np.int64)
        if len(rows) and (rows[0] < 0 or rows[-1] >= bounds[-1] or np.any(np.diff(rows) <= 0)):
            raise ValueError("rows must be sorted, unique row numbers of the file")
    n = int(bounds[-1]) if rows is None else len(rows)
    ts = np.empty(n, np.int64)
    cpu = np.empty(n, np.int16)
    pid = np.empty(n, np.int32)
    comm = np.empty(n, np.int32)
    event = np.empty(n, np.int16)
    ctx = np.empty(n, np.uint8)
    nums = np.empty((n, len(NUM_FIELDS)), np.int64)
    strs = np.empty((n, len(STR_FIELDS)), np.int32)
    strings: dict[str, int] = {}
    events: dict[str, int] = {}
    pos = 0
    for g in range(len(bounds) - 1):
        if rows is None:
            take = None
        else:
            lo, hi = np.searchsorted(rows, [bounds[g], bounds[g + 1]])
            if hi == lo:
                continue
            take = rows[lo:hi] - bounds[g]
        table = pf.read_row_group(g)
        k = table.num_rows if take is None else len(take)
        if take is not None:
            table = table.take(pa.array(take))
        out = slice(pos, pos + k)
        ts[out] = table.column("ts").to_numpy()
        cpu[out] = table.column("cpu").to_numpy()
        pid[out] = table.column("pid").to_numpy()
        ctx[out] = table.column("ctx").to_numpy()
        comm[out] = dictionary_ids(table.column("comm"), strings)
        event[out] = dictionary_ids(table.column("event"), events)
        for j, name in enumerate(NUM_FIELDS):
            nums[out, j] = table.column(name).fill_null(NONE).to_numpy()
        for j, name in enumerate(STR_FIELDS):
            strs[out, j] = dictionary_ids(table.column(name), strings)
        pos += k
    return EventTable(
        ts=ts, cpu=cpu, pid=pid, comm=comm, event=event, ctx=ctx, nums=nums, strs=strs,
        event_names=tuple(sorted(events, key=events.__getitem__)),
        strings=tuple(sorted(strings, key=strings.__getitem__)),
        meta=meta,
    )


def dictionary_ids(col: pa.ChunkedArray, table_strings: dict[str, int]) -> np.ndarray:
    """A dictionary column as ids into ``table_strings`` (new strings added), -1 for nulls."""
    parts = [np.zeros(0, np.int32)]
    for chunk in col.chunks:
        if not isinstance(chunk, pa.DictionaryArray):
            chunk = chunk.dictionary_encode()
        d = chunk.dictionary.to_pylist()
        remap = np.array([table_strings.setdefault(s, len(table_strings)) for s in d] or [0], np.int32)
        idx = chunk.indices.to_numpy(zero_copy_only=False)
        valid = ~np.asarray(chunk.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        out = np.full(len(chunk), -1, np.int32)
        out[valid] = remap[idx[valid].astype(np.int64)]
        parts.append(out)
    return np.concatenate(parts)
