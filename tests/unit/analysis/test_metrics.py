"""Derived metrics follow the formulas of docs/metrics.md exactly, nulls included."""

from __future__ import annotations

import numpy as np
import pytest

from latscope.analysis import metrics
from latscope.analysis.stats import describe
from latscope.analysis.summary import summarise
from latscope.store.samples import MISSING, Samples
from tests.support import synthetic_columns

M = MISSING
E = 1_795_000_000_000_000_000  # epoch-scale values: float64 cannot hold them exactly


def _samples(**cols: list[int]) -> Samples:
    n = len(next(iter(cols.values())))
    base = {name: np.full(n, M, np.int64) for name in
            ("sched_ns", "wake_ns", "send_ns", "tx_sw_ns", "tx_hw_ns", "rx_hw_ns", "rx_sw_ns", "rx_user_ns")}
    base.update({k: np.asarray(v, dtype=np.int64) for k, v in cols.items()})
    base["seq"] = np.arange(n, dtype=np.int64)
    base["flags"] = np.zeros(n, np.int32)
    return Samples(base)


def test_latency_prefers_hardware_rx() -> None:
    """latency = rx_best - send_ns with rx_best = rx_hw where present, else rx_sw; exact at epoch scale."""
    s = _samples(send_ns=[E, E + 1000, E + 2000], rx_sw_ns=[E + 7, E + 1011, M], rx_hw_ns=[M, E + 1003, M])
    lat = metrics.latency(s)
    assert lat[0] == 7 and lat[1] == 3 and np.isnan(lat[2])


def test_each_formula() -> None:
    """wakeup, sender, path, arrival and e2e use exactly the columns docs/metrics.md names."""
    s = _samples(sched_ns=[E], wake_ns=[E + 11], send_ns=[E + 20], tx_sw_ns=[E + 25], tx_hw_ns=[M],
                 rx_sw_ns=[E + 40], rx_user_ns=[E + 70])
    assert metrics.wakeup_latency(s)[0] == 11
    assert metrics.sender_latency(s)[0] == 5
    assert metrics.path_delay(s)[0] == 15
    assert metrics.arrival_latency(s)[0] == 30
    assert metrics.e2e(s)[0] == 70


def test_delta_in_arrival_order_skips_lost() -> None:
    """delta is the gap to the previously *arrived* packet; lost packets and the first have none."""
    s = _samples(rx_sw_ns=[E, M, E + 3000, E + 2500])
    d = metrics.delta(s)
    assert np.isnan(d[0]) and np.isnan(d[1])
    assert d[3] == 2500 and d[2] == 500


def test_describe_matches_numpy() -> None:
    """min/avg/max/stddev/percentiles equal numpy's on the same data, NaN ignored."""
    rng = np.random.default_rng(3)
    v = rng.lognormal(10, 0.5, 100_000)
    v[::97] = np.nan
    st = describe(v)
    ok = v[~np.isnan(v)]
    assert st.count == len(ok)
    assert st.avg == pytest.approx(ok.mean()) and st.stddev == pytest.approx(ok.std())
    assert st.percentiles["p999"] == pytest.approx(np.percentile(ok, 99.9))
    assert st.percentiles["p9999"] == pytest.approx(np.percentile(ok, 99.99))


def test_describe_empty() -> None:
    """No values: every statistic is None, count 0."""
    st = describe(np.array([np.nan]))
    assert st.count == 0 and st.min is None and st.as_us()["p99"] is None


def test_summary_of_known_latencies() -> None:
    """A run whose latencies are known summarises to exactly those numbers, in µs, with worst seqs."""
    lat = np.full(1000, 80_000, np.int64)
    lat[123] = 500_000
    lat[7] = 300_000
    lost = np.zeros(1000, bool)
    lost[[10, 11]] = True
    s = Samples(synthetic_columns(lat, lost=lost))
    doc = summarise(s, {"duplicated": 1, "foreign": 4})
    assert doc["packets"] == {"sent": 1000, "received": 998, "lost": 2, "duplicated": 1, "reordered": 0,
                              "foreign": 4}
    assert doc["latency_us"]["max"] == 500.0 and doc["latency_us"]["p50"] == 80.0
    assert [w["seq"] for w in doc["worst"][:2]] == [123, 7]
    # Deltas: 580 us after the 500 us packet, 3000 us across the two lost packets.
    assert doc["delta_us"]["min"] == 580.0 and doc["delta_us"]["max"] == 3000.0
    assert doc["duration_ns"] == 999 * 1_000_000


def test_duration_falls_back_to_send_times() -> None:
    """A run without a schedule (an imported CSV) still gets its span, from the send times."""
    cols = synthetic_columns(np.full(101, 50_000, np.int64))
    cols["sched_ns"] = np.full(101, M, np.int64)
    assert summarise(Samples(cols))["duration_ns"] == 100 * 1_000_000
