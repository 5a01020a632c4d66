"""The results store: atomic runs, version checks on both files, and run lookup."""

from __future__ import annotations

import datetime as _dt
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from latscope.analysis.summary import summarise
from latscope.errors import ConfigError, FormatError, NotFoundError, StoreError
from latscope.store.layout import ResultsStore, StoredRun, new_run_id
from latscope.store.runfile import RUN_SCHEMA_VERSION, RunRecord, load_run_json
from latscope.store.samples import MISSING, SAMPLE_COLUMNS, Samples, read_samples
from tests.support import synthetic_columns, synthetic_run

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "store"


def test_saved_run_reads_back(results: Path) -> None:
    """A saved run has run.json and samples.parquet with every contract column; nulls stay null."""
    lost = np.zeros(50, bool)
    lost[5] = True
    run = synthetic_run(results, np.full(50, 1000), name="a", tags=("bridge",), lost=lost)
    assert sorted(p.name for p in run.path.iterdir()) == ["run.json", "samples.parquet"]
    table = pq.read_table(run.samples_path)
    assert tuple(table.schema.names) == SAMPLE_COLUMNS
    assert table.column("rx_sw_ns").null_count == 1
    s = read_samples(run.samples_path)
    assert s["rx_sw_ns"][5] == MISSING and s["rx_sw_ns"][4] != MISSING
    rec = load_run_json(run.path / "run.json")
    assert rec.name == "a" and rec.tags == ("bridge",)
    assert json.loads((run.path / "run.json").read_text())["schema_version"] == RUN_SCHEMA_VERSION


def test_newer_run_json_is_rejected(results: Path) -> None:
    """A run.json from a newer latscope is refused with a message that says to upgrade."""
    run = synthetic_run(results, np.full(10, 1000))
    doc = json.loads((run.path / "run.json").read_text())
    doc["schema_version"] = RUN_SCHEMA_VERSION + 1
    (run.path / "run.json").write_text(json.dumps(doc))
    with pytest.raises(FormatError, match="newer.*upgrade"):
        load_run_json(run.path / "run.json")


@pytest.mark.parametrize("content", ["", "{", "[]", '{"format": "other"}',
                                     '{"format": "latscope-run", "schema_version": "1"}',
                                     '{"format": "latscope-run", "schema_version": 1}'])
def test_corrupt_run_json(tmp_path: Path, content: str) -> None:
    """Truncated, foreign or incomplete run.json files are a FormatError, never a traceback."""
    p = tmp_path / "run.json"
    p.write_text(content)
    with pytest.raises(FormatError):
        load_run_json(p)


def test_samples_magic_and_version_checked(tmp_path: Path, results: Path) -> None:
    """Parquet files without latscope's magic, or of a newer version, or truncated, are refused."""
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"seq": [1, 2]}), plain)
    with pytest.raises(FormatError, match="not a latscope samples file"):
        read_samples(plain)
    run = synthetic_run(results, np.full(10, 1000))
    table = pq.read_table(run.samples_path)
    newer = table.replace_schema_metadata({b"magic": b"latscope-samples", b"schema_version": b"99"})
    pq.write_table(newer, tmp_path / "newer.parquet")
    with pytest.raises(FormatError, match="newer"):
        read_samples(tmp_path / "newer.parquet")
    data = run.samples_path.read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError):
        read_samples(tmp_path / "cut.parquet")


def test_every_released_version_loads() -> None:
    """Each checked-in fixture of a released format version still loads (and migrates)."""
    versions = sorted(FIXTURES.glob("v*"))
    assert versions, "a fixture per released version must exist"
    for d in versions:
        rec = load_run_json(d / "run.json")
        s = read_samples(d / "samples.parquet")
        assert rec.run_id and len(s) == rec.completeness["sent"]


def _run_at(root: Path, run_id: str, created: _dt.datetime, name: str = "") -> StoredRun:
    """A stored run with the given id and creation time (ids and times chosen to disagree)."""
    cols = synthetic_columns(np.full(5, 1000))
    counts = {"sent": 5, "received": 5}
    record = RunRecord(run_id=run_id, name=name, tags=(), created=created.isoformat(timespec="microseconds"),
                       status="complete", config={"period_ns": 1_000_000, "count": 5}, environment={},
                       completeness=counts, summary=summarise(Samples(cols), counts), source={"kind": "synthetic"})
    return ResultsStore(root).save(record, cols)


