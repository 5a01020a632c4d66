"""A dirty results store: FIFOs, devices, unreadable directories, lying run.json files, absurd values.

Every read-only verb must finish (bounded by the subprocess timeout), say
which run it left out, keep working on the others and leave the store as it
was.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from tests.hostile.conftest import as_nobody, one_line_error
from tests.support import synthetic_run

pytestmark = pytest.mark.hostile
#: Far more than latscope needs to list a store, far less than reading /dev/zero whole would take.
MEMORY_LIMIT = 3 << 30


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


@pytest.fixture
def two_runs(results: Path):
    """A good run and a victim to damage."""
    good = synthetic_run(results, np.full(300, 40_000), name="good")
    victim = synthetic_run(results, np.full(200, 50_000), name="victim")
    return good, victim


def _snapshot(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p), os.lstat(p).st_mode) for p in root.rglob("*"))


def _listed(latscope) -> list[str]:
    r = latscope("ls", "-q", timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


@pytest.mark.parametrize("name", ["run.json", "samples.parquet"])
def test_fifo_in_a_run_does_not_hang(latscope, results: Path, two_runs, name: str) -> None:
    """A FIFO as run.json or samples.parquet: ls, show, sql and sql --skip-bad finish and name the run."""
    good, victim = two_runs
    (victim.path / name).unlink()
    os.mkfifo(victim.path / name)
    before = _snapshot(results)
    listed = _listed(latscope)
    assert good.run_id in listed
    assert (victim.run_id in listed) == (name == "samples.parquet")
    r = latscope("show", victim.run_id, timeout=60)
    assert r.returncode == 2 and "FIFO" in one_line_error(r)
    r = latscope("sql", "SELECT count(*) FROM samples", timeout=60)
    if name == "samples.parquet":
        assert r.returncode == 2 and victim.run_id in one_line_error(r) and "FIFO" in r.stderr
    else:
        assert r.returncode == 0 and "300" in r.stdout, r.stderr
    r = latscope("sql", "SELECT count(*) AS n FROM samples", "--skip-bad", "--json", timeout=60)
    assert r.returncode == 0 and json.loads(r.stdout)["rows"] == [{"n": 300}], r.stderr
    assert victim.run_id in r.stderr
    assert _snapshot(results) == before


def test_run_json_linked_to_dev_zero(latscope, results: Path, two_runs) -> None:
    """run.json -> /dev/zero is refused without reading it (memory capped at 3 GiB to prove it)."""
    good, victim = two_runs
    (victim.path / "run.json").unlink()
    (victim.path / "run.json").symlink_to("/dev/zero")
    r = latscope("ls", "-q", timeout=60, preexec_fn=_limited)
    assert r.returncode == 0 and r.stdout.split() == [good.run_id], r.stderr
    assert "character device" in r.stderr
    r = latscope("show", victim.run_id, timeout=60, preexec_fn=_limited)
    assert r.returncode == 2 and "character device" in one_line_error(r)


def test_oversized_run_json(latscope, two_runs) -> None:
    """A run.json larger than 16 MiB is not read; the other runs are listed."""
    good, victim = two_runs
    with open(victim.path / "run.json", "r+b") as fh:
        fh.truncate(17 << 20)
    assert _listed(latscope) == [good.run_id]
    r = latscope("show", victim.run_id)
    assert r.returncode == 2 and "more than" in one_line_error(r)


@pytest.mark.parametrize("lie", ["../../etc", "20261201-000000-000000-abcdef", "x" * 5000, 7])
def test_run_id_must_match_its_directory(latscope, two_runs, lie) -> None:
    """A run.json whose run_id is a path, another run's id or junk is not listed under it (nor at all)."""
    good, victim = two_runs
    doc = json.loads((victim.path / "run.json").read_text())
    doc["run_id"] = lie
    (victim.path / "run.json").write_text(json.dumps(doc))
    r = latscope("ls", "--json")
    assert r.returncode == 0
    assert [run["run_id"] for run in json.loads(r.stdout)["runs"]] == [good.run_id]
    assert victim.path.name in r.stderr and "../../etc" not in r.stdout
    assert len(r.stderr) < 1000
    r = latscope("sql", "SELECT run_id FROM runs", "--csv")
    assert r.returncode == 0 and r.stdout.split() == ["run_id", good.run_id]


