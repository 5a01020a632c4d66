"""The store as a dataset: runs and samples in hive-partitioned Parquet that DuckDB, Spark and Dask read as is.

Layout (docs/dataset.md; `latscope monitor` writes the samples part, with ``<stream>-<first seq>.parquet``)::

    DIR/_latscope_dataset.json                                 the schema document (schema_document())
    DIR/samples/host=H/date=YYYY-MM-DD/hour=HH/S-Q-RUN.parquet  a run's packets sent in that UTC hour
    DIR/runs/RUN.parquet                                       one row per run (the `runs` view's columns)

Sample files hold the columns of samples.parquet, then ``run_id`` (the schema and magic of the monitor's
files, store/partitions.py), all int64
nanoseconds without a Parquet timestamp type (Spark reads TIMESTAMP(NANOS)
badly and INT96 lossily; a plain int64 means the same in every engine). The
partition columns live only in the directory names, as hive partitioning
wants. Every file is written atomically; exporting a run again replaces its
files, including those a changed run no longer needs.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from latscope import __version__
from latscope.contract import SAMPLE_COLUMNS, TIME_COLUMNS
from latscope.errors import ConfigError, FormatError, StoreError
from latscope.files import atomic_output, reason, write_atomic
from latscope.safetext import quote
from latscope.store import catalog
from latscope.store.layout import StoredRun
from latscope.store.partitions import INTERVALS_DIR, MONITOR_SCHEMA
from latscope.store.runfile import created_at, parse_run_json
from latscope.store.samples import ARROW_SCHEMA, SAMPLES_MAGIC, SAMPLES_SCHEMA_VERSION
from latscope.store.versioned import check_magic_version, first_line, open_parquet

DATASET_FORMAT = "latscope-dataset"
DATASET_SCHEMA_VERSION = 1
SCHEMA_FILE = "_latscope_dataset.json"
SAMPLES_DIR = "samples"
RUNS_DIR = "runs"
#: Sample files are those `latscope monitor` writes (store/partitions.py): samples.parquet's magic and version.
SAMPLES_FILE_MAGIC = SAMPLES_MAGIC
RUNS_FILE_MAGIC = b"latscope-dataset-runs"
#: Rows per Parquet row group: about 1 hour of a 1 kHz stream per 4 groups; big enough for scans, small
#: enough that a Spark task or a DuckDB thread holds one group at a time in a few tens of MB.
ROW_GROUP_ROWS = 1 << 20
HOUR_NS = 3_600_000_000_000
#: The partition columns, their types (the same in every engine when read as docs/dataset.md says).
PARTITIONS = (("host", "string"), ("date", "string"), ("hour", "int32"))
#: Where a packet's partition time comes from: the first of these that it has (send_ns for measured packets).
PARTITION_TIME = ("send_ns", "sched_ns", "tx_sw_ns", "tx_hw_ns", "rx_hw_ns", "rx_sw_ns", "rx_user_ns", "wake_ns")
UNKNOWN_HOST = "unknown"
_FILE_NAME = re.compile(r"\A(-?\d+)-(-?\d+)-(\d{8}-\d{6}(?:-\d{6})?-[0-9a-f]{6})\.parquet\Z")
_LOCK_FILE = ".latscope-export.lock"

#: samples.parquet's columns, then run_id: the schema of the monitor's files, so one reader reads both.
SAMPLES_FILE_SCHEMA = MONITOR_SCHEMA


# -- names -----------------------------------------------------------------------------------------------------

def partition_value(text: str) -> str:
    """``text`` as a partition value every engine reads back unchanged: [A-Za-z0-9._-], others become ``_``."""
    value = re.sub(r"[^A-Za-z0-9._-]", "_", text)[:200]
    return value if value.strip(".") else UNKNOWN_HOST


def host_of(record: Any) -> str:
    """The partition host of a run: the hostname of the machine that measured it (``unknown`` when not recorded)."""
    before = record.environment.get("before") if isinstance(record.environment, dict) else None
    kernel = before.get("kernel") if isinstance(before, dict) else None
    name = kernel.get("hostname") if isinstance(kernel, dict) else None
    return partition_value(name) if isinstance(name, str) and name else UNKNOWN_HOST


def partition_dir(root: Path, host: str, hour_index: int) -> Path:
    """``root/samples/host=H/date=YYYY-MM-DD/hour=HH`` of the UTC hour ``hour_index`` (hours since the epoch)."""
    when = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC) + _dt.timedelta(hours=hour_index)
    return root / SAMPLES_DIR / f"host={host}" / f"date={when:%Y-%m-%d}" / f"hour={when:%H}"


def samples_file_name(stream: int, first_seq: int, run_id: str) -> str:
    """``<stream>-<first seq>-<run id>.parquet``: the run id keeps runs that share a stream id apart."""
    return f"{stream}-{first_seq}-{run_id}.parquet"


def run_of_file(name: str) -> str | None:
    """The run id in a sample file's name, or None for another name."""
    m = _FILE_NAME.match(name)
    return m.group(3) if m else None


