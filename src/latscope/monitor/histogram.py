"""Latency distributions in bounded memory: an interval's percentiles and the Prometheus buckets.

An hour at 10 kHz is 36 million latencies; the monitor keeps none of them.
Each interval's latencies are counted into log-linear buckets (SUB_BITS bits
below the leading one: 128 buckets per power of two, each 1/128 = 0.78 % of
its lower edge wide), from which percentiles are read back as the bucket's
upper edge, capped at the exact maximum: a reported percentile is never below
the true one and at most 0.78 % above it. Count, sum, min and max are exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

SUB_BITS = 7
SUB = 1 << SUB_BITS
#: Latencies up to 2**MAX_EXP ns (1100 s) have a bucket of their own; larger ones share the last.
MAX_EXP = 40
BUCKETS = (MAX_EXP + 1) * SUB + 1

#: Prometheus histogram upper bounds (ns): 1-2-5 steps from 1 µs to 1 s, fitting a LAN's microseconds.
PROM_BOUNDS_NS = tuple(m * 10**e for e in range(3, 9) for m in (1, 2, 5)) + (1_000_000_000,)


def bucket_of(values_ns: np.ndarray) -> np.ndarray:
    """Bucket index of each latency (int64 ns); 0 holds zero and negative latencies."""
    v = np.asarray(values_ns, dtype=np.int64)
    out = np.zeros(len(v), dtype=np.int64)
    pos = v > 0
    if not pos.any():
        return out
    mant, exp = np.frexp(np.minimum(v[pos], (1 << (MAX_EXP + 1)) - 1).astype(np.float64))
    e = exp.astype(np.int64) - 1                      # v in [2**e, 2**(e+1))
    sub = np.floor((mant * 2.0 - 1.0) * SUB).astype(np.int64)
    out[pos] = 1 + e * SUB + sub
    return out


def upper_edge(bucket: int) -> int:
    """The largest latency (ns) bucket ``bucket`` holds."""
    if bucket <= 0:
        return 0
    e, sub = divmod(bucket - 1, SUB)
    return int(np.ceil((1 + (sub + 1) / SUB) * 2.0**e)) - 1


@dataclass
class Distribution:
    """Counts per bucket and the exact count, sum, min and max of the latencies added."""

    counts: np.ndarray = field(default_factory=lambda: np.zeros(BUCKETS, np.int64))
    n: int = 0
    total_ns: int = 0
    min_ns: int | None = None
    max_ns: int | None = None

    def add(self, values_ns: np.ndarray) -> None:
        if len(values_ns) == 0:
            return
        self.counts += np.bincount(bucket_of(values_ns), minlength=BUCKETS)
        self.n += len(values_ns)
        self.total_ns += int(values_ns.sum())
        lo, hi = int(values_ns.min()), int(values_ns.max())
        self.min_ns = lo if self.min_ns is None else min(self.min_ns, lo)
        self.max_ns = hi if self.max_ns is None else max(self.max_ns, hi)

    def percentile(self, q: float) -> int | None:
        """The q-th percentile (0..100) as the upper edge of its bucket (nearest rank), capped at the max."""
        if self.n == 0 or self.max_ns is None:
            return None
        # Rounded first: 99.9 / 100 * 5000 is 4995.000000000001 in floating point, not rank 4996.
        rank = max(1, math.ceil(round(q * self.n / 100.0, 6)))
        b = int(np.searchsorted(np.cumsum(self.counts), rank))
        return min(upper_edge(b), self.max_ns)


def prometheus_counts(values_ns: np.ndarray) -> np.ndarray:
    """How many latencies fall at or below each of PROM_BOUNDS_NS, per bound (not cumulative), and above."""
    idx = np.searchsorted(np.asarray(PROM_BOUNDS_NS, np.int64), np.asarray(values_ns, np.int64), side="left")
    return np.bincount(idx, minlength=len(PROM_BOUNDS_NS) + 1)
