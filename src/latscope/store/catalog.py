"""The catalog of stored runs: filters for `ls --where`, and DuckDB views for `sql` (docs/ls.md, docs/sql.md).

Filters read only run.json. The SQL views read the samples where they lie:
DuckDB scans the Parquet files directly, so a query touches only the columns
(and, for ``WHERE run_id = ...``, only the files) it needs, and nothing is
loaded into Python first.
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import json
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from latscope.contract import PERCENTILES
from latscope.errors import ConfigError, FormatError, LatscopeError
from latscope.store.layout import StoredRun
from latscope.store.samples import SAMPLES_MAGIC, SAMPLES_SCHEMA_VERSION, TIME_COLUMNS
from latscope.store.versioned import open_parquet

# -- the flat view of a run ---------------------------------------------------

#: Summary metrics whose statistics the ``runs`` row carries, and the statistics.
ROW_METRICS = ("latency", "delta", "wakeup_latency", "sender_latency", "path_delay", "arrival_latency", "e2e")
ROW_STATS = ("count", "min", "avg", *PERCENTILES, "max", "stddev")
PACKET_KEYS = ("sent", "received", "lost", "duplicated", "reordered")


def run_row(run: StoredRun) -> dict[str, Any]:
    """One flat row per run: identity, source, packet counts and summary statistics (µs)."""
    rec = run.record
    pk = rec.summary.get("packets") or {}
    row: dict[str, Any] = {
        "run_id": run.path.name,
        "name": rec.name,
        "tags": list(rec.tags),
        "created": rec.created,
        "status": rec.status,
        "source": rec.source.get("kind"),
        "tool": rec.source.get("tool"),
        "metric": rec.source.get("metric"),
        "period_ns": _num(rec.config.get("period_ns")),
        "duration_s": _num(rec.summary.get("duration_ns"), 1e-9),
    }
    row.update({k: _num(pk.get(k)) for k in PACKET_KEYS})
    for metric in ROW_METRICS:
        stats = rec.summary.get(f"{metric}_us") or {}
        for stat in ROW_STATS:
            row[f"{metric}_{stat}" + ("" if stat == "count" else "_us")] = _num(stats.get(stat))
    return row


def _num(value: Any, scale: float = 1.0) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value * scale if scale != 1.0 else value


# -- filters -------------------------------------------------------------------

_FILTER = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.\-]*)\s*(!=|<=|>=|=|<|>|~)\s*(.*?)\s*$")
_ALIASES = {"id": "run_id", "tags": "tag", "kind": "source"}
_UNIT_SCALE = {"_us": 1e-3, "_ns": 1.0, "_s": 1e-9}


@dataclass(frozen=True)
class Filter:
    """KEY OP VALUE from `--where`: = and != match globs, ~ a regular expression, < <= > >= compare."""

    key: str
    op: str
    value: str

    def matches(self, run: StoredRun) -> bool:
        """True when ``run`` passes; a run without the key passes only `!=`."""
        found = lookup(run, self.key)
        values = found if isinstance(found, list) else [found]
        values = [v for v in values if v is not None]
        if self.op == "!=":
            return not any(self._equal(v) for v in values)
        return any(self._test(v) for v in values)

    def _equal(self, v: Any) -> bool:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            target = self._number()
            return target is not None and v == target
        return fnmatch.fnmatchcase(_text(v), self.value)

    def _test(self, v: Any) -> bool:
        if self.op == "=":
            return self._equal(v)
        if self.op == "~":
            return re.search(self.value, _text(v)) is not None
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            target = self._number()
            if target is None:
                raise ConfigError(f"--where {self}: {self.value!r} is not a number")
            a, b = float(v), target
        else:
            a, b = _text(v), self.value  # type: ignore[assignment]
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[self.op]

    def _number(self) -> float | None:
        return parse_number(self.value, self.key)

    def __str__(self) -> str:
        return f"{self.key}{self.op}{self.value}"


def parse_filter(text: str) -> Filter:
    """Parse ``tag=bridge``, ``latency_p99_us<50``, ``config.topology!=veth``, ``name~^vm-``."""
    m = _FILTER.match(text)
    if not m:
        raise ConfigError(f"--where {text!r}: expected KEY=VALUE, KEY!=VALUE, KEY~REGEX or KEY<NUMBER (also <= > >=)")
    key, op, value = m.groups()
    key = _ALIASES.get(key, key)
    if not _known_key(key):
        raise ConfigError(f"--where {text!r}: unknown key {key!r}; {KEYS_HELP}")
    if op == "~":
        try:
            re.compile(value)
        except re.error as exc:
            raise ConfigError(f"--where {text!r}: bad regular expression ({exc})") from None
    f = Filter(key, op, value)
    if op in ("<", "<=", ">", ">=") and _is_numeric_key(key) and f._number() is None:
        raise ConfigError(f"--where {text!r}: {value!r} is not a number")
    return f


def select(runs: Iterable[StoredRun], filters: Sequence[Filter]) -> list[StoredRun]:
    """The runs that pass every filter (filters are ANDed)."""
    return [r for r in runs if all(f.matches(r) for f in filters)]


def lookup(run: StoredRun, key: str) -> Any:
    """The value of ``key`` for ``run``: a row field, ``tag`` (a list), or a dotted path into run.json."""
    if key == "tag":
        return list(run.record.tags)
    if "." in key:
        node: Any = run.record.to_json()
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node
    return run_row(run).get(key)


_ROW_KEYS = tuple(
    ["run_id", "name", "tags", "created", "status", "source", "tool", "metric", "period_ns", "duration_s",
     *PACKET_KEYS]
    + [f"{m}_{s}" + ("" if s == "count" else "_us") for m in ROW_METRICS for s in ROW_STATS]
)


KEYS_HELP = (
    "keys: tag, run_id, name, created, status, source, tool, metric, period_ns, duration_s, "
    f"{', '.join(PACKET_KEYS)}, METRIC_STAT_us (METRIC: {', '.join(ROW_METRICS)}; "
    f"STAT: {', '.join(s for s in ROW_STATS if s != 'count')}), METRIC_count, "
    "or a dotted path into run.json (config.period_ns, source.tool, ...)"
)


def _known_key(key: str) -> bool:
    return key == "tag" or key in _ROW_KEYS or ("." in key and key.split(".", 1)[0] in (
        "config", "environment", "source", "summary", "completeness", "extra"))


def _is_numeric_key(key: str) -> bool:
    return key.endswith(("_us", "_ns", "_s", "_count")) or key in PACKET_KEYS


def parse_number(value: str, key: str = "") -> float | None:
    """A number, or a duration with a unit converted to the key's unit (50us for a *_us key is 50)."""
    try:
        return float(value)
    except ValueError:
        pass
    from latscope.units import parse_duration_ns

    for suffix, scale in _UNIT_SCALE.items():
        if key.endswith(suffix):
            try:
                return parse_duration_ns(value) * scale
            except LatscopeError:
                return None
    return None


