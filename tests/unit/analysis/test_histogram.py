"""Histograms: readable automatic bins, fixed counts or widths, exact counts, folded text."""

from __future__ import annotations

import numpy as np
import pytest

from latscope.analysis.histogram import BinSpec, histogram, nice_width, parse_bins, render_text
from latscope.errors import ConfigError


def test_parse_bins() -> None:
    """auto, a count, or a width with a unit (bare width defaults to µs is not allowed: digits mean a count)."""
    assert parse_bins(None).auto and parse_bins("auto").auto
    assert parse_bins("40") == BinSpec(count=40)
    assert parse_bins("2us") == BinSpec(width_ns=2000)
    assert parse_bins("500ns") == BinSpec(width_ns=500)
    with pytest.raises(ConfigError):
        parse_bins("0")
    with pytest.raises(ConfigError):
        parse_bins("fast")


def test_nice_width_rounds_up_to_1_2_5() -> None:
    """Widths are 1, 2 or 5 times a power of ten ns, never below the request."""
    assert [nice_width(x) for x in (0.3, 1, 1.5, 3, 7, 12, 260, 4900)] == [1, 1, 2, 5, 10, 20, 500, 5000]


def test_counts_equal_numpy_with_the_same_edges() -> None:
    """Every finite value lands in exactly one bin, as numpy.histogram counts it with the same edges."""
    rng = np.random.default_rng(0)
    v = rng.lognormal(9, 0.4, 50_000)
    v[::500] = np.nan
    for spec in (BinSpec(), BinSpec(count=37), BinSpec(width_ns=250)):
        h = histogram(v, spec)
        ref, _ = np.histogram(v[np.isfinite(v)], bins=h.edges_ns)
        assert h.total == np.count_nonzero(np.isfinite(v))
        assert np.array_equal(h.counts, ref)


def test_auto_bins_resolve_the_body_of_a_heavy_tail() -> None:
    """A 50 µs outlier on a 7 µs body does not make bins wider than the body needs, and edges are round."""
    rng = np.random.default_rng(2)
    v = 7000 + 600 * rng.standard_normal(60_000)
    v[100] = 50_000
    h = histogram(v)
    assert h.width_ns <= 500
    assert h.edges_ns[0] % h.width_ns == 0


def test_fixed_width_too_fine_is_refused() -> None:
    """A width that would need more than MAX_BINS bins is a usage error, not a memory explosion."""
    with pytest.raises(ConfigError, match="wider bin"):
        histogram(np.array([0.0, 1e9]), BinSpec(width_ns=1))


def test_text_folds_empty_bins_and_uses_log_bars() -> None:
    """Empty runs of bins take one line; a bin of 1 still gets a visible bar."""
    v = np.r_[np.full(1000, 5000.0), [90_000.0]]
    lines = render_text(histogram(v, BinSpec(width_ns=1000)))
    assert any("empty bins" in line for line in lines)
    assert lines[-1].rstrip().endswith("#")
    assert len(lines) < 6