# -- the schema document ----------------------------------------------------------------------------------------

_SAMPLE_MEANINGS = {
    "run_id": "the run the packet belongs to (runs.run_id)",
    "seq": "packet number, from 0 in schedule order",
    "stream": "stream id of the run",
    "flags": "bit 0 lost, bit 1 duplicate, bit 2 reordered, bit 3 send_failed",
}


def _type_name(t: pa.DataType) -> str:
    if pa.types.is_list(t):
        return f"list<{_type_name(t.value_type)}>"
    if pa.types.is_map(t):
        return f"map<{_type_name(t.key_type)},{_type_name(t.item_type)}>"
    if pa.types.is_timestamp(t):
        return f"timestamp[{t.unit}, UTC]"
    return {"large_string": "string", "double": "float64"}.get(str(t), str(t))


def schema_document() -> dict[str, Any]:
    """The content of ``_latscope_dataset.json``: format, version, columns and types, partitioning."""
    samples = [{"name": f.name, "type": _type_name(f.type), "nullable": f.nullable,
                **({"unit": "ns"} if f.name in TIME_COLUMNS else {}),
                "meaning": _SAMPLE_MEANINGS.get(f.name, "CLOCK_REALTIME ns since the epoch; see docs/format.md")}
               for f in SAMPLES_FILE_SCHEMA]
    runs = [{"name": f.name, "type": _type_name(f.type), "nullable": f.nullable} for f in runs_schema()]
    return {
        "format": DATASET_FORMAT,
        "schema_version": DATASET_SCHEMA_VERSION,
        "written_by": f"latscope {__version__}",
        "samples": {
            "path": SAMPLES_DIR,
            "file_name": "<stream>-<first seq>-<run_id>.parquet",
            "partitioning": {
                "flavor": "hive",
                "columns": [{"name": n, "type": t} for n, t in PARTITIONS],
                "time": "UTC date and hour of each packet's send_ns (else the first of "
                        + ", ".join(PARTITION_TIME[1:]) + " it has; else the run's created time)",
            },
            "parquet": {"compression": "zstd", "row_group_rows": ROW_GROUP_ROWS,
                        "metadata": {"magic": SAMPLES_FILE_MAGIC.decode(),
                                     "schema_version": SAMPLES_SCHEMA_VERSION},
                        "timestamps": "plain int64 nanoseconds (no Parquet timestamp type, no INT96)"},
            "columns": samples,
        },
        "runs": {"path": RUNS_DIR, "file_name": "<run_id>.parquet", "columns": runs},
    }


@dataclass(frozen=True)
class Dataset:
    """A dataset directory whose schema document (if any) was checked."""

    root: Path

    @property
    def samples_root(self) -> Path:
        return self.root / SAMPLES_DIR

    @property
    def runs_root(self) -> Path:
        return self.root / RUNS_DIR


