"""The dataset layout: partitions by host and UTC hour of the send time, replacement, schema document, views."""

from __future__ import annotations

import datetime as _dt
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from latscope.errors import ConfigError, FormatError
from latscope.importers.common import build
from latscope.store import catalog, dataset
from latscope.store.layout import ResultsStore, StoredRun, load_run_dir, new_run_id
from latscope.store.partitions import MONITOR_SCHEMA
from latscope.store.runfile import RunRecord, write_json_atomic
from latscope.store.samples import MISSING, Samples
from tests.support import BASE_NS, synthetic_run

HOUR = 3_600_000_000_000
#: BASE_NS is 2026-11-18 11:06:40 UTC.
START = _dt.datetime.fromtimestamp(BASE_NS / 1e9, _dt.UTC)


def _host(name: str) -> dict:
    return {"before": {"kernel": {"hostname": name}}}


def _export(root: Path, runs: list[StoredRun]) -> dataset.Dataset:
    ds = dataset.open_dataset(root, create=True)
    dataset.export_runs(ds, runs)
    return ds


def _rows_by_partition(ds: dataset.Dataset) -> dict[tuple[str, str, str], int]:
    out: dict[tuple[str, str, str], int] = {}
    for f in dataset.sample_files(ds):
        key = (f.parents[2].name, f.parents[1].name, f.parent.name)
        out[key] = out.get(key, 0) + pq.ParquetFile(f).metadata.num_rows
    return out


