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


def test_log_axes_are_labelled_in_plain_text() -> None:
    """A CCDF of 100,000 packets with a 30 ms outlier: both log axes name their decades as plain text
    (1, 10, 10⁴, 10⁻³), with no mathtext left for matplotlib to parse."""
    v = np.full(100_000, 60.0)
    v[:1000] = np.linspace(61.0, 900.0, 1000)
    v[7] = 30_000.0
    fig = figures.ccdf([("a", v)])
    fig.canvas.draw()
    ax = fig.axes[0]
    assert ax.get_xscale() == ax.get_yscale() == "log"
    labels = {t.get_text() for axis in (ax.xaxis, ax.yaxis) for t in axis.get_ticklabels(which="both")} - {""}
    assert not any("$" in label for label in labels), labels
    assert {"10", "100", "1000", "10⁴", "1", "10⁻³", "10⁻⁵"} <= labels, labels
    fmt = figures.PlainLogFormatter()
    values = (1, 250, 10_000, 1e5, 2e-5, 15_000, 99_999.99, 0.5, 5e-324)
    assert [fmt._num_to_string(x, 0, 0) for x in values] == \
        ["1", "250", "10⁴", "10⁵", "2×10⁻⁵", "2×10⁴", "10⁵", "5×10⁻¹", "5×10⁻³²⁴"]


def test_breakdown_figures_are_drawn_from_the_breakdown_numbers() -> None:
    """The three breakdown figures of a planted late packet: bars sized as the breakdown's own figures."""
    from latscope.report.html import breakdown_figures, breakdown_sentence
    from latscope.trace.breakdown import Options, analyse
    from latscope.trace.parse_text import parse_kernel_text
    from tests.svgbars import bar_sizes
    from tests.unit.trace.test_steal_attribution import gap_trace, series

    bd = analyse(parse_kernel_text(gap_trace(hog=True).text()), None, Options(threshold_ns=500_000),
                 steal=series(grow_cpu1_at_ms=35))
    drawn = {key: figures.svg(fig) for key, _title, fig in breakdown_figures(bd)}
    assert set(drawn) == {"stages", "culprits", "timeline"}
    bars = bar_sizes(drawn["culprits"], "culprit-")
    assert len(bars) == len(bd.culprits) >= 2
    w0 = bars["culprit-0"][0]
    for i, c in enumerate(bd.culprits):
        assert abs(bars[f"culprit-{i}"][0] / w0 - c.total_ns / bd.culprits[0].total_ns) < 0.01
    late = bd.late[0]
    stages = [b.stage for b in bd.baselines]
    seg = bar_sizes(drawn["stages"], "excess-0-")
    positive = {s.name: s.excess_ns for s in late.stages if s.excess_ns > 0}
    assert len([h for _w, h in seg.values() if h > 0]) == len(positive)
    top = seg[f"excess-0-{stages.index(late.dominant_stage)}"][1]
    for name, ex in positive.items():
        assert abs(seg[f"excess-0-{stages.index(name)}"][1] / top - ex / late.excess_ns) < 0.01
    sentence = breakdown_sentence(bd)
    assert "above 500.000 µs, set with --threshold" in sentence and f"{bd.late_count} of {bd.packets}" in sentence


def test_ccdf_goes_logarithmic_when_any_run_has_held_packets() -> None:
    """One run with a 6 ms packet over a 60 µs body and one without: the latency axis is logarithmic for
    both (linear, the held packet would squash both curves); with a negative latency in one run (clocks
    of two hosts) it stays linear, which can show it."""
    body = np.full(5_000, 60.0) + np.random.default_rng(3).standard_normal(5_000)
    held = body.copy()
    held[10] = 6_000.0
    assert figures.ccdf([("a", body), ("b", held)]).axes[0].get_xscale() == "log"
    assert figures.ccdf([("a", body), ("b", body + 1)]).axes[0].get_xscale() == "linear"
    assert figures.ccdf([("a", body - 100), ("b", held)]).axes[0].get_xscale() == "linear"


def test_quantile_shift_names_the_levels_it_draws() -> None:
    """From p10 to p99.9: every named level on the axis is one that was drawn, p10 included."""
    levels = np.array([10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9])
    fig = figures.quantile_shift("a", "b", levels, np.ones(9), np.zeros(9), np.full(9, 2.0))
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["p10", "p50", "p90", "p99", "p99.9"]


def test_inter_arrival_panels_share_the_axis_when_the_period_is_the_same() -> None:
    """Two runs at 1 ms, one with a 35 ms gap: both panels span the same delta range; at different
    periods each panel keeps its own."""
    t = np.arange(3_000) / 1000.0
    calm, gap = np.full(3_000, 1000.0), np.full(3_000, 1000.0)
    gap[100] = 35_000.0
    fig = figures.inter_arrival([("a", t, calm, 1000.0), ("b", t, gap, 1000.0)])
    assert fig.axes[0].get_ylim() == fig.axes[1].get_ylim() and fig.axes[0].get_ylim()[1] > 30_000
    fig = figures.inter_arrival([("a", t, calm / 10, 100.0), ("b", t, gap, 1000.0)])
    assert fig.axes[0].get_ylim()[1] < 1_000 < fig.axes[1].get_ylim()[1]
