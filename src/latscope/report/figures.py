"""Figures of a report: latency over time with its histogram, tail (CCDF), inter-arrival, quantile shift.

matplotlib with the Agg backend (no display, no GUI toolkit). Each function
takes plain arrays and returns a Figure; ``svg`` turns one into inline SVG
text for the HTML report and ``save_png`` writes it for `--png`. Long runs are
drawn as a per-column envelope (min, median, max of the packets that fall on
one horizontal pixel), so a 10-million-packet run makes a small file and
still shows every spike: the maximum of its column.
"""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, ParamSpec, TypeVar

import matplotlib

matplotlib.use("Agg")
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter

from latscope.analysis.histogram import histogram

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

P = ParamSpec("P")
R = TypeVar("R")

#: Runs with more points than this are drawn as an envelope.
POINTS = 5000
#: Columns of the envelope.
COLUMNS = 1200
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
#: Applied around every figure (creation and saving), never to matplotlib's global state.
STYLE: dict[RcKeyType, Any] = {
    "svg.fonttype": "path",  # glyphs as paths: the SVG needs no font from anywhere
    "svg.hashsalt": "latscope",  # stable element ids: the same data gives the same file
    "font.size": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
}


def _styled(fn: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with matplotlib.rc_context(STYLE):
            return fn(*args, **kwargs)
    return wrapper


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


class PlainLogFormatter(LogFormatter):
    """Log-axis tick labels as plain text: 1, 300, 10⁴, 10⁻³, 2×10⁻⁵.

    matplotlib's default labels are mathtext (``$10^{4}$``), parsed once per
    tick of every figure: with the glyphs drawn as paths, that parsing was
    about a third of a report's figure time.
    """

    def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:
        if 1 <= x < 10_000:
            return f"{x:g}"
        mantissa, exp = f"{x:.0e}".split("e")  # one significant digit, rounded: 99,999.9 is 1e+05
        power = "10" + str(int(exp)).translate(_SUPERSCRIPT)
        return power if mantissa == "1" else f"{mantissa}×{power}"


def _log(ax: Axes, which: str) -> None:
    """Make axis ``which`` ("x" or "y") of ``ax`` logarithmic, with plain-text labels (PlainLogFormatter)."""
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_formatter(PlainLogFormatter())
    axis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False))


@dataclass(frozen=True)
class Envelope:
    """min / median / max of a series per column of time."""

    x: np.ndarray
    lo: np.ndarray
    mid: np.ndarray
    hi: np.ndarray


def envelope(x: np.ndarray, y: np.ndarray, columns: int = COLUMNS) -> Envelope:
    """Per-column min, median and max of ``y`` over ``x`` (finite pairs only)."""
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) == 0:
        empty = np.zeros(0)
        return Envelope(empty, empty, empty, empty)
    lo_x, hi_x = float(x.min()), float(x.max())
    width = (hi_x - lo_x) / columns or 1.0
    col = np.minimum(((x - lo_x) / width).astype(np.int64), columns - 1)
    # Time series come in time order: no need to sort 10 million points.
    if np.all(col[1:] >= col[:-1]):
        ys = y
    else:
        order = np.argsort(col, kind="stable")
        col, ys = col[order], y[order]
    starts = np.flatnonzero(np.r_[True, col[1:] != col[:-1]])
    lo = np.minimum.reduceat(ys, starts)
    hi = np.maximum.reduceat(ys, starts)
    mid = np.array([np.median(s) for s in np.split(ys, starts[1:])])
    return Envelope(lo_x + (col[starts] + 0.5) * width, lo, mid, hi)


def wide_range(values: np.ndarray) -> bool:
    """True when a linear axis would squash the body: positive values whose maximum is > 20x the median."""
    v = values[np.isfinite(values)]
    if len(v) == 0 or float(v.min()) <= 0:
        return False
    return float(v.max()) > 20.0 * float(np.median(v))


