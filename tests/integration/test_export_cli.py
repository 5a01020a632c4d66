"""`latscope export --dataset` and `latscope sql --dataset` on the command line: output, re-export, bad input."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from tests.support import synthetic_run


def _err(r) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("latscope: error: "), r.stderr
    return lines[0]


def test_export_then_query(latscope, results: Path, tmp_path: Path) -> None:
    """Runs named or filtered are exported once however often; sql --dataset sees each packet once."""
    a = synthetic_run(results, np.full(1000, 20_000), name="a", tags=("x",),
                      environment={"before": {"kernel": {"hostname": "h1"}}})
    synthetic_run(results, np.full(500, 30_000), name="b")
    ds = tmp_path / "ds"
    r = latscope("export", "--dataset", str(ds), "a")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [a.run_id, "host=h1", "1000", "packets", "in", "1", "file"]
    assert "exported 1 run (1000 packets)" in r.stderr
    r = latscope("export", "--dataset", str(ds))
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 2, r.stderr
    r = latscope("sql", "--dataset", str(ds), "--csv",
                 "SELECT r.name, s.host, count(*) AS n, max(latency_ns) AS lat FROM samples s JOIN runs r "
                 "USING (run_id) GROUP BY ALL ORDER BY r.name")
    assert r.returncode == 0, r.stderr
    assert list(csv.reader(io.StringIO(r.stdout))) == [["name", "host", "n", "lat"], ["a", "h1", "1000", "20000"],
                                                      ["b", "unknown", "500", "30000"]]
    r = latscope("sql", "--dataset", str(ds), "--where", "tag=x", "--csv", "SELECT count(*) AS n FROM samples")
    assert r.stdout.splitlines() == ["n", "1000"]


def test_bad_input(latscope, results: Path, tmp_path: Path) -> None:
    """A directory that is not a dataset, a missing run, --dataset with --results: one line, exit 2, nothing written."""
    synthetic_run(results, np.full(10, 20_000), name="a")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    r = latscope("export", "--dataset", str(foreign))
    assert r.returncode == 2 and "holds other files" in _err(r)
    assert [p.name for p in foreign.iterdir()] == ["keep.txt"]
    r = latscope("export", "--dataset", str(tmp_path / "new"), "no-such-run")
    assert r.returncode == 2 and "no run" in _err(r) and not (tmp_path / "new").exists()
    r = latscope("sql", "--dataset", str(tmp_path / "missing"), "SELECT 1")
    assert r.returncode == 2 and "not a latscope dataset" in _err(r)
    r = latscope("sql", "--dataset", str(foreign), "--results", str(results), "SELECT 1")
    assert r.returncode == 2 and "not both" in _err(r)
    r = latscope("export", "--results", str(results))
    assert r.returncode == 2 and "--dataset" in _err(r)