def _text(v: Any) -> str:
    # JSON spelling, so config.isochron.txtime=true matches a Python True.
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True)


def sort_runs(runs: list[StoredRun], key: str) -> list[StoredRun]:
    """Sort by ``key`` (``-key`` descending); runs without the key go last either way."""
    desc = key.startswith("-")
    k = _ALIASES.get(key.lstrip("-+"), key.lstrip("-+"))
    if not _known_key(k):
        raise ConfigError(f"--sort: unknown key {k!r}; {KEYS_HELP}")

    def value(run: StoredRun) -> Any:
        v = lookup(run, k)
        return ",".join(map(str, v)) if isinstance(v, list) else v

    present = [r for r in runs if value(r) is not None]
    absent = [r for r in runs if value(r) is None]
    try:
        present.sort(key=value, reverse=desc)
    except TypeError:
        present.sort(key=lambda r: str(value(r)), reverse=desc)
    return present + absent


# -- SQL -------------------------------------------------------------------------

#: Derived metrics of the ``samples`` view, as SQL over the raw columns. Each is
#: the formula of latscope.analysis.metrics: NULL where the Python code gives NaN.
RX_BEST = "coalesce(rx_hw_ns, rx_sw_ns)"
TX_BEST = "coalesce(tx_hw_ns, tx_sw_ns)"
#: A round trip's t1 (metrics.t1): the kernel TX time, the send time where the kernel gave none.
T1 = f"coalesce({TX_BEST}, send_ns)"
TURNAROUND = "(far_tx_ns - far_rx_ns)"
RTT = f"(({RX_BEST} - {T1}) - {TURNAROUND})"
DERIVED_SQL = {
    "rx_best_ns": RX_BEST,
    "tx_best_ns": TX_BEST,
    # metrics.latency: the round-trip time in rows of a round trip (far_rx_ns present), else one-way.
    "latency_ns": f"CASE WHEN far_rx_ns IS NOT NULL THEN {RTT} ELSE {RX_BEST} - send_ns END",
    "wakeup_latency_ns": "wake_ns - sched_ns",
    "sender_latency_ns": "tx_sw_ns - send_ns",
    "path_delay_ns": f"{RX_BEST} - {TX_BEST}",
    "arrival_latency_ns": f"rx_user_ns - {RX_BEST}",
    "e2e_ns": "rx_user_ns - sched_ns",
    # Arrival order, ties in row order: the stable argsort of metrics.delta.
    "delta_ns": (f"CASE WHEN {RX_BEST} IS NOT NULL THEN {RX_BEST} - lag({RX_BEST}) OVER "
                 f"(PARTITION BY {{run}}, {RX_BEST} IS NULL ORDER BY {RX_BEST}, {{row}}) END"),
    "rtt_ns": RTT,
    "turnaround_ns": TURNAROUND,
    "forward_delay_ns": f"far_rx_ns - {T1}",
    "reverse_delay_ns": f"{RX_BEST} - far_tx_ns",
    "clock_offset_ns": f"((far_rx_ns - {T1}) - ({RX_BEST} - far_tx_ns)) / 2",
    "lost": "(flags & 1) <> 0",
    "duplicate": "(flags & 2) <> 0",
    "reordered": "(flags & 4) <> 0",
    "send_failed": "(flags & 8) <> 0",
}
_RAW = ("seq", "stream", *TIME_COLUMNS, "flags")
_RUN_ID = r"regexp_extract(filename, '([^/\\]+)[/\\]samples\.parquet$', 1)"


