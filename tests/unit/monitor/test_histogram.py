"""The monitor's bounded-memory distribution: percentiles never below the exact ones, at most 1/128 above."""

from __future__ import annotations

import numpy as np

from latscope.monitor.histogram import PROM_BOUNDS_NS, Distribution, bucket_of, prometheus_counts, upper_edge


def test_every_value_is_at_most_its_bucket_upper_edge_and_above_the_previous() -> None:
    """Each value lies in its bucket: at or below its upper edge, above the previous bucket's."""
    v = np.unique(np.concatenate([np.arange(0, 5000), np.geomspace(1, 2**40, 20000).astype(np.int64)]))
    b = bucket_of(v)
    assert np.all(np.diff(b) >= 0)
    for x, i in zip(v[::97], b[::97], strict=True):
        assert x <= upper_edge(int(i))
        assert i == 0 or x > upper_edge(int(i) - 1)


def test_percentiles_bound_the_exact_ones_from_above_within_one_bucket() -> None:
    """Heavy-tailed latencies: each percentile within [exact, exact * (1 + 1/128)], max and count exact."""
    rng = np.random.default_rng(7)
    lat = (rng.lognormal(9.5, 0.6, 200_000) + rng.pareto(1.5, 200_000) * 2000).astype(np.int64) + 1
    d = Distribution()
    for part in np.array_split(lat, 13):
        d.add(part)
    s = np.sort(lat)
    for q in (50, 90, 99, 99.9, 99.99):
        exact = s[int(np.ceil(round(q * len(s) / 100, 6))) - 1]
        got = d.percentile(q)
        assert got is not None and exact <= got <= exact * (1 + 1 / 128) + 1, q
    assert d.max_ns == s[-1] and d.min_ns == s[0] and d.n == len(s) and d.total_ns == int(lat.sum())
    assert Distribution().percentile(99) is None


def test_prometheus_counts_put_a_value_on_its_bound_into_that_bucket() -> None:
    """Prometheus buckets are 'less than or equal': 1000 ns counts in le=1e-06, 1001 in the next."""
    counts = prometheus_counts(np.array([1000, 1001, 10**10]))
    assert counts[0] == 1 and counts[1] == 1 and counts[-1] == 1 and len(counts) == len(PROM_BOUNDS_NS) + 1
