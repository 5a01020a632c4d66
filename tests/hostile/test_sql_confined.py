"""`latscope sql` reads the store and nothing else, and leaves no temporary directory when a signal ends it."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import BIN
from tests.hostile.conftest import one_line_error
from tests.support import synthetic_run

pytestmark = pytest.mark.hostile


def _digests(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


STATEMENTS = [
    "COPY (SELECT 1) TO '{out}/copied.csv'",
    "COPY (SELECT 1 AS seq) TO '{samples}' (FORMAT parquet, USE_TMP_FILE false)",
    "SELECT 1; COPY (SELECT 1) TO '{out}/second.csv'",
    "EXPORT DATABASE '{out}/exported'",
    "ATTACH '{out}/new.db' AS x",
    "SELECT * FROM read_csv_auto('/etc/passwd')",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM glob('/etc/*')",
    "SELECT * FROM read_parquet('{elsewhere}')",
    "SELECT * FROM read_parquet('{elsewhere_glob}')",
    "SET enable_external_access = true",
    "INSTALL httpfs",
    "LOAD parquet",
    "CREATE PERSISTENT SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')",
    "",
]


def test_no_file_access_outside_the_views(results: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Writing, attaching, reading other files, loading extensions and changing settings are ConfigErrors
    (exit 2) on the connection `sql` uses; the store and the file system stay as they were."""
    from latscope.errors import LatscopeError
    from latscope.store import catalog

    monkeypatch.setenv("HOME", str(tmp_path))
    run = synthetic_run(results, np.full(100, 40_000))
    out = tmp_path / "out"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere.parquet"
    pq.write_table(pa.table({"secret": [42]}), elsewhere)
    before = _digests(results)
    spill = tmp_path / "spill"  # DuckDB may read its own temporary directory, so it is one of its own
    spill.mkdir()
    con, _ = catalog.connect([run], temp_dir=str(spill))
    try:
        for statement in STATEMENTS:
            sql = statement.format(out=out, samples=run.samples_path, elsewhere=elsewhere,
                                   elsewhere_glob=tmp_path / "*.parquet")
            with pytest.raises(LatscopeError) as info:
                list(catalog.query(con, sql).rows)
            assert info.value.exit_code == 2 and "\n" not in str(info.value), statement
        assert list(catalog.query(con, "SELECT count(*) FROM samples").rows) == [(100,)]
    finally:
        con.close()
    assert list(out.iterdir()) == []
    assert _digests(results) == before
    assert not (tmp_path / ".duckdb").exists()


@pytest.mark.parametrize("statement", [STATEMENTS[0], STATEMENTS[5], STATEMENTS[-1]])
def test_sql_verb_refuses_file_access(latscope, results: Path, tmp_path: Path, statement: str) -> None:
    """Through the command: one line, exit 2, no file written, /etc/passwd not shown."""
    synthetic_run(results, np.full(100, 40_000))
    r = latscope("sql", statement.format(out=tmp_path, samples=""))
    assert r.returncode == 2, r.stdout + r.stderr
    one_line_error(r)
    assert "root:" not in r.stdout and not (tmp_path / "copied.csv").exists()


def test_queries_over_the_views_still_work(latscope, results: Path) -> None:
    """In-memory tables, macros and multi-statement queries over the views are allowed."""
    synthetic_run(results, np.full(100, 40_000))
    r = latscope("sql", "CREATE TEMP TABLE t AS SELECT latency_ns FROM samples; "
                        "CREATE MACRO us(x) AS x / 1000; SELECT us(max(latency_ns)) AS m FROM t", "--csv")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["m", "40.0"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_removes_the_temporary_directory(results: Path, tmp_path: Path, sig: int) -> None:
    """A signal during a long query interrupts it: exit 1, 'interrupted', no latscope-sql-* directory left."""
    synthetic_run(results, np.full(100, 40_000))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "LATSCOPE_RESULTS": str(results), "TMPDIR": str(tmp)}
    # Billions of rows: minutes of work, but constant memory; the signal ends it within a second.
    slow = "SELECT count(*) FROM range(100000000000) t(x) WHERE x % 7 = 3"
    proc = subprocess.Popen([str(BIN / "latscope"), "sql", slow], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not list(tmp.glob("latscope-sql-*")) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert list(tmp.glob("latscope-sql-*")), "the query never started"
        time.sleep(0.5)  # into the query itself
        proc.send_signal(sig)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 1, err
    assert "interrupted" in err and "Traceback" not in err
    assert list(tmp.iterdir()) == []