@dataclass(frozen=True)
class Skipped:
    """A run left out of the SQL views, and why."""

    run_id: str
    reason: str


def check_samples(run: StoredRun) -> None:
    """Raise FormatError unless samples.parquet has an intact footer, latscope's magic and a known version.

    Only the footer is read: cheap enough to do for every run before a query,
    and it catches truncated and foreign files, which DuckDB would report
    without saying which run they belong to.
    """
    pf = open_parquet(run.samples_path, f"run {run.path.name}: samples.parquet", "samples file", SAMPLES_MAGIC,
                      SAMPLES_SCHEMA_VERSION)
    names = pf.schema_arrow.names
    pf.close()
    missing = [c for c in _RAW if c not in names]
    if missing:
        raise FormatError(f"run {run.path.name}: samples.parquet lacks column(s) {', '.join(missing)}")


def connect(runs: Sequence[StoredRun], *, skip_bad: bool = False,
            temp_dir: str | None = None) -> tuple[Any, list[Skipped]]:
    """An in-memory DuckDB connection with the views ``runs`` and ``samples`` over ``runs``.

    A run whose samples fail `check_samples` raises FormatError, or with
    ``skip_bad`` is left out of ``samples`` (it stays in ``runs``) and named
    in the returned list. ``temp_dir`` is where DuckDB may spill big sorts
    (its default is ./.tmp in the current directory, which is nobody's business).
    """
    skipped: list[Skipped] = []
    files: list[str] = []
    for run in runs:
        try:
            check_samples(run)
        except FormatError as exc:
            if not skip_bad:
                raise FormatError(f"{exc}; pass --skip-bad to query the other runs") from None
            skipped.append(Skipped(run.path.name, str(exc)))
            continue
        files.append(str(run.samples_path.absolute()))
    con = open_views(_runs_table(runs), samples_sql(files), files, temp_dir)
    return con, skipped


