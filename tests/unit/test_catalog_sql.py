"""The DuckDB views: derived metrics equal latscope.analysis.metrics, runs rows, damaged samples."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from latscope.analysis import metrics
from latscope.errors import ConfigError, FormatError
from latscope.importers.common import build
from latscope.store import catalog
from latscope.store.layout import ResultsStore, StoredRun, new_run_id
from latscope.store.runfile import RunRecord
from latscope.store.samples import MISSING, Samples
from tests.support import synthetic_run

M = MISSING
E = 1_795_000_000_000_000_000


def _store_columns(root: Path, cols: dict[str, np.ndarray], counts: dict[str, int], name: str) -> StoredRun:
    from latscope.analysis.summary import summarise

    rec = RunRecord(run_id=new_run_id(), name=name, tags=(), created=_dt.datetime.now(_dt.UTC).isoformat(),
                    status="complete", config={}, environment={}, completeness=counts,
                    summary=summarise(Samples(cols), counts), source={"kind": "synthetic"})
    return ResultsStore(root).save(rec, cols)


@pytest.fixture
def tricky(tmp_path: Path) -> StoredRun:
    """A run with hw and sw receive times, losses, reordering, equal arrival times and missing columns."""
    rng = np.random.default_rng(7)
    n = 3000
    seq = np.arange(n)
    sched = E + seq * 1_000_000
    wake = sched + rng.integers(1_000, 50_000, n)
    send = wake + 500
    tx_sw = send + rng.integers(1_000, 9_000, n)
    tx_hw = np.where(rng.random(n) < 0.3, tx_sw + 700, M)
    rx_sw = send + rng.integers(10_000, 3_000_000, n)  # up to 3 periods: heavy reordering
    rx_sw[rng.random(n) < 0.03] = M
    rx_sw[100] = rx_sw[101] = rx_sw[99]  # ties in arrival time
    rx_hw = np.where((rng.random(n) < 0.5) & (rx_sw != M), rx_sw - 300, M)
    rx_user = np.where(rx_sw != M, rx_sw + 8_000, M)
    rx_user[5] = M
    times = {"sched_ns": sched, "wake_ns": wake, "send_ns": send, "tx_sw_ns": tx_sw, "tx_hw_ns": tx_hw,
             "rx_sw_ns": rx_sw, "rx_hw_ns": rx_hw, "rx_user_ns": rx_user}
    cols, counts = build(seq, times, arrival="rx_best")
    return _store_columns(tmp_path, cols, counts, "tricky")


@pytest.mark.parametrize("name", sorted(metrics.METRICS))
def test_derived_metrics_equal_python(tmp_path: Path, tricky: StoredRun, name: str) -> None:
    """Each <metric>_ns of the samples view equals the Python metric row by row, NULL where it is NaN."""
    other = synthetic_run(tmp_path, np.full(500, 30_000), name="other")  # a second run in the view
    con, _ = catalog.connect([tricky, other])
    res = catalog.query(con, f"SELECT seq, {name}_ns FROM samples WHERE run_id = '{tricky.path.name}' ORDER BY seq")
    got = np.array([np.nan if v is None else float(v) for _, v in res.rows])
    expect = metrics.METRICS[name][0](tricky.samples())
    np.testing.assert_array_equal(got, expect)


def test_raw_columns_and_flags(tricky: StoredRun) -> None:
    """Raw columns come through unchanged and the flag booleans decode the flags bits."""
    con, _ = catalog.connect([tricky])
    s = tricky.samples()
    rows = list(catalog.query(con, "SELECT seq, rx_hw_ns, flags, lost, reordered FROM samples ORDER BY seq").rows)
    assert [r[0] for r in rows] == list(s["seq"])
    assert [M if r[1] is None else r[1] for r in rows] == list(s["rx_hw_ns"])
    assert [r[3] for r in rows] == list((s["flags"] & 1) != 0)
    assert [r[4] for r in rows] == list((s["flags"] & 4) != 0)


def test_runs_view(tmp_path: Path) -> None:
    """runs has one typed row per run: tags as a list, created as a timestamp, summary numbers, run_json."""
    a = synthetic_run(tmp_path, np.full(100, 40_000), name="a", tags=("bridge", "x"))
    synthetic_run(tmp_path, np.full(100, 60_000), name="b")
    runs, _ = ResultsStore(tmp_path).runs()
    con, _ = catalog.connect(runs)
    res = catalog.query(con, "SELECT name, tags, latency_p99_us, sent, typeof(created), "
                             "json_extract_string(run_json, '$.config.topology') FROM runs ORDER BY name")
    rows = list(res.rows)
    assert rows[0] == ("a", ["bridge", "x"], 40.0, 100, "TIMESTAMP WITH TIME ZONE", "synthetic")
    assert rows[1][0] == "b" and rows[1][1] == []
    one = catalog.query(con, "SELECT count(*) FROM samples s JOIN runs r USING (run_id) "
                             "WHERE list_contains(r.tags, 'bridge')")
    assert list(one.rows) == [(100,)]
    assert a.path.name in [r[0] for r in catalog.query(con, "SELECT run_id FROM runs").rows]


def test_empty_store_has_both_views(tmp_path: Path) -> None:
    """With no runs the views exist, with their columns, and return nothing."""
    con, _ = catalog.connect([])
    res = catalog.query(con, "SELECT run_id, latency_ns, delta_ns FROM samples")
    assert res.columns == ["run_id", "latency_ns", "delta_ns"] and list(res.rows) == []
    assert list(catalog.query(con, "SELECT count(*) FROM runs").rows) == [(0,)]


def test_sql_mistakes_are_usage_errors(tricky: StoredRun) -> None:
    """Syntax errors and unknown columns are ConfigError with DuckDB's first line."""
    con, _ = catalog.connect([tricky])
    with pytest.raises(ConfigError, match="Parser Error"):
        catalog.query(con, "SELEC 1")
    with pytest.raises(ConfigError, match="nope"):
        catalog.query(con, "SELECT nope FROM samples")


