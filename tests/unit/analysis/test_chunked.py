"""Summaries computed row group by row group equal the in-memory summary exactly, reordering included."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from latscope.analysis import chunked, metrics
from latscope.analysis.columns import ColumnReader, LazyColumns
from latscope.analysis.stats import describe
from latscope.analysis.summary import summarise, summarise_columns
from latscope.store.samples import MISSING, Samples, read_samples
from tests.support import samples_file, synthetic_columns


def _file(tmp_path: Path, seed: int, reorder: bool) -> Path:
    rng = np.random.default_rng(seed)
    n = 4000
    # Latencies up to 3 periods reorder arrivals; a 50 ms outlier overtakes row groups.
    lat = rng.integers(1_000, 3_000_000, n) if reorder else rng.integers(1_000, 9_000, n)
    lat[rng.integers(0, n, 20)] = 50_000_000
    cols = synthetic_columns(lat, 1_000_000, lost=rng.random(n) < 0.03, wakeup_ns=rng.integers(0, 9_000, n))
    return samples_file(tmp_path / f"s{seed}.parquet", cols, row_group_size=int(rng.integers(150, 900)))


@pytest.mark.parametrize("seed,reorder", [(0, False), (1, True), (2, True), (3, False)])
def test_lazy_summary_equals_in_memory_summary(tmp_path: Path, seed: int, reorder: bool) -> None:
    """Every number of summarise() is the same when computed from a LazyColumns one row group at a time."""
    path = _file(tmp_path, seed, reorder)
    ref = summarise(read_samples(path), {"duplicated": 2, "foreign": 1})
    got, _ = summarise_columns(LazyColumns(ColumnReader(path)), {"duplicated": 2, "foreign": 1})
    assert json.dumps(got) == json.dumps(ref)


@pytest.mark.parametrize("seed", [1, 2, 5])
def test_streamed_delta_equals_global_sort(tmp_path: Path, seed: int) -> None:
    """delta from the chunk stream equals metrics.delta bit for bit, on whole files and on slices."""
    path = _file(tmp_path, seed, True)
    full = read_samples(path)
    for rows in (slice(0, 4000), slice(333, 3210)):
        sub = Samples({k: v[rows] for k, v in full.columns.items()})
        ref = metrics.delta(sub)
        got = chunked.scan(LazyColumns(ColumnReader(path), rows), ["delta"], None,
                           lambda s, r: {}).values["delta"]
        assert np.array_equal(np.isnan(ref), np.isnan(got))
        assert np.array_equal(ref[~np.isnan(ref)], got[~np.isnan(got)])


def test_delta_stream_falls_back_when_a_later_chunk_arrives_first(tmp_path: Path) -> None:
    """A packet arriving before everything already finalised forces the exact global sort: same result."""
    n = 3000
    cols = synthetic_columns(np.full(n, 5_000), 1_000_000)
    cols["rx_sw_ns"][2900] = cols["send_ns"][10]  # arrives (impossibly) early, two chunks back
    path = samples_file(tmp_path / "s.parquet", cols, row_group_size=500)
    ref = metrics.delta(read_samples(path))
    got = chunked.scan(LazyColumns(ColumnReader(path)), ["delta"], None, lambda s, r: {}).values["delta"]
    assert np.array_equal(np.isnan(ref), np.isnan(got)) and np.array_equal(ref[~np.isnan(ref)], got[~np.isnan(got)])


def test_describe_p99999_and_scratch() -> None:
    """p99.999 equals numpy's; scratch=True gives the same numbers as a copy would."""
    rng = np.random.default_rng(9)
    v = rng.lognormal(10, 0.6, 200_000)
    keep = v.copy()
    a = describe(v)
    b = describe(v, scratch=True)
    assert a == b
    assert a.percentiles["p99999"] == pytest.approx(np.percentile(keep, 99.999))


def test_hardware_column_preferred_when_present(tmp_path: Path) -> None:
    """With some rx_hw timestamps, rx_best uses them (the zero-stride shortcut only applies to all-null)."""
    cols = synthetic_columns(np.full(100, 5_000), 1_000_000)
    cols["rx_hw_ns"] = np.where(np.arange(100) % 2 == 0, cols["rx_sw_ns"] - 1_000, MISSING)
    path = samples_file(tmp_path / "hw.parquet", cols, row_group_size=30)
    lat = chunked.scan(LazyColumns(ColumnReader(path)), ["latency"], None, lambda s, r: {}).values["latency"]
    assert lat[0] == 4_000 and lat[1] == 5_000