def open_dataset(root: Path, *, create: bool = False) -> Dataset:
    """The dataset at ``root``; ConfigError/FormatError when it is not one (or, with ``create``, cannot become one).

    With ``create`` a missing or empty directory becomes a dataset; a directory
    with other content is refused, so that an export never scatters files into
    something that is not a dataset.
    """
    root = Path(root)
    doc_path = root / SCHEMA_FILE
    if root.exists() and not root.is_dir():
        raise ConfigError(f"--dataset {root}: not a directory")
    if doc_path.exists():
        check_schema_document(doc_path)
        return Dataset(root)
    try:
        entries = set(os.listdir(root)) - {_LOCK_FILE} if root.exists() else set()
    except OSError as exc:
        raise StoreError(f"cannot read {root}: {reason(exc)}") from None
    # What `latscope monitor` writes has no schema document (yet): its directories are the layout's own.
    monitor = SAMPLES_DIR in entries and entries <= {SAMPLES_DIR, INTERVALS_DIR, RUNS_DIR}
    if not create and not monitor:
        raise FormatError(f"--dataset {root}: not a latscope dataset (no {SCHEMA_FILE}; "
                          "`latscope export --dataset` writes one)")
    if entries and not monitor:
        raise ConfigError(f"--dataset {root}: the directory holds other files and no {SCHEMA_FILE}; "
                          "give an empty or new directory")
    return Dataset(root)