@_styled
def series_with_histogram(t_s: np.ndarray, y_us: np.ndarray, title: str, ylabel: str = "latency (µs)") -> Figure:
    """Latency over time (left) and its histogram on a log count axis (right), sharing the y axis.

    When a few packets are 20 times slower than the median (a held burst of
    30 ms over a 60 µs body) the latency axis is logarithmic and so are the
    histogram's bins; otherwise both are linear, bins as `show --histogram`.
    """
    fig = Figure(figsize=(10, 3.4), layout="constrained")
    grid = fig.add_gridspec(1, 2, width_ratios=(4, 1))
    ax = fig.add_subplot(grid[0, 0])
    side = fig.add_subplot(grid[0, 1], sharey=ax)
    ok = np.isfinite(t_s) & np.isfinite(y_us)
    if np.count_nonzero(ok) <= POINTS:
        ax.plot(t_s[ok], y_us[ok], ".", markersize=2, color=COLORS[0])
    else:
        env = envelope(t_s, y_us)
        ax.fill_between(env.x, env.lo, env.hi, step="mid", color=COLORS[0], alpha=0.35, linewidth=0,
                        label="min-max per column")
        ax.plot(env.x, env.mid, color=COLORS[0], linewidth=0.8, label="median")
        ax.legend(loc="upper right", fontsize=7)
    ax.set_xlabel("time into the run (s)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, loc="left", fontsize=10)
    v = y_us[np.isfinite(y_us)]
    if len(v):
        if wide_range(v):
            _log(ax, "y")
            edges = np.geomspace(float(v.min()), float(v.max()) * 1.0001, 120)
            counts = np.histogram(v, bins=edges)[0]
            ax.set_ylabel(ylabel + ", log scale")
        else:
            hist = histogram(v * 1000.0)
            edges, counts = hist.edges_ns / 1000.0, hist.counts
        # One outline for thousands of bins (a bar each would take seconds and megabytes);
        # empty bins sit on the baseline of the log axis.
        side.stairs(np.where(counts > 0, counts, 0.5).astype(np.float64), edges, orientation="horizontal",
                    fill=True, baseline=0.5, color=COLORS[0])
        _log(side, "x")
        side.set_xlim(left=0.5)
    side.set_xlabel("packets (log)")
    side.tick_params(labelleft=False)
    return fig


@_styled
def ccdf(runs: Sequence[tuple[str, np.ndarray]], title: str = "Latency tail (CCDF)") -> Figure:
    """P(latency > x) on a log axis for each run: the tail, where runs differ most."""
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    ax = fig.add_subplot()
    for i, (label, v_us) in enumerate(runs):
        v = np.sort(v_us[np.isfinite(v_us)])
        if len(v) == 0:
            continue
        # Points spaced evenly in log(1 - p): the body and every decade of the tail get equal room.
        exceed = np.unique(np.round(np.logspace(0, np.log10(len(v)), 600)).astype(np.int64))
        idx = len(v) - exceed  # exceed values are larger than v[idx]
        ax.step(v[idx], exceed / len(v), where="post", color=COLORS[i % len(COLORS)], label=label, linewidth=1.2)
    _log(ax, "y")
    finite = [v[np.isfinite(v)] for _, v in runs]
    if any(wide_range(v) for v in finite) and all(float(v.min()) > 0 for v in finite if len(v)):
        _log(ax, "x")  # a 30 ms outlier in any run would squash every run's 60 µs body into one pixel
    ax.set_xlabel("latency (µs)")
    ax.set_ylabel("P(latency ≥ x)")
    ax.set_title(title, loc="left", fontsize=10)
    if runs:
        ax.legend(fontsize=7)
    return fig


@_styled
def inter_arrival(runs: Sequence[tuple[str, np.ndarray, np.ndarray, float | None]],
                  title: str = "Inter-arrival time (delta)") -> Figure:
    """Delta over time per run, with the sending period as a reference line.

    Runs sent at one period share the delta axis, so their panels compare at a glance.
    """
    fig = Figure(figsize=(10, 1.2 + 2.0 * max(1, len(runs))), layout="constrained")
    same_period = len({period for *_, period in runs}) <= 1
    axes = fig.subplots(max(1, len(runs)), 1, sharex=False, sharey=same_period, squeeze=False)[:, 0]
    for i, (label, t_s, d_us, period_us) in enumerate(runs):
        ax = axes[i]
        ok = np.isfinite(t_s) & np.isfinite(d_us)
        color = COLORS[i % len(COLORS)]
        if np.count_nonzero(ok) <= POINTS:
            ax.plot(t_s[ok], d_us[ok], ".", markersize=2, color=color)
        else:
            env = envelope(t_s, d_us)
            ax.fill_between(env.x, env.lo, env.hi, step="mid", color=color, alpha=0.35, linewidth=0)
            ax.plot(env.x, env.mid, color=color, linewidth=0.8)
        if period_us:
            ax.axhline(period_us, color="black", linewidth=0.7, linestyle="--", label=f"period {period_us:g} µs")
            ax.legend(loc="upper right", fontsize=7)
        ax.set_ylabel("delta (µs)")
        ax.set_title(label, loc="left", fontsize=9)
    axes[-1].set_xlabel("time into the run (s)")
    fig.suptitle(title, x=0.01, ha="left", fontsize=10)
    return fig


@_styled
def quantile_shift(label_a: str, label_b: str, levels: np.ndarray, diff_us: np.ndarray, lo_us: np.ndarray,
                   hi_us: np.ndarray) -> Figure:
    """B - A at each quantile with its interval: where in the distribution the runs differ.

    The x axis is stretched towards the tail (-log10(1 - p)), so p99 and p99.9
    are as far apart as p50 and p90.
    """
    fig = Figure(figsize=(10, 3.2), layout="constrained")
    ax = fig.add_subplot()
    x = -np.log10(1.0 - levels / 100.0)
    ax.axhline(0.0, color="black", linewidth=0.7)
    ax.fill_between(x, lo_us, hi_us, color=COLORS[1], alpha=0.3, linewidth=0, label="interval")
    ax.plot(x, diff_us, "o-", color=COLORS[1], markersize=3, label=f"{label_b} − {label_a}")
    ticks = [p for p in (10, 50, 90, 99, 99.9, 99.99)
             if float(levels.min()) - 1e-9 <= p <= float(levels.max()) + 1e-9]
    ax.set_xticks([-np.log10(1 - p / 100) for p in ticks], [f"p{p:g}" for p in ticks])
    ax.set_xlabel("quantile (tail stretched)")
    ax.set_ylabel("difference (µs)")
    ax.set_title(f"Quantile shift: {label_b} against {label_a}", loc="left", fontsize=10)
    ax.legend(fontsize=7)
    return fig


@_styled
def repeat_spread(cells: Sequence[tuple[str, np.ndarray]], metric: str = "p99",
                  title: str = "Run-to-run spread") -> Figure:
    """One dot per repeat of each cell (its ``metric``, µs), with the cells' medians as bars.

    A difference between cells is only worth reading when it is larger than
    the spread of one cell's repeats: this figure shows both at once.
    """
    fig = Figure(figsize=(10, 1.6 + 0.32 * max(1, len(cells))), layout="constrained")
    ax = fig.add_subplot()
    for i, (_label, values) in enumerate(cells):
        v = np.asarray(values, dtype=float)
        v = v[np.isfinite(v)]
        if len(v) == 0:
            continue
        # Repeats of a cell side by side within its row, in the order they were made.
        jitter = np.linspace(-0.18, 0.18, len(v)) if len(v) > 1 else np.zeros(1)
        ax.plot(v, i + jitter, "o", color=COLORS[i % len(COLORS)], markersize=4, alpha=0.8)
        ax.plot([np.median(v)] * 2, [i - 0.3, i + 0.3], color="black", linewidth=1.2)
    ax.set_yticks(range(len(cells)), [label for label, _ in cells])
    ax.invert_yaxis()
    ax.set_xlabel(f"{metric} of each repeat (µs)")
    ax.set_title(title, loc="left", fontsize=10)
    return fig


_SVG_START = re.compile(r"<svg\b", re.DOTALL)


@_styled
def svg(fig: Figure) -> str:
    """The figure as an inline <svg> element (no XML prolog, no metadata, no external reference)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
    text = buf.getvalue()
    match = _SVG_START.search(text)
    text = text[match.start():] if match else text
    # The RDF metadata block names external vocabularies; inline figures do not need it.
    return re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.DOTALL)


@_styled
def save_png(fig: Figure, out: Path | BinaryIO, dpi: int = 150) -> None:
    """Write the figure as PNG to a path or a binary file."""
    fig.savefig(out, format="png", dpi=dpi)


def _stage_colors(stages: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """One colour per stage, stable in the stages' order (tab20: 20 distinct colours)."""
    cmap = matplotlib.colormaps["tab20"]
    return {s: tuple(cmap(i % 20)) for i, s in enumerate(stages)}


@_styled
def stage_excess(packets: Sequence[tuple[str, Sequence[float]]], stages: Sequence[str],
                 titles: Sequence[str] | None = None, title: str = "Late packets: stages over their median") -> Figure:
    """A stacked bar per late packet (worst first): each stage's excess over its median (µs), coloured by stage.

    ``packets``: (label, excess µs per stage in ``stages`` order); negative excess (a stage faster than
    usual) is not drawn. Bar segment k of packet i has the SVG id ``excess-{i}-{k}``.
    """
    n = max(1, len(packets))
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    ax = fig.add_subplot()
    colors = _stage_colors(stages)
    names = list(titles) if titles is not None else list(stages)
    bottom = np.zeros(len(packets))
    for k, stage in enumerate(stages):
        vals = np.array([max(0.0, float(p[1][k])) for p in packets])
        if not (vals > 0).any():
            continue
        bars = ax.bar(np.arange(len(packets)), vals, bottom=bottom, color=colors[stage], label=names[k], width=0.8)
        for i, patch in enumerate(bars.patches):
            patch.set_gid(f"excess-{i}-{k}")
        bottom += vals
    ax.set_xticks(np.arange(len(packets)), [p[0] for p in packets], rotation=90, fontsize=6)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_xlabel("late packet (seq), worst first")
    ax.set_ylabel("excess over the stage's median (µs)")
    ax.set_title(title, loc="left", fontsize=10)
    if len(packets):
        ax.legend(fontsize=7, ncol=2, loc="upper right")
    return fig


@_styled
def culprit_bars(rows: Sequence[tuple[str, float, int]], title: str = "Culprits by total delay") -> Figure:
    """Horizontal bars, largest first: each culprit's total delay (µs) over the late packets, with its packet count.

    Bar i has the SVG id ``culprit-{i}``.
    """
    fig = Figure(figsize=(10, 1.2 + 0.3 * max(1, len(rows))), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(rows))
    bars = ax.barh(y, [r[1] for r in rows], color=COLORS[3], height=0.7)
    top = max((r[1] for r in rows), default=0.0)
    for i, (patch, (_label, total, count)) in enumerate(zip(bars.patches, rows, strict=True)):
        patch.set_gid(f"culprit-{i}")
        ax.text(total + 0.01 * top, i, f"{total:.1f} µs, {count} packet{'s' if count != 1 else ''}",
                va="center", fontsize=7)
    ax.set_yticks(y, [r[0] for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, top * 1.25 if top > 0 else 1)
    ax.set_xlabel("total delay over the late packets (µs)")
    ax.set_title(title, loc="left", fontsize=10)
    return fig


@dataclass(frozen=True)
class CpuRow:
    """What one CPU did in a window: (start µs, end µs, name) of each running task, and silent stretches."""

    label: str
    tasks: Sequence[tuple[float, float, str]]
    silent: Sequence[tuple[float, float]] = ()


@_styled
def cpu_timeline(rows: Sequence[CpuRow], packet: str, stages: Sequence[tuple[float, float, str]],
                 stage_order: Sequence[str], title: str = "Who ran when around the worst packet") -> Figure:
    """The packet's stages on the top lane (coloured as in ``stage_excess``), then one lane per CPU: the tasks
    that ran (coloured by name; idle blank) and, under each lane, the stretches without any event (hatched).

    Times are µs from the window's start; ``stages``: (start, end, stage) with stage one of ``stage_order``.
    """
    fig = Figure(figsize=(10, 1.8 + 0.6 * (len(rows) + 1)), layout="constrained")
    ax = fig.add_subplot()
    stage_color = _stage_colors(stage_order)
    handles: dict[str, Any] = {}
    for s, e, name in stages:
        bars = ax.broken_barh([(s, max(e - s, 1e-3))], (-0.35, 0.7), facecolors=stage_color.get(name, "gray"))
        handles.setdefault(name, bars)
    totals: dict[str, float] = {}
    for r in rows:
        for s, e, name in r.tasks:
            totals[name] = totals.get(name, 0.0) + (e - s)
    # tasks in another palette than the stages' (Dark2), the busiest seven named, the rest grey
    task_colors = [tuple(matplotlib.colormaps["Dark2"](i)) for i in range(7)]
    named = [n for n, _ in sorted(totals.items(), key=lambda kv: -kv[1])][:len(task_colors)]
    color = {n: task_colors[i] for i, n in enumerate(named)}
    for lane, r in enumerate(rows, start=1):
        for s, e, name in r.tasks:
            key = name if name in color else "other tasks"
            bars = ax.broken_barh([(s, max(e - s, 1e-3))], (lane - 0.3, 0.55), facecolors=color.get(name, "#bbbbbb"))
            handles.setdefault(key, bars)
        if r.silent:
            bars = ax.broken_barh([(s, e - s) for s, e in r.silent], (lane + 0.27, 0.13), facecolors="none",
                                  edgecolors="black", hatch="//////", linewidth=0.4)
            handles.setdefault("silent gap (no event on the CPU)", bars)
    for s, _e, _name in stages:
        line = ax.axvline(s, color="black", linewidth=0.5, linestyle=":")
        handles.setdefault("stage boundary", line)
    ax.set_yticks(range(len(rows) + 1), [packet] + [r.label for r in rows])
    ax.set_ylim(-0.6, len(rows) + 0.6)
    ax.invert_yaxis()
    ax.set_xlabel("time from the window's start (µs)")
    ax.set_title(title, loc="left", fontsize=10)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize=7)
    return fig
