"""Resampling for serially dependent latency series: autocorrelation time and block bootstrap.

Consecutive packets are not independent: a busy CPU or a growing queue delays
a whole stretch of packets. Treating 60,000 correlated packets as 60,000
independent draws makes every interval far too narrow, and two runs of the
same configuration then come out "different" merely because n is huge. Two
remedies, both driven by the measured autocorrelation:

- rank tests run on a thinned series (every ``step``-th packet, ``step`` >=
  the integrated autocorrelation time), which is close to independent;
- intervals come from a circular block bootstrap whose blocks are longer than
  the correlation, so each block carries its own share of the dependence.

Formulas are in docs/metrics.md ("Comparing runs").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: Autocorrelation is estimated on at most this many packets (in a few chunks).
ACF_SAMPLE = 200_000
#: Resamples larger than this use the m-out-of-n bootstrap (rescaled deviations).
RESAMPLE_CAP = 400_000


@dataclass(frozen=True)
class Dependence:
    """How far apart two packets must be to be nearly independent."""

    tau: float  # integrated autocorrelation time, in packets (1 = independent)
    window: int  # lags summed (Sokal's window: smallest M with M >= 5 tau(M))
    block: int  # block length of the bootstrap, in packets

    @property
    def step(self) -> int:
        """Thinning step for rank tests: 2 tau, because packets tau apart are still
        noticeably correlated (an AR(1) with tau 17 keeps 0.17 at lag 17, 0.03 at 34)."""
        return max(1, math.ceil(2.0 * self.tau)) if self.tau > 1.0 else 1


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of finite ``values``; tied values share the mean of the ranks they span.

    (numpy only: scipy.stats would cost every process that imports this module 0.8 s.)
    """
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    first = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))
    end = np.append(first[1:], len(ordered))
    out = np.empty(len(values), np.float64)
    out[order] = np.repeat((first + 1 + end) / 2.0, end - first)
    return out


def dependence(values: np.ndarray, max_lag: int = 5000) -> Dependence:
    """Integrated autocorrelation time of ``values`` (finite, in packet order), on ranks.

    Ranks, not raw values: one 10 ms outlier would otherwise dominate every
    autocorrelation product and hide the dependence of the body.
    """
    n = len(values)
    if n < 20:
        return Dependence(1.0, 0, 1)
    chunks = _chunks(n, ACF_SAMPLE)
    max_lag = max(1, min(max_lag, min(b - a for a, b in chunks) // 4))
    acf = np.zeros(max_lag + 1)
    for a, b in chunks:
        acf += _acf(ranks(values[a:b]), max_lag)
    acf /= len(chunks)
    tau, window = 1.0, max_lag
    for m in range(1, max_lag + 1):
        tau += 2.0 * acf[m]
        if m >= 5.0 * tau:
            window = m
            break
    tau = max(1.0, tau)
    block = int(min(max(2 * window, math.ceil(n ** (1 / 3)), 1), max(1, n // 10)))
    return Dependence(tau, window, block)


def _chunks(n: int, total: int, pieces: int = 4) -> list[tuple[int, int]]:
    if n <= total:
        return [(0, n)]
    size = total // pieces
    starts = np.linspace(0, n - size, pieces).astype(int)
    return [(int(s), int(s) + size) for s in starts]


def _acf(x: np.ndarray, max_lag: int) -> np.ndarray:
    """Autocorrelation at lags 0..max_lag, via FFT (O(n log n), exact with zero padding)."""
    x = np.asarray(x, dtype=np.float64) - float(np.mean(x))
    n = len(x)
    size = 1 << (2 * n - 1).bit_length()
    f = np.fft.rfft(x, size)
    ac = np.fft.irfft(f * np.conj(f), size)[: max_lag + 1]
    return ac / ac[0] if ac[0] > 0 else np.zeros(max_lag + 1)


def block_bootstrap(series: np.ndarray, stat: Callable[[np.ndarray], np.ndarray], block: int, resamples: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Circular block bootstrap of ``stat`` over ``series``.

    Returns ``(estimate, deviations)``: the statistic on the data, and for each
    resample its deviation from the estimate, already scaled to the full
    length (m-out-of-n with factor sqrt(m/n) when the series is longer than
    RESAMPLE_CAP, which keeps a 10-million-packet comparison affordable).
    """
    n = len(series)
    est = np.asarray(stat(series), dtype=np.float64)
    m = min(n, RESAMPLE_CAP)
    block = max(1, min(block, m))
    nblocks = math.ceil(m / block)
    offsets = np.arange(block)
    dev = np.empty((resamples, len(est)))
    for i in range(resamples):
        starts = rng.integers(0, n, nblocks)
        idx = (starts[:, None] + offsets).ravel()[:m] % n
        dev[i] = np.asarray(stat(series[idx]), dtype=np.float64) - est
    if m < n:
        dev *= math.sqrt(m / n)
    return est, dev


def hierarchical_bootstrap(runs: list[np.ndarray], stat: Callable[[np.ndarray], np.ndarray], blocks: list[int],
                           resamples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two-level bootstrap of ``stat`` over repeated runs of one configuration.

    Each resample draws as many runs as there are, with replacement, then a
    circular block resample of each drawn run, and pools them. The spread
    then holds what one run cannot show: how much whole runs of the same
    configuration differ (another moment on a busy machine, another CPU
    placement). Resamples of long runs are shortened to RESAMPLE_CAP in total
    and *not* rescaled: the run-to-run part of the spread does not shrink
    with more packets, so the intervals err on the wide side.
    """
    est = np.asarray(stat(np.concatenate(runs)), dtype=np.float64)
    k = len(runs)
    cap = max(1, RESAMPLE_CAP // k)
    dev = np.empty((resamples, len(est)))
    for i in range(resamples):
        parts = []
        for j in rng.integers(0, k, k):
            series = runs[j]
            n = len(series)
            m = min(n, cap)
            block = max(1, min(blocks[j], m))
            starts = rng.integers(0, n, math.ceil(m / block))
            parts.append(series[(starts[:, None] + np.arange(block)).ravel()[:m] % n])
        dev[i] = np.asarray(stat(np.concatenate(parts)), dtype=np.float64) - est
    return est, dev


def interval(estimate: float, dev_a: np.ndarray, dev_b: np.ndarray, alpha: float) -> tuple[float, float]:
    """Percentile interval of (B - A) from independent bootstrap deviations of A and B."""
    diffs = estimate + dev_b - dev_a
    diffs = diffs[np.isfinite(diffs)]
    if len(diffs) == 0:
        return (math.nan, math.nan)
    lo, hi = np.percentile(diffs, (100 * alpha / 2, 100 * (1 - alpha / 2)))
    return float(lo), float(hi)
