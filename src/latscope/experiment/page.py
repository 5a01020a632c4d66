"""The campaign report: one self-contained HTML page (the same style and guarantees as `latscope report`)."""

from __future__ import annotations

import datetime as _dt
from typing import Any

import numpy as np

from latscope.experiment.analysis import Findings
from latscope.report import figures
from latscope.report.html import Figure, render_page


def figures_of(f: Findings, keep_png: bool = False) -> tuple[list[Figure], list[tuple[str, Any]]]:
    """CCDF per factor (a line per level), p99 of every repeat per cell, and the worst repeat over time."""
    out: list[Figure] = []
    pngs: list[tuple[str, Any]] = []

    def add(name: str, title: str, fig: Any) -> None:
        out.append(Figure(name, title, figures.svg(fig)))
        if keep_png:
            pngs.append((f"{name}.png", fig))

    for factor, levels in f.campaign.factors:
        curves = []
        for lv in levels:
            runs = [r.latency_ns for r in f.repeats if dict(r.cell.levels)[factor] == lv]
            if runs:
                curves.append((f"{factor}={lv}", np.concatenate(runs) / 1000.0))
        add(f"ccdf-{factor}", f"Latency tail per level of {factor} (all repeats of every cell with that level)",
            figures.ccdf(curves, title=f"Latency tail (CCDF) by {factor}"))
    cells = [(c.name, np.array([r.stats_us["p99"] for r in f.cell_runs(c) if r.stats_us["p99"] is not None]))
             for c in f.campaign.cells]
    add("repeats-p99", "p99 of every repeat, per cell (bar: the cell's median)",
        figures.repeat_spread(cells, "p99", "p99 of every repeat, per cell"))
    worst = max(f.repeats, key=lambda r: r.stats_us["p99.9"] if r.stats_us["p99.9"] is not None else -1.0)
    title = f"Worst repeat: cell {worst.cell.name}, repeat {worst.repeat + 1} (run {worst.run_id})"
    add("worst-repeat", title, figures.series_with_histogram(worst.offsets_s, worst.latency_ns / 1000.0, title))
    return out, pngs


def render(f: Findings, title: str, figs: list[Figure]) -> str:
    generated = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return render_page("campaign.html.j2", title=title, generated=generated, doc=f.as_json(), figures=figs,
                       campaign=f.campaign, settings=f.settings)
