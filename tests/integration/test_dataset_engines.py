"""One exported fleet dataset, three engines: `latscope sql --dataset` (DuckDB), Dask and Spark agree with the truth.

The fleet: three hosts, each with a slow run over two and a half days and a
100 Hz run of 400 s across an hour boundary inside it (two files in one
partition), heavy-tailed latencies and 1 % loss: 210,000 packets. It is
exported once per module with the real verb; every engine runs the example
job of examples/ (or the same query in SQL) and must give the packets, losses
and p99.9 per host and hour that numpy computes from the planted arrays.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support import BASE_NS, ar1_lognormal, synthetic_run

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
HOUR = 3_600_000_000_000
HOSTS = ("edge-1", "edge-2", "core.lab")
#: The send time synthetic_columns gives packet i: base + i * period + 2 µs wake-up + 0.5 µs.
SEND_OFFSET = 2_500

QUERY = ("SELECT host, date, hour, count(*) AS packets, count(*) FILTER (WHERE lost) AS lost, "
         "quantile_cont(latency_ns, 0.999) / 1e3 AS p999_us, max(latency_ns) / 1e3 AS max_us "
         "FROM samples GROUP BY ALL ORDER BY ALL")


def _example(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The exported dataset and the truth: {(host, date, hour): (packets, lost, p999_us, max_us)}."""
    import datetime as _dt

    base = tmp_path_factory.mktemp("fleet")
    store = base / "store"
    rng = np.random.default_rng(12)
    per_hour: dict[tuple[str, str, int], list[np.ndarray]] = {}
    losses: dict[tuple[str, str, int], int] = {}
    counts: dict[tuple[str, str, int], int] = {}
    for i, host in enumerate(HOSTS):
        for n, period, start in ((30_000, 7_500_000_000, BASE_NS + i * 977_000_000_000),
                                 (40_000, 10_000_000, BASE_NS + (30 + i) * HOUR - 200_000_000_000)):
            latency = np.round(ar1_lognormal(rng, n, 0.7, 40_000, 0.6)).astype(np.int64)
            lost = rng.random(n) < 0.01
            synthetic_run(store, latency, period_ns=period, lost=lost, base_ns=start,
                          environment={"before": {"kernel": {"hostname": host}}}, name=f"{host}-{period}")
            hour = (start + np.arange(n, dtype=np.int64) * period + SEND_OFFSET) // HOUR
            for h in np.unique(hour):
                sel = hour == h
                when = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC) + _dt.timedelta(hours=int(h))
                key = (host, f"{when:%Y-%m-%d}", when.hour)
                per_hour.setdefault(key, []).append(latency[sel & ~lost])
                losses[key] = losses.get(key, 0) + int(np.count_nonzero(sel & lost))
                counts[key] = counts.get(key, 0) + int(np.count_nonzero(sel))
    truth = {}
    for key, parts in per_hour.items():
        lat = np.concatenate(parts)
        truth[key] = (counts[key], losses[key], np.percentile(lat, 99.9) / 1e3, lat.max() / 1e3)
    dataset = base / "dataset"
    r = subprocess.run([str(BIN / "latscope"), "export", "--dataset", str(dataset), "--results", str(store)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "exported 6 runs (210000 packets)" in r.stderr
    return dataset, truth


def _check(rows: list[tuple], truth: dict) -> None:
    """Rows (host, date, hour, packets, lost, p999_us, max_us) equal the truth; percentiles to the nanosecond."""
    got = {(str(h), str(d), int(hr)): (int(p), int(lo), float(q), float(m)) for h, d, hr, p, lo, q, m in rows}
    assert set(got) == set(truth)
    assert len({k[1] for k in truth}) >= 3 and len({k[0] for k in truth}) == 3  # several days, several hosts
    for key, (packets, lost, p999, mx) in truth.items():
        g = got[key]
        assert (g[0], g[1]) == (packets, lost), key
        assert abs(g[2] - p999) < 1e-3 and abs(g[3] - mx) < 1e-3, (key, g, truth[key])


def test_duckdb_through_latscope_sql(fleet: tuple[Path, dict]) -> None:
    """`latscope sql --dataset` answers the per-host, per-hour query exactly."""
    dataset, truth = fleet
    r = subprocess.run([str(BIN / "latscope"), "sql", "--dataset", str(dataset), "--csv", QUERY],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "LATSCOPE_RESULTS": "/nonexistent"})
    assert r.returncode == 0, r.stderr
    rows = list(csv.reader(io.StringIO(r.stdout)))
    assert rows[0] == ["host", "date", "hour", "packets", "lost", "p999_us", "max_us"]
    _check([tuple(row) for row in rows[1:]], truth)


def test_dask_example_job(fleet: tuple[Path, dict]) -> None:
    """examples/dataset_dask.py reads the files as they are and gives the same numbers."""
    pytest.importorskip("dask.dataframe", reason="the 'dataset' extra is not installed (./dev test installs it)")
    import dask

    dataset, truth = fleet
    with dask.config.set(scheduler="threads"):
        out = _example("dataset_dask").per_group(dataset)
    assert list(out.columns) == ["host", "date", "hour", "packets", "lost", "loss", "p999_us", "max_us"]
    assert (out["loss"] == out["lost"] / out["packets"]).all()
    _check(list(out[["host", "date", "hour", "packets", "lost", "p999_us", "max_us"]].itertuples(index=False)),
           truth)


@pytest.fixture(scope="module")
def spark():
    """One local SparkSession for the module (starting one takes tens of seconds)."""
    pytest.importorskip("pyspark", reason="the 'dataset' extra is not installed (./dev test installs it)")
    job = _example("dataset_spark")
    # A JVM that lives for a few seconds: the quick compiler only and one GC thread take a third off its CPU
    # (11 of 33 s here), which the rest of the suite, running beside it, gets instead.
    saved = os.environ.get("JAVA_TOOL_OPTIONS")
    os.environ["JAVA_TOOL_OPTIONS"] = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
    try:
        session = job.session("local[2]", "2g")
    finally:
        if saved is None:
            del os.environ["JAVA_TOOL_OPTIONS"]
        else:
            os.environ["JAVA_TOOL_OPTIONS"] = saved
    session.sparkContext.setLogLevel("ERROR")
    yield session
    # stop() leaves PySpark's JVM (the py4j gateway, our child) running for reuse: end it and reap it, so no
    # process of this test outlives it (test_import_tools checks pytest has no children left).
    from pyspark import SparkContext

    gateway = SparkContext._gateway
    session.stop()
    if gateway is not None:
        gateway.shutdown()
        proc = getattr(gateway, "proc", None)
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        SparkContext._gateway = None
        SparkContext._jvm = None


@pytest.mark.slow
def test_spark_example_job(fleet: tuple[Path, dict], spark) -> None:
    """examples/dataset_spark.py (Spark local) reads the files as they are and gives the same numbers."""
    dataset, truth = fleet
    job = _example("dataset_spark")
    rows = job.per_group(spark, dataset).collect()
    assert list(rows[0].asDict()) == ["host", "date", "hour", "packets", "lost", "loss", "p999_us", "max_us"]
    _check([(r.host, r.date, r.hour, r.packets, r.lost, r.p999_us, r.max_us) for r in rows], truth)
    # The partition columns have the declared types, not Spark's inferred ones (date would be a DateType).
    types = dict(job.read_samples(spark, dataset).dtypes)
    assert (types["host"], types["date"], types["hour"], types["send_ns"]) == ("string", "string", "int", "bigint")