def test_resolve_by_id_prefix_name_path(results: Path) -> None:
    """Runs are found by full id, unique prefix, name and path; unknown and ambiguous references are errors."""
    store = ResultsStore(results)
    a = synthetic_run(results, np.full(5, 1000), name="alpha")
    b = synthetic_run(results, np.full(5, 1000), name="beta")
    assert store.resolve(a.run_id).path == a.path
    assert store.resolve(b.run_id[:-3]).path == b.path
    assert store.resolve("alpha").path == a.path
    assert store.resolve(str(b.path)).path == b.path
    with pytest.raises(NotFoundError):
        store.resolve("nope")
    with pytest.raises(ConfigError, match="ambiguous"):
        store.resolve(a.run_id[:2])


def test_latest_is_the_newest_by_creation_time(results: Path) -> None:
    """'latest', the order of runs() and a name shared by runs follow the recorded creation time, not the
    directory name; directories that are not runs never win."""
    t0 = _dt.datetime(2026, 11, 1, 12, 0, 0, tzinfo=_dt.UTC)
    # Names sort the other way round from creation times.
    newest = _run_at(results, "20200101-000000-aaaaaa", t0 + _dt.timedelta(hours=2), name="same")
    middle = _run_at(results, "20261101-120000-bbbbbb", t0 + _dt.timedelta(hours=1), name="same")
    oldest = _run_at(results, "20991231-235959-ffffff", t0, name="same")
    (results / "zzzz-junk").mkdir()
    (results / "zzzz-junk" / "run.json").write_text("{}")
    (results / "zzzz-empty").mkdir()
    store = ResultsStore(results)
    runs, bad = store.runs()
    assert [r.path for r in runs] == [oldest.path, middle.path, newest.path]
    assert [p.name for p, _ in bad] == ["zzzz-junk"]
    assert store.resolve("latest").path == newest.path
    assert store.resolve("same").path == newest.path


def test_runs_created_in_the_same_second_keep_their_order(results: Path) -> None:
    """Ids have microseconds: runs made one after the other within a second come back in that order."""
    made = [synthetic_run(results, np.full(5, 1000), name=f"r{i}") for i in range(12)]
    assert len({r.run_id[:15] for r in made}) < len(made), "expected several runs in the same second"
    runs, _ = ResultsStore(results).runs()
    assert [r.run_id for r in runs] == [r.run_id for r in made]
    assert ResultsStore(results).resolve("latest").run_id == made[-1].run_id


def test_old_whole_second_ids_stay_readable(results: Path) -> None:
    """A run of the first id form (whole seconds) loads, resolves and sorts by its creation time among new ones."""
    old = FIXTURES / "v1"
    rec = load_run_json(old / "run.json")
    shutil.copytree(old, results / rec.run_id)
    new = synthetic_run(results, np.full(5, 1000))
    store = ResultsStore(results)
    assert [r.run_id for r in store.runs()[0]] == [rec.run_id, new.run_id]
    assert store.resolve(rec.run_id[:10]).run_id == rec.run_id
    assert new_run_id().count("-") == 3 and rec.run_id.count("-") == 2


def test_unreadable_runs_are_reported_not_fatal(results: Path) -> None:
    """ls-style listing skips a run with a corrupt run.json and says which."""
    good = synthetic_run(results, np.full(5, 1000))
    bad = synthetic_run(results, np.full(5, 1000))
    (bad.path / "run.json").write_text("{garbage")
    runs, broken = ResultsStore(results).runs()
    assert [r.run_id for r in runs] == [good.run_id]
    assert broken and broken[0][0] == bad.path


def test_preflight_needs_space(tmp_path: Path) -> None:
    """A results root without room for the run is refused before anything starts."""
    with pytest.raises(StoreError, match="needs about"):
        ResultsStore(tmp_path / "r").preflight(1 << 62)


def test_preflight_root_is_a_file(tmp_path: Path) -> None:
    """A results root that is a file is a clear error."""
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(StoreError):
        ResultsStore(f).preflight(1)