def test_junk_directories_never_win(latscope, results: Path, two_runs) -> None:
    """Directories sorting after every id (with or without a run.json) are not 'latest'."""
    _good, victim = two_runs
    (results / "zzz").mkdir()
    shutil.copy(victim.path / "run.json", results / "zzz" / "run.json")
    (results / "zzz-empty").mkdir()
    r = latscope("show", "latest", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["run_id"] == victim.run_id


def test_absurd_stored_period_keeps_sql_working(latscope, two_runs) -> None:
    """A stored period of 3.6e35 ns and packet counts beyond int64: the run is left out, sql still works."""
    good, victim = two_runs
    doc = json.loads((victim.path / "run.json").read_text())
    doc["config"]["period_ns"] = 359999999999999999999996400000000000
    (victim.path / "run.json").write_text(json.dumps(doc))
    r = latscope("sql", "SELECT run_id, period_ns FROM runs", "--csv")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["run_id,period_ns", f"{good.run_id},1000000"]
    assert "period_ns" in r.stderr and victim.run_id in r.stderr
    doc["config"]["period_ns"] = 1_000_000
    doc["summary"]["packets"]["received"] = 10**30
    doc["summary"]["latency_us"]["max"] = 1e300
    (victim.path / "run.json").write_text(json.dumps(doc))
    r = latscope("sql", "SELECT received FROM runs ORDER BY created", "--csv")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["received", "300", '""']  # NULL is an empty CSV field


def test_deeply_nested_run_json(latscope, two_runs) -> None:
    """A run.json nested 100,000 deep is one line about nesting, not a RecursionError."""
    good, victim = two_runs
    (victim.path / "run.json").write_text("[" * 100_000 + "]" * 100_000)
    assert _listed(latscope) == [good.run_id]
    r = latscope("show", victim.run_id)
    assert r.returncode == 2 and "nested too deeply" in one_line_error(r)


@pytest.mark.root
def test_unreadable_run_directory_for_a_plain_user(nobody_can_run) -> None:
    """As uid 65534, a run directory with mode 000 is skipped with a warning by ls, show latest and sql."""
    # pytest's own temporary directories are private to root: this test needs one everybody can enter.
    base = Path(tempfile.mkdtemp(prefix="latscope-hostile-"))
    try:
        base.chmod(0o1777)
        results = base / "results"
        results.mkdir(mode=0o755)
        good = synthetic_run(results, np.full(300, 40_000), name="good")
        victim = synthetic_run(results, np.full(200, 50_000), name="victim")
        victim.path.chmod(0o000)
        env = {**os.environ, "LATSCOPE_RESULTS": str(results), "HOME": str(base), "TMPDIR": str(base)}
        r = as_nobody(["ls", "-q"], env)
        assert r.returncode == 0 and r.stdout.split() == [good.run_id], r.stderr
        assert "Traceback" not in r.stderr and "Permission denied" in r.stderr
        r = as_nobody(["show", "latest", "--json"], env)
        assert r.returncode == 0 and json.loads(r.stdout)["run_id"] == good.run_id, r.stderr
        r = as_nobody(["sql", "SELECT count(*) AS n FROM samples", "--json"], env)
        assert r.returncode == 0 and json.loads(r.stdout)["rows"] == [{"n": 300}], r.stderr
        r = as_nobody(["show", victim.run_id], env)
        assert r.returncode == 2 and "Permission denied" in one_line_error(r)
        assert [p.name for p in base.iterdir()] == ["results"]
    finally:
        for p in base.rglob("*"):
            if p.is_dir() and not p.is_symlink():
                p.chmod(0o755)
        shutil.rmtree(base)


def test_fifo_as_a_runs_trace(latscope, two_runs) -> None:
    """FIFOs as trace/events.parquet and trace/trace.txt.zst: breakdown refuses them in one line."""
    _good, victim = two_runs
    (victim.path / "trace").mkdir()
    os.mkfifo(victim.path / "trace" / "events.parquet")
    os.mkfifo(victim.path / "trace" / "trace.txt.zst")
    r = latscope("breakdown", victim.run_id, timeout=60)
    assert r.returncode == 2 and "FIFO" in one_line_error(r)
