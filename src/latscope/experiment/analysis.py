"""What a campaign found: every factor's levels against its baseline, on groups of repeats.

For each factor, every level is compared with the baseline level using the
runs of *all* cells that have that level (a main effect: the other factors'
levels are balanced between the two groups), with `latscope compare`'s
machinery: repeats are resampled run by run, so a verdict accounts for how
much whole runs differ. With two factors the interaction table shows the cell
medians side by side: an effect that exists only at one level of the other
factor shows there. Figures: the tail (CCDF) per level, the p99 of every
repeat per cell, and the worst repeat over time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from latscope.analysis.compare import (
    HIGHER,
    LOWER,
    Comparison,
    RunData,
    Settings,
    compare_pair,
)
from latscope.analysis.runview import RunView
from latscope.analysis.window import Range
from latscope.errors import ConfigError
from latscope.experiment.campaign import Campaign, Cell
from latscope.store.layout import ResultsStore
from latscope.store.samples import MISSING

#: The tail statistics a conclusion is about, in order: it names the first with a significant difference
#: (p99.9, the headline, then p99, whose interval is tighter on short runs), else says neither moved.
TAIL = (("p999", "p99.9"), ("p99", "p99"))
HEADLINE = TAIL[0]
CELL_STATS = (("p50", 50.0), ("p99", 99.0), ("p99.9", 99.9))


@dataclass
class RepeatRun:
    """One stored repeat of a cell, read for the report."""

    cell: Cell
    repeat: int
    run_id: str
    latency_ns: np.ndarray  # per sent packet, NaN when lost
    offsets_s: np.ndarray
    stats_us: dict[str, float | None]


@dataclass
class Effect:
    factor: str
    level: str
    baseline: str
    comparison: Comparison
    runs: tuple[int, int]

    def headline(self) -> dict[str, Any]:
        return self.comparison.metric(HEADLINE[0]).as_json()

    def tail(self) -> tuple[str, str]:
        """The tail metric the conclusion names: the first of TAIL with a verdict, else the headline."""
        for key, label in TAIL:
            if self.comparison.metric(key).verdict in (HIGHER, LOWER):
                return key, label
        return HEADLINE

    def significant(self) -> bool:
        return self.comparison.metric(self.tail()[0]).verdict in (HIGHER, LOWER)

    def span(self) -> str:
        """The named tail metric's difference and interval: 'p99.9 +31.7 us [-6.0, +54.2]'."""
        key, label = self.tail()
        m = self.comparison.metric(key)
        if m.difference is None or m.interval is None:
            return f"{label} not comparable: {m.note or 'no data'}"
        return f"{label} {m.difference:+.1f} us [{m.interval[0]:+.1f}, {m.interval[1]:+.1f}]"

    def sentence(self) -> str:
        """'udp3 raises p99.9 by 41.0 us [33.0, 52.0]', or why it does not."""
        key, label = self.tail()
        m = self.comparison.metric(key)
        if m.difference is None or m.interval is None:
            return f"{self.level}: {label} could not be compared ({m.note or 'no data'})"
        if m.verdict == HIGHER:
            return f"{self.level} raises {label} by {abs(m.difference):.1f} us [{m.interval[0]:.1f}, {m.interval[1]:.1f}]"
        if m.verdict == LOWER:
            return f"{self.level} lowers {label} by {abs(m.difference):.1f} us [{-m.interval[1]:.1f}, {-m.interval[0]:.1f}]"
        return f"{self.level}: no significant difference in p99.9 or p99 ({self.span()})"