def check_schema_document(path: Path) -> dict[str, Any]:
    """The parsed schema document; FormatError when it is not ours or too new."""
    from latscope.files import read_regular

    try:
        doc = json.loads(read_regular(path, 1 << 20).decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise FormatError(f"{path}: unreadable schema document ({first_line(exc)})") from None
    if not isinstance(doc, dict) or doc.get("format") != DATASET_FORMAT:
        raise FormatError(f"{path}: not a latscope dataset schema document (format must be {DATASET_FORMAT!r})")
    version = doc.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise FormatError(f"{path}: schema_version must be a positive integer, got {quote(version)}")
    if version > DATASET_SCHEMA_VERSION:
        raise FormatError(f"{path}: dataset schema_version {version} is newer than this latscope supports "
                          f"({DATASET_SCHEMA_VERSION}); upgrade latscope")
    return doc


# -- the runs rows ------------------------------------------------------------------------------------------------

def runs_schema() -> pa.Schema:
    """One row per run: the columns of the `sql` view ``runs``, then ``host`` and the flattened ``config``."""
    names = [*catalog.ROW_KEYS, "path", "run_json"]
    fields = [pa.field(n, catalog.arrow_type(n), nullable=n not in ("run_id", "run_json")) for n in names]
    fields += [pa.field("host", pa.string(), nullable=False), pa.field("config", pa.map_(pa.string(), pa.string()))]
    return pa.schema(fields, metadata={b"magic": RUNS_FILE_MAGIC,
                                       b"schema_version": str(DATASET_SCHEMA_VERSION).encode()})


def flatten_config(config: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Config as (dotted key, text) pairs: nested objects join with dots, strings as they are, the rest as JSON."""
    out: list[tuple[str, str]] = []
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.extend(flatten_config(value, name + "."))
        elif value is not None:
            out.append((name, value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)))
    return out


def runs_row_table(run: StoredRun, host: str) -> pa.Table:
    """The one-row table of a run's runs/RUN.parquet."""
    row = catalog.run_row(StoredRun(Path(run.record.run_id), run.record))
    row.update(path=str(run.path.absolute()), run_json=json.dumps(run.record.to_json(), default=str),
               host=host, config=flatten_config(run.record.config))
    row["created"] = catalog.timestamp(row["created"])
    schema = runs_schema()
    arrays = []
    for f in schema:
        v = row.get(f.name)
        if v is not None and pa.types.is_integer(f.type):
            v = catalog.int64(v)
        arrays.append(pa.array([v], type=f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


# -- export -------------------------------------------------------------------------------------------------------

@dataclass
class Exported:
    """What exporting one run wrote: its host, its sample files and rows, and stale files it removed."""

    run_id: str
    host: str
    files: list[Path] = field(default_factory=list)
    rows: int = 0
    removed: int = 0


@contextlib.contextmanager
def export_lock(dataset: Dataset) -> Iterator[None]:
    """One export at a time per dataset (a second one waits)."""
    try:
        dataset.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(dataset.root / _LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StoreError(f"cannot write the dataset {dataset.root}: {reason(exc)}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def export_runs(dataset: Dataset, runs: Sequence[StoredRun]) -> list[Exported]:
    """Write ``runs`` into ``dataset`` (their samples partitioned, one runs row each) and the schema document.

    Every selected run's samples are checked first (footer, magic, version), so
    a damaged run stops the export before anything is written. Exporting a run
    again replaces its files: the new ones are renamed over the old, then old
    files the new export did not write (its packets moved to other hours, or
    the host changed) are removed.
    """
    ids = [r.record.run_id for r in runs]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ConfigError(f"run {dup[0]} is selected twice (two copies of the same run)")
    for run in runs:
        catalog.check_samples(run)
    out: list[Exported] = []
    with export_lock(dataset):
        existing = _files_by_run(dataset)
        write_atomic(dataset.root / SCHEMA_FILE, json.dumps(schema_document(), indent=2) + "\n")
        for run in runs:
            done = _export_one(dataset, run)
            keep = set(done.files)
            for stale in existing.get(done.run_id, []):
                if stale not in keep:
                    _remove(stale)
                    done.removed += 1
            out.append(done)
    return out


def _export_one(dataset: Dataset, run: StoredRun) -> Exported:
    rec = run.record
    done = Exported(rec.run_id, host_of(rec))
    fallback_hour = _hour_of(int(created_at(rec.created).timestamp() * 1e9))
    pf = open_parquet(run.samples_path, f"run {rec.run_id}: samples.parquet", "samples file", SAMPLES_MAGIC,
                      SAMPLES_SCHEMA_VERSION)
    present = set(pf.schema_arrow.names)
    writers: dict[int, _HourWriter] = {}
    try:
        with contextlib.ExitStack() as stack:
            for batch in pf.iter_batches(batch_size=ROW_GROUP_ROWS, columns=[c for c in SAMPLE_COLUMNS
                                                                             if c in present]):
                table = _contract_table(batch, rec.run_id)
                hours = _hours(table, fallback_hour)
                for hour in _in_order(hours):
                    part = table.filter(pa.array(hours == hour))
                    writer = writers.get(hour)
                    if writer is None:
                        writer = writers[hour] = _HourWriter(
                            stack, partition_dir(dataset.root, done.host, hour) / samples_file_name(
                                int(part["stream"][0].as_py()), int(part["seq"][0].as_py()), rec.run_id))
                    writer.add(part)
                    done.rows += part.num_rows
            for writer in writers.values():
                writer.close()
    except (pa.ArrowException, OSError) as exc:
        if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
            raise StoreError(f"export of run {rec.run_id} failed: {reason(exc)}") from None
        raise FormatError(f"run {rec.run_id}: corrupt samples file ({first_line(exc)})") from None
    finally:
        pf.close()
    done.files = [w.path for w in writers.values()]
    runs_file = dataset.runs_root / f"{rec.run_id}.parquet"
    _mkdir(runs_file.parent)
    with atomic_output(runs_file) as fh:
        pq.write_table(runs_row_table(run, done.host), fh, compression="zstd")
    return done


class _HourWriter:
    """One sample file being written (atomically: it appears complete when the ExitStack closes)."""

    def __init__(self, stack: contextlib.ExitStack, path: Path) -> None:
        self.path = path
        _mkdir(path.parent)
        fh = stack.enter_context(atomic_output(path))
        self.writer = stack.enter_context(pq.ParquetWriter(fh, SAMPLES_FILE_SCHEMA, compression="zstd"))
        self.pending: list[pa.Table] = []
        self.pending_rows = 0

    def add(self, table: pa.Table) -> None:
        # Whole row groups of ROW_GROUP_ROWS: the batches arrive cut at hour boundaries.
        self.pending.append(table)
        self.pending_rows += table.num_rows
        if self.pending_rows >= ROW_GROUP_ROWS:
            whole = pa.concat_tables(self.pending)
            cut = (whole.num_rows // ROW_GROUP_ROWS) * ROW_GROUP_ROWS
            self.writer.write_table(whole.slice(0, cut), row_group_size=ROW_GROUP_ROWS)
            rest = whole.slice(cut)
            self.pending, self.pending_rows = ([rest] if rest.num_rows else []), rest.num_rows

    def close(self) -> None:
        if self.pending_rows:
            self.writer.write_table(pa.concat_tables(self.pending), row_group_size=ROW_GROUP_ROWS)
        self.pending, self.pending_rows = [], 0


def _contract_table(batch: pa.RecordBatch, run_id: str) -> pa.Table:
    n = batch.num_rows
    arrays = []
    for f in ARROW_SCHEMA:
        if f.name in batch.schema.names:
            arrays.append(batch.column(f.name).cast(f.type))
        else:  # a samples file of version 1: no far_* columns
            arrays.append(pa.nulls(n, type=f.type))
    arrays.append(pa.array(np.full(n, run_id, dtype=object), type=pa.string()))
    return pa.Table.from_arrays(arrays, schema=SAMPLES_FILE_SCHEMA)


def _hours(table: pa.Table, fallback_hour: int) -> np.ndarray:
    """Each row's UTC hour since the epoch, from its partition time."""
    when = pc.coalesce(*(table[c] for c in PARTITION_TIME))
    t = pc.fill_null(when, fallback_hour * HOUR_NS).to_numpy().astype(np.int64, copy=False)
    return t // HOUR_NS  # floor division: times before 1970 go to the hour they are in


def _hour_of(ns: int) -> int:
    return ns // HOUR_NS


def _in_order(hours: np.ndarray) -> list[int]:
    """The distinct hours of a batch in the order they first occur."""
    values, first = np.unique(hours, return_index=True)
    return [int(values[i]) for i in np.argsort(first)]


def _files_by_run(dataset: Dataset) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for path in sample_files(dataset):
        run_id = run_of_file(path.name)
        if run_id is not None:
            out.setdefault(run_id, []).append(path)
    return out


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StoreError(f"cannot remove the replaced file {path}: {reason(exc)}") from None
    # Empty hour/date/host directories of a replaced run go too; rmdir fails on the others.
    parent = path.parent
    for _ in range(3):
        try:
            parent.rmdir()
        except OSError:
            return
        parent = parent.parent


def _mkdir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create {path}: {reason(exc)}") from None


# -- reading ------------------------------------------------------------------------------------------------------

def sample_files(dataset: Dataset) -> list[Path]:
    """Every sample file of the layout (host=*/date=*/hour=*/*.parquet), sorted; hidden and temporary names are not."""
    out: list[Path] = []
    base = dataset.samples_root
    for level1 in _subdirs(base, "host="):
        for level2 in _subdirs(level1, "date="):
            for level3 in _subdirs(level2, "hour="):
                with contextlib.suppress(OSError), os.scandir(level3) as it:
                    out.extend(Path(e.path) for e in it if e.name.endswith(".parquet")
                               and not e.name.startswith((".", "_")) and e.is_file())
    return sorted(out)


def _subdirs(path: Path, prefix: str) -> list[Path]:
    try:
        with os.scandir(path) as it:
            return sorted(Path(e.path) for e in it if e.name.startswith(prefix) and e.is_dir())
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StoreError(f"cannot list {path}: {reason(exc)}") from None


def check_sample_file(path: Path) -> None:
    """FormatError unless ``path`` is an intact dataset sample file (footer, magic, version, columns)."""
    pf = open_parquet(path, str(path), "dataset sample file", SAMPLES_FILE_MAGIC, SAMPLES_SCHEMA_VERSION)
    names = pf.schema_arrow.names
    pf.close()
    missing = [c for c in ("run_id", *SAMPLE_COLUMNS) if c not in names]
    if missing:
        raise FormatError(f"{path}: lacks column(s) {', '.join(missing)}")


def read_runs(dataset: Dataset) -> tuple[pa.Table, list[tuple[Path, str]]]:
    """The runs rows of every runs/RUN.parquet, and (path, reason) for those that cannot be read."""
    tables: list[pa.Table] = []
    bad: list[tuple[Path, str]] = []
    schema = runs_schema()
    try:
        paths = sorted(p for p in dataset.runs_root.glob("*.parquet") if not p.name.startswith((".", "_")))
    except OSError as exc:
        raise StoreError(f"cannot list {dataset.runs_root}: {reason(exc)}") from None
    for path in paths:
        try:
            pf = open_parquet(path, str(path), "dataset runs file", RUNS_FILE_MAGIC, DATASET_SCHEMA_VERSION)
            try:
                table = pf.read()
            finally:
                pf.close()
            check_magic_version(table.schema.metadata, str(path), "dataset runs file", RUNS_FILE_MAGIC,
                                DATASET_SCHEMA_VERSION)
            tables.append(table.select(schema.names).cast(schema))
        except (FormatError, pa.ArrowException, KeyError, ValueError) as exc:
            bad.append((path, first_line(exc)))
    if not tables:
        return schema.empty_table(), bad
    return pa.concat_tables(tables), bad


def stored_runs(table: pa.Table) -> tuple[list[StoredRun], list[tuple[str, str]]]:
    """The runs rows as StoredRun records (for the `ls --where` filters), and (run_id, reason) of unparsable ones."""
    out: list[StoredRun] = []
    bad: list[tuple[str, str]] = []
    for run_id, text in zip(table["run_id"].to_pylist(), table["run_json"].to_pylist(), strict=True):
        try:
            out.append(StoredRun(Path(run_id), parse_run_json(json.loads(text), f"run {run_id}")))
        except (FormatError, json.JSONDecodeError, RecursionError, TypeError) as exc:
            bad.append((str(run_id), first_line(exc)))
    return out, bad


def _quote_sql(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


#: DuckDB's read_parquet arguments for a dataset: hive partitioning with the declared types.
HIVE_TYPES = "{'host': VARCHAR, 'date': VARCHAR, 'hour': INTEGER}"


def samples_sql(files: Sequence[str], run_ids: Sequence[str] | None) -> str:
    """The SELECT behind the ``samples`` view over dataset files: store's columns, then host, date, hour."""
    raw = ", ".join(("seq", "stream", *TIME_COLUMNS, "flags"))
    # Ties in arrival time go in seq order (row order within a run's own samples.parquet, which is seq order
    # for every measured run); a run spans several files here, so rows are told apart by run, not by file.
    derived = catalog.derived_sql(run="run_id", row="seq")
    if not files:
        typed = ", ".join(["NULL::VARCHAR AS run_id", "NULL::BIGINT AS seq", "NULL::INTEGER AS stream",
                           *(f"NULL::BIGINT AS {c}" for c in TIME_COLUMNS), "NULL::INTEGER AS flags",
                           "NULL::VARCHAR AS host", "NULL::VARCHAR AS date", "NULL::INTEGER AS hour"])
        source = f"(SELECT {typed} WHERE false)"
    else:
        listed = ", ".join(_quote_sql(f) for f in files)
        source = f"read_parquet([{listed}], hive_partitioning = true, hive_types = {HIVE_TYPES}, union_by_name = true)"
    where = ""
    if run_ids is not None:
        where = " WHERE run_id IN (" + (", ".join(_quote_sql(r) for r in run_ids) or "NULL") + ")"
    return f"SELECT run_id, {raw}, host, date, hour, {derived} FROM {source}{where}"


def connect(dataset: Dataset, filters: Sequence[catalog.Filter] = (), *, skip_bad: bool = False,
            temp_dir: str | None = None) -> tuple[Any, list[catalog.Skipped]]:
    """A confined DuckDB connection with the views ``runs`` and ``samples`` over the dataset.

    ``filters`` (`ls --where`) select runs by their run.json as in the store.
    Unreadable runs rows and damaged sample files raise FormatError, or with
    ``skip_bad`` are left out and listed.
    """
    skipped: list[catalog.Skipped] = []
    table, bad_rows = read_runs(dataset)
    records, bad_json = stored_runs(table)
    problems = [(str(p), why) for p, why in bad_rows] + bad_json
    if problems and not skip_bad:
        raise FormatError(f"{problems[0][0]}: {problems[0][1]}; pass --skip-bad to query the others")
    skipped += [catalog.Skipped(name, why) for name, why in problems]
    selected: set[str] | None = None
    if filters:
        selected = {r.record.run_id for r in catalog.select(records, filters)}
        keep = pa.array([r in selected for r in table["run_id"].to_pylist()], type=pa.bool_())
        table = table.filter(keep)
    files: list[str] = []
    for path in sample_files(dataset):
        run_id = run_of_file(path.name)
        if selected is not None and run_id is not None and run_id not in selected:
            continue
        try:
            check_sample_file(path)
        except FormatError as exc:
            if not skip_bad:
                raise FormatError(f"{exc}; pass --skip-bad to query the other files") from None
            skipped.append(catalog.Skipped(run_id or path.name, str(exc)))
            continue
        files.append(str(path.absolute()))
    samples = samples_sql(files, sorted(selected) if selected is not None else None)
    return catalog.open_views(table, samples, files, temp_dir), skipped