def open_views(runs_table: Any, samples_select: str, files: Sequence[str], temp_dir: str | None) -> Any:
    """A confined in-memory DuckDB connection with the view ``runs`` over an Arrow table and ``samples``."""
    import duckdb

    con = duckdb.connect(":memory:")
    # Timestamps print in UTC whatever the host's zone, like everything latscope shows.
    con.execute("SET TimeZone = 'UTC'")
    # DuckDB draws a progress bar on the terminal's stdout for long queries: it would land in CSV or JSON.
    con.execute("SET enable_progress_bar = false")
    if temp_dir is not None:
        con.execute("SET temp_directory = '" + temp_dir.replace("'", "''") + "'")
    con.register("runs_rows", runs_table)
    con.execute("CREATE VIEW runs AS SELECT * FROM runs_rows")
    con.execute(f"CREATE VIEW samples AS {samples_select}")
    confine(con, files)
    return con


def confine(con: Any, files: Sequence[str]) -> None:
    """Take DuckDB's file and extension access away, except reading ``files``; nothing can give it back.

    A query may then read the samples behind the view and spill to the
    temporary directory, but not read /etc/passwd, ATTACH or create a
    database, install or load an extension, or change a setting.
    ``allowed_paths`` would also let COPY ... TO overwrite those very files,
    which is why `query` admits no COPY or EXPORT statement at all.
    """
    listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    con.execute(f"SET allowed_paths = [{listed}]")
    con.execute("SET allowed_directories = []")
    for setting in ("autoinstall_known_extensions", "autoload_known_extensions", "allow_community_extensions",
                    "allow_persistent_secrets", "enable_external_access"):
        con.execute(f"SET {setting} = false")
    con.execute("SET lock_configuration = true")


def derived_sql(run: str = "filename", row: str = "file_row_number") -> str:
    """The derived columns as a SELECT list; ``run`` and ``row`` are what tells runs apart and orders ties."""
    return ", ".join(f"{expr.format(run=run, row=row)} AS {name}" for name, expr in DERIVED_SQL.items())


def samples_sql(files: Sequence[str]) -> str:
    """The SELECT behind the ``samples`` view over the given samples.parquet files."""
    derived = derived_sql()
    if not files:
        typed = ", ".join(["NULL::VARCHAR AS run_id", "NULL::BIGINT AS seq", "NULL::INTEGER AS stream",
                           *(f"NULL::BIGINT AS {c}" for c in TIME_COLUMNS), "NULL::INTEGER AS flags",
                           "NULL::VARCHAR AS filename", "NULL::BIGINT AS file_row_number"])
        source = f"(SELECT {typed} WHERE false)"
        run_id = "run_id"
    else:
        listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
        # union_by_name: samples files of schema version 1 have no far_* columns; they read as NULL.
        source = f"read_parquet([{listed}], filename = true, file_row_number = true, union_by_name = true)"
        run_id = _RUN_ID
    return f"SELECT {run_id} AS run_id, {', '.join(_RAW)}, {derived} FROM {source}"


def _arrow_type(name: str) -> Any:
    import pyarrow as pa

    if name == "tags":
        return pa.list_(pa.string())
    if name == "created":
        return pa.timestamp("us", tz="UTC")
    if name in ("period_ns", *PACKET_KEYS) or name.endswith("_count"):
        return pa.int64()
    if name == "duration_s" or name.endswith("_us"):
        return pa.float64()
    return pa.string()


