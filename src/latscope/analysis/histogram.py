"""Latency histograms with bins a person can read: round widths, aligned edges.

Latency distributions have a narrow body and a long, sparse tail. The
automatic width is chosen for the body (Freedman-Diaconis on the data up to
p99.9, widened so the body spans at most ~40 bins) and then rounded up to 1, 2
or 5 times a power of ten nanoseconds; the tail keeps the same width, and the
text rendering folds runs of empty bins, so a 1 s outlier costs one line, not
a million.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from latscope.errors import ConfigError
from latscope.units import parse_duration_ns

#: The body (min .. p99.9) spans at most this many automatic bins.
BODY_BINS = 40
#: No histogram has more bins than this; wider bins are used instead.
MAX_BINS = 5000


@dataclass(frozen=True)
class BinSpec:
    """How to bin: automatically, a number of equal bins over min..max, or a fixed width."""

    count: int | None = None
    width_ns: int | None = None

    @property
    def auto(self) -> bool:
        return self.count is None and self.width_ns is None


def parse_bins(text: str | None) -> BinSpec:
    """``auto`` (or nothing), a bin count such as ``40``, or a width with a unit such as ``2us``."""
    if text is None or text.strip().lower() in ("", "auto"):
        return BinSpec()
    text = text.strip()
    if re.fullmatch(r"\d+", text):
        count = int(text)
        if not 1 <= count <= MAX_BINS:
            raise ConfigError(f"--bins {text}: the number of bins must be between 1 and {MAX_BINS}")
        return BinSpec(count=count)
    width = parse_duration_ns(text, default_unit="us")
    if width <= 0:
        raise ConfigError(f"--bins {text}: the bin width must be longer than 0")
    return BinSpec(width_ns=width)


@dataclass(frozen=True)
class Histogram:
    """Counts of values in [edges[i], edges[i+1]); the last bin includes the maximum."""

    edges_ns: np.ndarray
    counts: np.ndarray

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    @property
    def width_ns(self) -> float:
        return float(self.edges_ns[1] - self.edges_ns[0]) if len(self.edges_ns) > 1 else 0.0

    def as_json(self) -> dict[str, Any]:
        """Only the non-empty bins: ``[[lower_us, upper_us, count], ...]``."""
        nz = np.flatnonzero(self.counts)
        return {
            "bin_width_us": self.width_ns / 1000,
            "total": self.total,
            "bins": [[round(float(self.edges_ns[i]) / 1000, 3), round(float(self.edges_ns[i + 1]) / 1000, 3),
                      int(self.counts[i])] for i in nz],
        }


def nice_width(raw_ns: float) -> int:
    """The smallest of 1, 2, 5 x 10^k ns (at least 1 ns) not below ``raw_ns``."""
    if raw_ns <= 1:
        return 1
    exp = math.floor(math.log10(raw_ns))
    for mult in (1, 2, 5, 10):
        w = mult * 10 ** exp
        if w >= raw_ns:
            return int(w)
    return int(10 ** (exp + 1))  # pragma: no cover - the loop always returns


def auto_width(values: np.ndarray) -> int:
    """Bin width for the body of a heavy-tailed distribution (see module docstring)."""
    lo, q1, q3, body_hi = np.percentile(values, (0.0, 25.0, 75.0, 99.9))
    fd = 2.0 * (q3 - q1) / max(len(values), 1) ** (1 / 3)
    body = (body_hi - lo) / BODY_BINS
    return nice_width(max(fd, body, 1.0))


def histogram(values: np.ndarray, spec: BinSpec = BinSpec()) -> Histogram:
    """Histogram of the finite ``values`` (ns) binned as ``spec`` says."""
    v = values[np.isfinite(values)]
    if len(v) == 0:
        return Histogram(np.zeros(0), np.zeros(0, dtype=np.int64))
    lo_v, hi_v = float(v.min()), float(v.max())
    if spec.count is not None:
        width = max((hi_v - lo_v) / spec.count, 1e-9)
        lo, nbins = lo_v, spec.count
    else:
        width = float(spec.width_ns) if spec.width_ns is not None else float(auto_width(v))
        if (hi_v - lo_v) / width >= MAX_BINS:
            if spec.width_ns is not None:
                raise ConfigError(
                    f"--bins {spec.width_ns}ns would make more than {MAX_BINS} bins over "
                    f"{lo_v / 1000:.3f}..{hi_v / 1000:.3f} us; choose a wider bin"
                )
            width = float(nice_width((hi_v - lo_v) / (MAX_BINS - 1)))
        # Edges on multiples of the width, so bins read 7.000-8.000, not 6.913-7.913.
        lo = math.floor(lo_v / width) * width
        nbins = math.floor((hi_v - lo) / width) + 1
    idx = np.floor((v - lo) / width).astype(np.int64)
    np.clip(idx, 0, nbins - 1, out=idx)
    counts = np.bincount(idx, minlength=nbins).astype(np.int64)
    edges = lo + np.arange(nbins + 1, dtype=np.float64) * width
    return Histogram(edges, counts)


def render_text(hist: Histogram, bar_width: int = 40) -> list[str]:
    """Lines of a text histogram: range in µs, count, share and a bar on a log scale.

    The bar is logarithmic because the tail bins hold one packet where the
    body holds a million; on a linear scale the tail, the part that matters,
    would be invisible. Runs of empty bins are folded into one line.
    """
    if hist.total == 0:
        return ["  (no values)"]
    top = math.log10(int(hist.counts.max()) + 1)
    lines = [f"  histogram (bin {hist.width_ns / 1000:g} us, bar length ~ log10(count)):"]
    empty_from: int | None = None
    for i, c in enumerate(hist.counts):
        if c == 0:
            if empty_from is None:
                empty_from = i
            continue
        if empty_from is not None:
            lines.append(_empty_line(hist, empty_from, i))
            empty_from = None
        bar = "#" * max(1, round(bar_width * math.log10(int(c) + 1) / top))
        share = 100.0 * int(c) / hist.total
        lo, hi = hist.edges_ns[i] / 1000, hist.edges_ns[i + 1] / 1000
        lines.append(f"  {lo:>11.3f} - {hi:>11.3f} us {int(c):>10d} {share:7.3f}% {bar}")
    return lines


def _empty_line(hist: Histogram, first: int, stop: int) -> str:
    n = stop - first
    lo, hi = hist.edges_ns[first] / 1000, hist.edges_ns[stop] / 1000
    return f"  {'':>11} ... {n} empty bin{'s' if n != 1 else ''} ({lo:.3f} - {hi:.3f} us)"