def test_packets_go_to_the_utc_hour_of_their_send_time(tmp_path: Path) -> None:
    """Each packet lands in host=H/date=D/hour=HH of its send_ns; the counts per hour are numpy's."""
    # 4000 packets 1 s apart from 11:06:40: across the hour boundary at 12:00.
    run = synthetic_run(tmp_path / "store", np.full(4000, 20_000), period_ns=1_000_000_000,
                        environment=_host("rack-1"))
    ds = _export(tmp_path / "ds", [run])
    send = run.samples(["send_ns"])["send_ns"]
    hours, counts = np.unique(send // HOUR, return_counts=True)
    expected = {}
    for h, c in zip(hours, counts, strict=True):
        when = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC) + _dt.timedelta(hours=int(h))
        expected[("host=rack-1", f"date={when:%Y-%m-%d}", f"hour={when:%H}")] = int(c)
    assert len(expected) == 2 and _rows_by_partition(ds) == expected
    names = sorted(f.name for f in dataset.sample_files(ds))
    first_of_second_hour = int(np.flatnonzero(send // HOUR == hours[1])[0])
    assert names == sorted([f"7-0-{run.run_id}.parquet", f"7-{first_of_second_hour}-{run.run_id}.parquet"])


def test_files_carry_run_id_and_the_samples_columns(tmp_path: Path) -> None:
    """A sample file holds run_id plus samples.parquet's columns, int64 without a timestamp type, magic set."""
    run = synthetic_run(tmp_path / "store", np.full(100, 20_000), environment=_host("h"))
    ds = _export(tmp_path / "ds", [run])
    (f,) = dataset.sample_files(ds)
    schema = pq.read_schema(f)
    # Exactly the schema of the files `latscope monitor` writes: samples.parquet's columns and magic, then run_id.
    assert schema.names == ["seq", "stream", "sched_ns", "wake_ns", "send_ns", "tx_sw_ns", "tx_hw_ns",
                            "rx_hw_ns", "rx_sw_ns", "rx_user_ns", "far_rx_ns", "far_tx_ns", "flags", "run_id"]
    assert schema.equals(MONITOR_SCHEMA, check_metadata=True)
    assert str(schema.field("send_ns").type) == "int64" and schema.metadata[b"magic"] == b"latscope-samples"
    table = pq.read_table(f)
    assert set(table["run_id"].to_pylist()) == {run.run_id}
    assert table["rx_sw_ns"].to_pylist() == run.samples(["rx_sw_ns"])["rx_sw_ns"].tolist()
    assert table["tx_hw_ns"].null_count == 100  # absent timestamps stay null, never the int64 sentinel


def test_schema_document_describes_the_files(tmp_path: Path) -> None:
    """_latscope_dataset.json names format and version, and the columns and types the files really have."""
    run = synthetic_run(tmp_path / "store", np.full(100, 20_000), environment=_host("h"))
    ds = _export(tmp_path / "ds", [run])
    doc = json.loads((ds.root / dataset.SCHEMA_FILE).read_text())
    assert doc["format"] == "latscope-dataset" and doc["schema_version"] == 1
    (f,) = dataset.sample_files(ds)
    schema = pq.read_schema(f)
    assert [(c["name"], c["type"]) for c in doc["samples"]["columns"]] == [
        (fl.name, dataset._type_name(fl.type)) for fl in schema]
    assert [c["name"] for c in doc["samples"]["partitioning"]["columns"]] == ["host", "date", "hour"]
    runs_file = ds.runs_root / f"{run.run_id}.parquet"
    assert [c["name"] for c in doc["runs"]["columns"]] == pq.read_schema(runs_file).names


def test_reexport_replaces_and_removes_stale_files(tmp_path: Path) -> None:
    """Exporting a run again leaves one copy: same files replaced, a changed host's old files removed."""
    store = tmp_path / "store"
    run = synthetic_run(store, np.full(5000, 20_000), period_ns=1_000_000_000, environment=_host("old"))
    other = synthetic_run(store, np.full(100, 30_000), environment=_host("old"))
    ds = _export(tmp_path / "ds", [run, other])
    before = _rows_by_partition(ds)
    dataset.export_runs(ds, [run])
    assert _rows_by_partition(ds) == before
    # The same run, now recorded as measured on another host (a copy of its directory, run.json edited).
    copy = tmp_path / "copy" / run.run_id
    shutil.copytree(run.path, copy)
    doc = json.loads((copy / "run.json").read_text())
    doc["environment"] = _host("new")
    write_json_atomic(copy / "run.json", doc)
    (result,) = dataset.export_runs(ds, [load_run_dir(copy, strict_name=True)])
    assert result.removed == 2
    hosts = {k[0] for k in _rows_by_partition(ds)}
    assert hosts == {"host=new", "host=old"}  # `other` stays on host old
    con, _ = dataset.connect(ds)
    counts = dict(con.execute("SELECT run_id, count(*) FROM samples GROUP BY run_id").fetchall())
    assert counts == {run.run_id: 5000, other.run_id: 100}
    assert con.execute("SELECT host FROM runs WHERE run_id = ?", [run.run_id]).fetchone() == ("new",)
    assert {dataset.run_of_file(f.name) for f in (ds.samples_root / "host=old").rglob("*.parquet")} == {other.run_id}
    # The hour only the moved run had is gone with its file, not left as an empty directory.
    assert sorted(p.name for p in (ds.samples_root / "host=old" / "date=2026-11-18").iterdir()) == ["hour=11"]


def _tricky(root: Path) -> StoredRun:
    """hw and sw receive times, losses, heavy reordering, equal arrival times, a missing rx_user."""
    from latscope.analysis.summary import summarise

    rng = np.random.default_rng(7)
    n = 3000
    seq = np.arange(n)
    sched = BASE_NS + seq * 2_000_000_000  # 100 minutes: several hour files
    wake = sched + rng.integers(1_000, 50_000, n)
    send = wake + 500
    tx_sw = send + rng.integers(1_000, 9_000, n)
    tx_hw = np.where(rng.random(n) < 0.3, tx_sw + 700, MISSING)
    rx_sw = send + rng.integers(10_000, 6_000_000_000, n)
    rx_sw[rng.random(n) < 0.03] = MISSING
    rx_sw[100] = rx_sw[101] = rx_sw[99]
    rx_hw = np.where((rng.random(n) < 0.5) & (rx_sw != MISSING), rx_sw - 300, MISSING)
    rx_user = np.where(rx_sw != MISSING, rx_sw + 8_000, MISSING)
    rx_user[5] = MISSING
    times = {"sched_ns": sched, "wake_ns": wake, "send_ns": send, "tx_sw_ns": tx_sw, "tx_hw_ns": tx_hw,
             "rx_sw_ns": rx_sw, "rx_hw_ns": rx_hw, "rx_user_ns": rx_user}
    cols, counts = build(seq, times, arrival="rx_best")
    rec = RunRecord(run_id=new_run_id(), name="tricky", tags=("t",), created=START.isoformat(),
                    status="complete", config={"period_ns": 2_000_000_000, "topology": "veth", "nested": {"a": 1}},
                    environment=_host("h1"), completeness=counts, summary=summarise(Samples(cols), counts),
                    source={"kind": "synthetic"})
    return ResultsStore(root).save(rec, cols)


def test_views_over_the_dataset_equal_the_stores(tmp_path: Path) -> None:
    """Every column of samples (delta_ns included) and of runs reads the same from the dataset as from the store."""
    run = _tricky(tmp_path / "store")
    plain = synthetic_run(tmp_path / "store", np.arange(1000) * 10 + 5_000, environment=_host("h2"))
    ds = _export(tmp_path / "ds", [run, plain])
    assert len(dataset.sample_files(ds)) == 3  # tricky spans two hours
    a, _ = catalog.connect([run, plain])
    b, _ = dataset.connect(ds)
    cols = [d[0] for d in a.execute("SELECT * FROM samples LIMIT 0").description]
    listed = ", ".join(cols)
    left = a.execute(f"SELECT {listed} FROM samples ORDER BY run_id, seq").fetchall()
    right = b.execute(f"SELECT {listed} FROM samples ORDER BY run_id, seq").fetchall()
    assert len(left) == 4000 and left == right
    assert b.execute("SELECT count(*) FROM samples WHERE delta_ns IS NOT NULL").fetchone()[0] > 2800
    run_cols = [d[0] for d in a.execute("SELECT * FROM runs LIMIT 0").description]
    assert [d[0] for d in b.execute("SELECT * FROM runs LIMIT 0").description] == [*run_cols, "host", "config"]
    same = ", ".join(c for c in run_cols if c != "path")
    assert (a.execute(f"SELECT {same} FROM runs ORDER BY run_id").fetchall()
            == b.execute(f"SELECT {same} FROM runs ORDER BY run_id").fetchall())
    assert b.execute("SELECT config['nested.a'], config['topology'] FROM runs WHERE name = 'tricky'").fetchone() \
        == ("1", "veth")
    extra = b.execute("SELECT DISTINCT host, date, hour FROM samples WHERE run_id = ? ORDER BY ALL",
                      [run.run_id]).fetchall()
    assert extra[0] == ("h1", "2026-11-18", 11) and len(extra) >= 2


def test_where_filters_select_runs_in_both_views(tmp_path: Path) -> None:
    """--where over a dataset keeps the same runs as over the store, in runs and samples."""
    store = tmp_path / "store"
    a = synthetic_run(store, np.full(100, 20_000), name="a", tags=("bridge",), environment=_host("h"))
    synthetic_run(store, np.full(100, 90_000), name="b", environment=_host("h"))
    ds = _export(tmp_path / "ds", ResultsStore(store).runs()[0])
    for where in ("tag=bridge", "latency_p99_us<50", "config.topology=synthetic"):
        con, _ = dataset.connect(ds, [catalog.parse_filter(where)])
        ids = {r[0] for r in con.execute("SELECT run_id FROM runs UNION SELECT run_id FROM samples").fetchall()}
        expect = {r.run_id for r in catalog.select(ResultsStore(store).runs()[0], [catalog.parse_filter(where)])}
        assert ids == expect
    con, _ = dataset.connect(ds, [catalog.parse_filter("name=a")])
    assert con.execute("SELECT DISTINCT run_id FROM samples").fetchall() == [(a.run_id,)]


def test_partition_time_falls_back(tmp_path: Path) -> None:
    """Without send_ns a packet goes by sched_ns, without any timestamp by the run's created hour."""
    seq = np.arange(4)
    sched = np.array([BASE_NS, BASE_NS + 5 * HOUR, MISSING, MISSING])
    send = np.array([BASE_NS + 2 * HOUR, MISSING, MISSING, MISSING])
    rx = np.array([MISSING, MISSING, BASE_NS + 7 * HOUR, MISSING])
    cols, counts = build(seq, {"sched_ns": sched, "send_ns": send, "rx_sw_ns": rx})
    created = START + _dt.timedelta(hours=30)
    rec = RunRecord(run_id=new_run_id(), name="", tags=(), created=created.isoformat(), status="complete",
                    config={}, environment={}, completeness=counts, summary={}, source={"kind": "imported"})
    run = ResultsStore(tmp_path / "store").save(rec, cols)
    ds = _export(tmp_path / "ds", [run])
    got = _rows_by_partition(ds)
    assert got == {("host=unknown", "date=2026-11-18", "hour=13"): 1, ("host=unknown", "date=2026-11-18", "hour=16"): 1,
                   ("host=unknown", "date=2026-11-18", "hour=18"): 1, ("host=unknown", "date=2026-11-19", "hour=17"): 1}


def test_host_names_become_safe_partition_values() -> None:
    """Characters outside [A-Za-z0-9._-] become _, an empty or dot-only name is unknown."""
    assert dataset.partition_value("db-01.example.org") == "db-01.example.org"
    assert dataset.partition_value("a/b=c d") == "a_b_c_d"
    assert dataset.partition_value("..") == "unknown"


def test_bad_targets_are_refused(tmp_path: Path) -> None:
    """A non-dataset directory, a file, a newer or foreign schema document: one clear error, nothing written."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds other files"):
        dataset.open_dataset(other, create=True)
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        dataset.open_dataset(tmp_path / "file", create=True)
    with pytest.raises(FormatError, match="not a latscope dataset"):
        dataset.open_dataset(tmp_path / "missing")
    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / dataset.SCHEMA_FILE).write_text(json.dumps({"format": "latscope-dataset", "schema_version": 99}))
    with pytest.raises(FormatError, match="newer than this latscope"):
        dataset.open_dataset(newer, create=True)
    (newer / dataset.SCHEMA_FILE).write_text(json.dumps({"format": "other", "schema_version": 1}))
    with pytest.raises(FormatError, match="not a latscope dataset schema"):
        dataset.open_dataset(newer)


def test_damaged_sample_file_stops_or_is_skipped(tmp_path: Path) -> None:
    """A truncated sample file stops sql with its path; skip_bad leaves it out and says so."""
    store = tmp_path / "store"
    good = synthetic_run(store, np.full(100, 20_000), environment=_host("a"))
    bad = synthetic_run(store, np.full(100, 20_000), environment=_host("b"))
    ds = _export(tmp_path / "ds", [good, bad])
    (victim,) = [f for f in dataset.sample_files(ds) if bad.run_id in f.name]
    victim.write_bytes(victim.read_bytes()[:200])
    with pytest.raises(FormatError, match=str(victim.name)):
        dataset.connect(ds)
    con, skipped = dataset.connect(ds, skip_bad=True)
    assert [s.run_id for s in skipped] == [bad.run_id]
    assert con.execute("SELECT DISTINCT run_id FROM samples").fetchall() == [(good.run_id,)]


def test_monitor_output_and_exports_share_a_dataset(tmp_path: Path) -> None:
    """sql --dataset reads a monitor's directory as it is, and an export into it adds runs beside its files."""
    from latscope.store import partitions
    from tests.support import synthetic_columns

    root = tmp_path / "ds"
    cols = synthetic_columns(np.full(500, 40_000))
    path = partitions.samples_path(root, "mon-host", int(cols["sched_ns"][0]), 7, 0)
    writer = partitions.SamplesWriter(path, "monitor-run")
    writer.add(cols)
    writer.commit()
    ds = dataset.open_dataset(root)  # no schema document: the monitor's layout is recognised
    con, _ = dataset.connect(ds)
    assert con.execute("SELECT run_id, host, count(*), max(latency_ns) FROM samples GROUP BY ALL").fetchall() == [
        ("monitor-run", "mon-host", 500, 40_000)]
    run = synthetic_run(tmp_path / "store", np.full(100, 20_000), environment=_host("mon-host"))
    dataset.export_runs(dataset.open_dataset(root, create=True), [run])
    assert path.exists()  # the monitor's file is not the run's: never replaced or removed
    con, _ = dataset.connect(dataset.open_dataset(root))
    assert sorted(con.execute("SELECT run_id, count(*) FROM samples GROUP BY ALL").fetchall()) == sorted(
        [("monitor-run", 500), (run.run_id, 100)])