def _runs_table(runs: Sequence[StoredRun]) -> Any:
    import pyarrow as pa

    names = [*_ROW_KEYS, "path", "run_json"]
    data: dict[str, list[Any]] = {name: [] for name in names}
    for run in runs:
        row = {**run_row(run), "path": str(run.path), "run_json": json.dumps(run.record.to_json(), default=str)}
        row["created"] = _timestamp(row["created"])
        for name in names:
            v = row.get(name)
            if v is not None and (name in ("period_ns", *PACKET_KEYS) or name.endswith("_count")):
                v = _int64(v)
            data[name].append(v)
    return pa.table({name: pa.array(data[name], type=_arrow_type(name)) for name in names})


def _int64(v: Any) -> int | None:
    # A count beyond int64 (a hand-edited or broken run.json) would stop the whole view; it becomes NULL.
    if isinstance(v, float):
        v = int(v) if math.isfinite(v) else None
    return v if isinstance(v, int) and _INT64_MIN <= v <= _INT64_MAX else None


_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1

#: The runs view's columns and their conversions, for the dataset's runs files (store/dataset.py).
ROW_KEYS = _ROW_KEYS
arrow_type = _arrow_type
int64 = _int64


def _timestamp(text: Any) -> _dt.datetime | None:
    if not isinstance(text, str):
        return None
    try:
        value = _dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=_dt.UTC)


timestamp = _timestamp


@dataclass(frozen=True)
class QueryResult:
    """Column names and types of a query, and its rows as they are fetched."""

    columns: list[str]
    types: list[str]
    rows: Iterator[tuple[Any, ...]]


#: Statement kinds `sql` runs: queries, and in-memory definitions to build them from. Anything that reads or
#: writes files (COPY, EXPORT, ATTACH, LOAD/INSTALL) or changes settings (SET) is refused before it runs.
ALLOWED_STATEMENTS = ("SELECT", "EXPLAIN", "CREATE", "CREATE_FUNC", "DROP", "INSERT", "UPDATE", "DELETE", "ALTER",
                      "MULTI", "PRAGMA", "CALL", "PREPARE", "EXECUTE", "TRANSACTION", "VARIABLE_SET")


def check_statements(con: Any, sql: str) -> None:
    """ConfigError for empty SQL and for statements outside ALLOWED_STATEMENTS."""
    import duckdb

    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise _sql_error(exc) from None
    if not statements:
        raise ConfigError("SQL: the statement is empty")
    for st in statements:
        kind = st.type.name
        if kind not in ALLOWED_STATEMENTS:
            raise ConfigError(f"SQL: {kind} statements are not allowed (sql only reads the store; "
                              "--csv and --json write results)")


def query(con: Any, sql: str, batch: int = 10_000) -> QueryResult:
    """Run ``sql``; DuckDB errors become one-line latscope errors (SQL mistakes: exit 2)."""
    import duckdb

    check_statements(con, sql)
    try:
        cur = con.execute(sql)
    except duckdb.Error as exc:
        raise _sql_error(exc) from None
    if cur.description is None:
        return QueryResult([], [], iter(()))
    names = [d[0] for d in cur.description]
    types = [str(d[1]) for d in cur.description]

    def rows() -> Iterator[tuple[Any, ...]]:
        while True:
            try:
                chunk = cur.fetchmany(batch)
            except duckdb.Error as exc:
                raise _sql_error(exc) from None
            if not chunk:
                return
            yield from chunk

    return QueryResult(names, types, rows())


def _sql_error(exc: Exception) -> LatscopeError:
    import duckdb

    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, (duckdb.IOException, duckdb.InvalidInputException)) and "parquet" in str(exc).lower():
        return FormatError(f"reading samples failed: {first}")
    return ConfigError(f"SQL: {first}")