def _damage(run: StoredRun, how: str) -> None:
    p = run.samples_path
    if how == "truncated":
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    elif how == "empty":
        p.write_bytes(b"")
    elif how == "foreign":
        pq.write_table(pa.table({"seq": [1, 2]}), p)
    elif how == "newer":
        t = pq.read_table(p)
        pq.write_table(t.replace_schema_metadata({b"magic": b"latscope-samples", b"schema_version": b"99"}), p)
    elif how == "missing":
        p.unlink()


@pytest.mark.parametrize(("how", "needle"), [
    ("truncated", "corrupt"), ("empty", "corrupt"), ("foreign", "not a latscope samples file"),
    ("newer", "newer"), ("missing", "missing"),
])
def test_damaged_samples(tmp_path: Path, how: str, needle: str) -> None:
    """A damaged samples.parquet is a FormatError naming the run; --skip-bad leaves it out of samples only."""
    good = synthetic_run(tmp_path, np.full(100, 40_000), name="good")
    bad = synthetic_run(tmp_path, np.full(100, 40_000), name="bad")
    _damage(bad, how)
    with pytest.raises(FormatError, match=needle) as info:
        catalog.connect([good, bad])
    assert bad.path.name in str(info.value) and "--skip-bad" in str(info.value)
    con, skipped = catalog.connect([good, bad], skip_bad=True)
    assert [s.run_id for s in skipped] == [bad.path.name]
    assert list(catalog.query(con, "SELECT count(*), count(DISTINCT run_id) FROM samples").rows) == [(100, 1)]
    assert list(catalog.query(con, "SELECT count(*) FROM runs").rows) == [(2,)]


def test_query_touches_only_the_files_it_needs(tmp_path: Path) -> None:
    """WHERE run_id = ... prunes the other runs' files (DuckDB filters on the file name)."""
    runs = [synthetic_run(tmp_path, np.full(50, 10_000 * (i + 1)), name=f"r{i}") for i in range(3)]
    con, _ = catalog.connect(runs)
    plan = "".join(str(r) for r in catalog.query(con, f"EXPLAIN SELECT avg(latency_ns) FROM samples "
                                                      f"WHERE run_id = '{runs[1].path.name}'").rows)
    assert "1/3" in plan
    assert list(catalog.query(con, f"SELECT avg(latency_ns) FROM samples WHERE run_id = '{runs[1].path.name}'"
                              ).rows) == [(20_000.0,)]
