"""`latscope sql` and `latscope ls --where` on the command line: output formats, filters, errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from tests.support import synthetic_run


@pytest.fixture
def store(results: Path) -> Path:
    """Two bridge runs and one veth run, 1000 packets each, with known latencies (µs: 20, 30, 50)."""
    synthetic_run(results, np.full(1000, 20_000), name="br-a", tags=("bridge",))
    synthetic_run(results, np.full(1000, 30_000), name="br-b", tags=("bridge", "loaded"))
    lost = np.zeros(1000, bool)
    lost[:10] = True
    synthetic_run(results, np.full(1000, 50_000), name="veth", lost=lost)
    return results


def _err(r) -> str:
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("latscope: error: "), r.stderr
    return lines[0]


def test_table_output(latscope, store: Path) -> None:
    """The default is a table with a header; the row count goes to stderr."""
    r = latscope("sql", "SELECT name, latency_p99_us FROM runs ORDER BY name")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["name", "latency_p99_us"]
    assert lines[1].split() == ["br-a", "20.000"] and lines[3].split() == ["veth", "50.000"]
    assert "(3 rows)" in r.stderr


def test_json_output(latscope, store: Path) -> None:
    """--json: columns with types, rows as objects, row_count; NULLs are null."""
    r = latscope("sql", "SELECT r.name, avg(s.latency_ns) AS lat, sum(s.lost::INT) AS lost, max(s.delta_ns) AS d "
                 "FROM samples s JOIN runs r USING (run_id) GROUP BY r.name ORDER BY r.name", "--json")
    doc = json.loads(r.stdout)
    assert [c["name"] for c in doc["columns"]] == ["name", "lat", "lost", "d"]
    assert doc["row_count"] == 3
    assert doc["rows"][0]["lat"] == 20000.0 and doc["rows"][2]["lost"] == 10
    empty = json.loads(latscope("sql", "SELECT 1 AS x WHERE false", "--json").stdout)
    assert empty["rows"] == [] and empty["row_count"] == 0


def test_csv_output_is_complete_and_exact(latscope, store: Path) -> None:
    """--csv: a header and every row, integers exact, NULL as an empty cell."""
    r = latscope("sql", "SELECT seq, send_ns, latency_ns FROM samples s JOIN runs r USING (run_id) "
                 "WHERE r.name = 'veth' ORDER BY seq", "--csv")
    rows = list(csv.reader(io.StringIO(r.stdout)))
    assert rows[0] == ["seq", "send_ns", "latency_ns"] and len(rows) == 1001
    assert rows[1][2] == "" and rows[11][2] == "50000"
    assert int(rows[1][1]) > 1_700_000_000_000_000_000


def test_max_rows_truncates_only_the_table(latscope, store: Path) -> None:
    """--max-rows limits the table and says how many rows were not shown."""
    r = latscope("sql", "SELECT seq FROM samples", "--max-rows", "5")
    assert len(r.stdout.splitlines()) == 6
    assert "2995 more not shown" in r.stderr


def test_where_restricts_both_views(latscope, store: Path) -> None:
    """sql --where tag=bridge sees only the bridge runs, in runs and in samples."""
    r = latscope("sql", "SELECT (SELECT count(*) FROM runs) AS runs, count(*) AS packets FROM samples",
                 "--where", "tag=bridge", "--json")
    assert json.loads(r.stdout)["rows"] == [{"runs": 2, "packets": 2000}]


def test_ls_where_sort_limit(latscope, store: Path) -> None:
    """ls filters, sorts and limits; --json lists the filters applied."""
    r = latscope("ls", "--where", "tag=bridge", "--sort", "-latency_p99_us", "--json")
    doc = json.loads(r.stdout)
    assert [x["name"] for x in doc["runs"]] == ["br-b", "br-a"] and doc["filters"] == ["tag=bridge"]
    r = latscope("ls", "--where", "latency_p99_us<40", "--where", "lost=0", "--limit", "1", "--sort", "name")
    assert r.returncode == 0 and "br-a" in r.stdout and "br-b" not in r.stdout
    none = latscope("ls", "--where", "tag=nothing")
    assert none.returncode == 0 and "no runs" in none.stdout


@pytest.mark.parametrize(("args", "needle"), [
    (["sql", "SELEC 1"], "Parser Error"),
    (["sql", "SELECT nope FROM samples"], "nope"),
    (["sql", "SELECT * FROM no_such_table"], "no_such_table"),
    (["sql", "SELECT 1", "--json", "--csv"], "not both"),
    (["sql", "SELECT 1", "--where", "colour=red"], "unknown key"),
    (["ls", "--where", "latency_p99_us<fast"], "not a number"),
    (["ls", "--where", "nonsense"], "KEY=VALUE"),
    (["ls", "--sort", "colour"], "unknown key"),
])
def test_usage_errors(latscope, store: Path, args: list[str], needle: str) -> None:
    """SQL and filter mistakes: exit 2 and one line that names the problem."""
    r = latscope(*args)
    assert r.returncode == 2
    assert needle in _err(r)


def test_corrupt_samples(latscope, store: Path) -> None:
    """A corrupt samples.parquet: exit 2 naming the run; --skip-bad queries the rest with a warning."""
    victim = next(p for p in store.iterdir() if p.is_dir())
    data = (victim / "samples.parquet").read_bytes()
    (victim / "samples.parquet").write_bytes(data[: len(data) // 3])
    before = sorted((str(p), p.stat().st_size) for p in store.rglob("*"))
    r = latscope("sql", "SELECT count(*) FROM samples")
    assert r.returncode == 2
    line = _err(r)
    assert victim.name in line and "corrupt" in line and "--skip-bad" in line
    r = latscope("sql", "SELECT count(*) AS n FROM samples", "--skip-bad", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["rows"] == [{"n": 2000}]
    assert "warning" in r.stderr and victim.name in r.stderr
    assert sorted((str(p), p.stat().st_size) for p in store.rglob("*")) == before


def test_empty_store(latscope, results: Path) -> None:
    """With no runs, queries still run against empty views."""
    r = latscope("sql", "SELECT count(*) AS n FROM samples", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["rows"] == [{"n": 0}]