@dataclass
class Findings:
    campaign: Campaign
    repeats: list[RepeatRun]
    effects: dict[str, list[Effect]]
    missing: list[str]
    settings: Settings
    conclusions: dict[str, str] = field(default_factory=dict)

    def cell_runs(self, cell: Cell) -> list[RepeatRun]:
        return [r for r in self.repeats if r.cell.name == cell.name]

    def cell_table(self) -> list[dict[str, Any]]:
        """Per cell: the median over its repeats of p50, p99, p99.9 and max, and the number of repeats."""
        rows = []
        for cell in self.campaign.cells:
            runs = self.cell_runs(cell)
            row: dict[str, Any] = {"cell": cell.name, "levels": dict(cell.levels), "repeats": len(runs),
                                   "run_ids": [r.run_id for r in runs]}
            for key in [k for k, _ in CELL_STATS] + ["max", "lost"]:
                vals = [v for r in runs if (v := r.stats_us.get(key)) is not None]
                row[key] = round(float(np.median(vals)), 3) if vals else None
                if key != "lost":
                    row[f"{key}_repeats"] = [r.stats_us[key] for r in runs]
            rows.append(row)
        return rows

    def interaction(self) -> dict[str, Any] | None:
        """With exactly two factors: rows = levels of the first, columns = levels of the second."""
        if len(self.campaign.factors) != 2:
            return None
        (f1, l1), (f2, l2) = self.campaign.factors
        table = {row["cell"]: row for row in self.cell_table()}
        out: dict[str, Any] = {"rows": f1, "columns": f2, "row_levels": list(l1), "column_levels": list(l2),
                               "stats": {}}
        for stat in ("p99", "p99.9", "max"):
            out["stats"][stat] = [[table[f"{a}+{b}"][stat] for b in l2] for a in l1]
        return out

    def as_json(self) -> dict[str, Any]:
        return {
            "campaign": self.campaign.name, "plan": self.campaign.fingerprint,
            "headline": HEADLINE[1],
            "baseline": self.campaign.baseline,
            "conclusions": self.conclusions,
            "factors": {f: [{"level": e.level, "baseline": e.baseline, "runs": list(e.runs),
                             "sentence": e.sentence(), "comparison": e.comparison.as_json()} for e in effects]
                        for f, effects in self.effects.items()},
            "cells": self.cell_table(),
            "interaction": self.interaction(),
            "missing_runs": self.missing,
            "settings": {"alpha": self.settings.alpha, "bootstrap": self.settings.resamples,
                         "min_effect_us": self.settings.min_effect_ns / 1000, "seed": self.settings.seed},
        }


def read_repeats(campaign: Campaign, store: ResultsStore, run_ids: dict[str, str],
                 rng: Range) -> tuple[list[RepeatRun], list[str]]:
    """The stored runs of the campaign (planned key -> run id), read over ``rng``; and the keys not made."""
    out: list[RepeatRun] = []
    missing: list[str] = []
    for run in campaign.plan():
        run_id = run_ids.get(run.key)
        if run_id is None:
            missing.append(run.key)
            continue
        view = RunView.open(store.resolve(run_id), rng)
        _, kept = view.summarise(("latency",), keep=("latency", "lost"))
        latency = view.compare_data(kept["latency"], kept["lost"]).latency_ns
        received = latency[~np.isnan(latency)]
        stats: dict[str, float | None] = {}
        for key, q in CELL_STATS:
            stats[key] = round(float(np.percentile(received, q)) / 1000, 3) if len(received) else None
        stats["max"] = round(float(received.max()) / 1000, 3) if len(received) else None
        stats["lost"] = float(len(latency) - len(received))
        t = np.where(view.offsets_ns != MISSING, view.offsets_ns / 1e9, np.nan)
        out.append(RepeatRun(run.cell, run.repeat, run_id, latency, t[:len(latency)] if len(t) >= len(latency)
                             else np.full(len(latency), np.nan), stats))
    return out, missing


def findings(campaign: Campaign, repeats: list[RepeatRun], missing: list[str],
             settings: Settings | None = None) -> Findings:
    """Every factor's levels against its baseline level, with the runs of all cells of each level."""
    settings = settings or Settings()
    if not repeats:
        raise ConfigError(f"campaign {campaign.name} has no stored runs yet (`latscope campaign run` first)")
    effects: dict[str, list[Effect]] = {}
    conclusions: dict[str, str] = {}
    for factor, levels in campaign.factors:
        base = campaign.baseline[factor]
        groups = {lv: [r for r in repeats if dict(r.cell.levels)[factor] == lv] for lv in levels}
        effects[factor] = []
        if not groups[base]:
            conclusions[factor] = f"no runs of the baseline level {base} yet: nothing to compare with"
            continue
        a = RunData.group(f"{factor}={base}", [r.latency_ns for r in groups[base]])
        for lv in levels:
            if lv == base or not groups[lv]:
                continue
            b = RunData.group(f"{factor}={lv}", [r.latency_ns for r in groups[lv]])
            effects[factor].append(Effect(factor, lv, base, compare_pair(a, b, settings),
                                          (len(groups[base]), len(groups[lv]))))
        conclusions[factor] = conclude(factor, base, effects[factor])
    return Findings(campaign, repeats, effects, missing, settings, conclusions)


def conclude(factor: str, baseline: str, effects: list[Effect]) -> str:
    """One line per factor: what its levels do to the tail, against its baseline level."""
    if not effects:
        return f"{factor}: only the baseline level {baseline} has runs"
    if not any(e.significant() for e in effects):
        spans = "; ".join(f"{e.level} {e.span()}" for e in effects)
        return f"{factor}: the levels make no significant difference to p99.9 or p99 against {baseline} ({spans})"
    return f"{factor} (against {baseline}): " + "; ".join(e.sentence() for e in effects)
