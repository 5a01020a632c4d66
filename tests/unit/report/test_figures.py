"""Figures: envelopes keep every extreme, SVG output is inline and self-contained."""

from __future__ import annotations

import numpy as np

from latscope.report import figures


def test_envelope_keeps_min_max_and_median_per_column() -> None:
    """Each column's lo/mid/hi equal numpy's min/median/max of the points in that column."""
    rng = np.random.default_rng(0)
    x = np.sort(rng.uniform(0, 100, 10_000))
    y = rng.lognormal(0, 1, 10_000)
    env = figures.envelope(x, y, columns=50)
    col = np.minimum(((x - x.min()) / ((x.max() - x.min()) / 50)).astype(int), 49)
    for c in (0, 17, 49):
        seg = y[col == c]
        i = int(np.argmin(np.abs(env.x - (x.min() + (c + 0.5) * (x.max() - x.min()) / 50))))
        assert env.lo[i] == seg.min() and env.hi[i] == seg.max() and env.mid[i] == np.median(seg)
    assert env.hi.max() == y.max()


def test_svg_is_inline_and_self_contained() -> None:
    """svg() returns an <svg> element without XML prolog, metadata or external references."""
    t = np.arange(20_000) / 1000.0
    v = 50 + np.random.default_rng(1).standard_normal(20_000)
    text = figures.svg(figures.series_with_histogram(t, v, "run"))
    assert text.startswith("<svg") and "<?xml" not in text and "<metadata>" not in text
    assert "href=\"http" not in text and "<image" not in text


def test_each_figure_draws() -> None:
    """CCDF, inter-arrival and quantile-shift figures draw from plain arrays."""
    rng = np.random.default_rng(2)
    v = rng.lognormal(3, 0.3, 3_000)
    t = np.arange(3_000) / 1000.0
    assert "<svg" in figures.svg(figures.ccdf([("a", v), ("b", v + 1)]))
    assert "<svg" in figures.svg(figures.inter_arrival([("a", t, np.full(3_000, 1000.0), 1000.0)]))
    levels = np.array([50.0, 90.0, 99.0, 99.9])
    assert "<svg" in figures.svg(figures.quantile_shift("a", "b", levels, np.ones(4), np.zeros(4), np.full(4, 2.0)))


def test_wide_range_switches_to_log() -> None:
    """A 30 ms outlier over a 60 µs body makes the latency axis logarithmic; a normal spread does not."""
    v = np.full(10_000, 60.0)
    assert not figures.wide_range(v)
    v[5] = 30_000.0
    assert figures.wide_range(v)
    fig = figures.series_with_histogram(np.arange(10_000) / 1000.0, v, "run")
    assert fig.axes[0].get_yscale() == "log"
