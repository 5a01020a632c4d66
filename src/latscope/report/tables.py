"""Text sections of the analysis verbs: worst packets, windows, anomalies, comparisons, checks.

Numbers are microseconds with three decimals, as everywhere in latscope.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np

from latscope.analysis.anomalies import Anomaly
from latscope.analysis.window import WindowSeries
from latscope.safetext import printable

#: Anomalies listed in text before "... and N more".
ANOMALY_LINES = 12


def _us(v: float | None, sign: bool = False) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    return f"{v:+.3f}" if sign else f"{v:.3f}"


def worst_text(rows: Sequence[dict[str, Any]], metric: str) -> list[str]:
    """The worst packets as a table a person can search a trace with (seq and time)."""
    if not rows:
        return [f"worst packets by {metric}: none"]
    lines = [f"worst {len(rows)} packets by {metric}:", f"  {'seq':>10}  {'at (s)':>12}  {metric + ' (us)':>16}"]
    for r in rows:
        at = "-" if r["at_s"] is None else f"{r['at_s']:.6f}"
        lines.append(f"  {r['seq']:>10}  {at:>12}  {r['value_us']:>16.3f}")
    return lines


def windows_text(series: WindowSeries, metric: str) -> list[str]:
    """One line per window: start, packets, lost, and p50/p99/max of the metric."""
    lines = [f"{metric} per {series.window_ns / 1e9:g} s window (usec):",
             f"  {'from (s)':>10}  {'packets':>8}  {'lost':>6}  {'p50':>10}  {'p99':>10}  {'max':>10}"]
    for i in range(len(series)):
        vals = [None if np.isnan(x) else x / 1000 for x in (series.p50[i], series.p99[i], series.max[i])]
        lines.append(f"  {series.start_s[i]:>10.3f}  {series.count[i]:>8d}  {series.lost[i]:>6d}  "
                     + "  ".join(f"{_us(v):>10}" for v in vals))
    return lines


def group_anomalies(anomalies: Sequence[Anomaly], per_kind: int = 3) -> list[tuple[str, str, str]]:
    """(kind, when, text) entries: each finding of a rare kind, one summary entry for a frequent one.

    A kind with more than ``per_kind`` findings (a run can have hundreds of
    spikes) is counted and its five largest named by seq and time, followed
    by the explanation of the largest.
    """
    kinds: dict[str, list[Anomaly]] = {}
    for a in anomalies:
        kinds.setdefault(a.kind, []).append(a)
    out = []
    for kind, items in kinds.items():
        if len(items) <= per_kind:
            out += [(kind, _when(a), a.explanation) for a in items]
            continue
        top = sorted(items, key=lambda a: -abs(a.peak_us or 0.0) - a.packets * 1e-9)[:5]
        largest = ", ".join(
            f"#{a.seq_first} at {a.start_s:.3f} s ({a.peak_us:.3f} us)" if a.peak_us is not None
            else f"#{a.seq_first} at {a.start_s:.3f} s ({a.packets} packets)" for a in top)
        first, last = min(a.start_s for a in items), max(a.end_s for a in items)
        out.append((kind, f"{len(items)} between {first:.3f} and {last:.3f} s",
                    f"largest: {largest}. The largest: {top[0].explanation}"))
    return out


def anomalies_text(anomalies: Sequence[Anomaly], limit: int = ANOMALY_LINES, per_kind: int = 3) -> list[str]:
    """Anomalies, most telling kinds first, each with its time range and explanation (see group_anomalies)."""
    if not anomalies:
        return ["anomalies: none found"]
    lines = [f"anomalies ({len(anomalies)}):"]
    entries = group_anomalies(anomalies, per_kind)
    for kind, when, text in entries[:limit]:
        lines += _wrapped(f"  [{kind}] {when}: ", text)
    if len(entries) > limit:
        lines.append(f"  ... and {len(entries) - limit} more (see --json)")
    return lines


def _when(a: Anomaly) -> str:
    return f"{a.start_s:.3f} s" if a.end_s == a.start_s else f"{a.start_s:.3f}-{a.end_s:.3f} s"


def _wrapped(head: str, text: str, width: int = 100, indent: int = 6) -> list[str]:
    first = textwrap.wrap(text, width=max(40, width - len(head)))[0]
    rest = text[len(first):].strip()
    return [head + first] + [" " * indent + b for b in textwrap.wrap(rest, width=width - indent)]


def check_text(label: str, run_id: str, verdicts: Sequence[Any]) -> list[str]:
    """One line per limit: ok or FAIL, the value found, and the limit."""
    broken = sum(1 for v in verdicts if not v.ok)
    lines = [f"check {label}" + ("" if label == run_id else f" ({run_id})")
             + f": {len(verdicts)} limit{'s' if len(verdicts) != 1 else ''}, {broken} broken"]
    for v in verdicts:
        lim = v.limit
        what = "loss" if lim.metric == "loss" else f"{lim.metric} {_STAT_LABEL.get(lim.stat, lim.stat)}"
        op = ("<=" if v.ok else ">") if lim.bound == "max" else (">=" if v.ok else "<")
        unit = lim.unit
        actual = "no data" if v.actual is None else f"{v.actual:.3f} {unit}" if unit != "packets" \
            else f"{int(v.actual)} {unit}"
        bound = f"{lim.value:.3f} {unit}" if unit != "packets" else f"{int(lim.value)} {unit}"
        lines.append(f"  {'ok  ' if v.ok else 'FAIL'}  {what} = {actual} {op} {bound}   ({lim.bound} {lim.text})")
    return lines


_STAT_LABEL = {"p999": "p99.9", "p9999": "p99.99", "p99999": "p99.999"}


def compare_text(runs: Sequence[dict[str, Any]], comparisons: Sequence[Any], envdiff: Sequence[Any],
                 settings: Any) -> list[str]:
    """The runs, then per run B against A: the metric table and the distribution tests, then what else differs."""
    letters = [chr(ord("A") + i) if i < 26 else f"R{i}" for i in range(len(runs))]
    lines = ["runs (A is the baseline):"]
    for letter, r in zip(letters, runs, strict=True):
        name = f"{printable(r['name'])} ({r['run_id']})" if r["name"] else r["run_id"]
        if len(r.get("run_ids", ())) > 1:
            name = f"{len(r['run_ids'])} runs of one configuration: {', '.join(r['run_ids'])}"
        lines.append(f"  {letter}  {name}: {r['packets']} packets, {r['lost']} lost")
    level = f"{100 * (1 - settings.alpha):g}%"
    for letter, c in zip(letters[1:], comparisons, strict=True):
        lines.append("")
        lines.append(f"{letter} against A ({level} block-bootstrap intervals; differences under "
                     f"{settings.min_effect_ns / 1000:g} us do not count):")
        lines.append(f"  {'metric':<12}{'A':>12}{letter:>12}{letter + '-A':>11}   "
                     f"{'interval of ' + letter + '-A':<24}  verdict")
        for m in c.metrics:
            iv = "-" if m.interval is None else f"[{m.interval[0]:+.3f}, {m.interval[1]:+.3f}]"
            verdict = m.verdict + (f" ({m.note})" if m.note and m.verdict != "not tested" else "")
            lines.append(f"  {m.label + ' (' + m.unit + ')':<12}{_us(m.a):>12}{_us(m.b):>12}"
                         f"{_us(m.difference, sign=True):>11}   {iv:<24}  {verdict}")
        d = c.distribution
        if d is not None:
            lines += _wrapped(
                "  distribution: ",
                f"Hodges-Lehmann shift {d.hodges_lehmann_us:+.3f} us, Cliff's delta {d.cliffs_delta:+.3f} "
                f"({d.magnitude}), Mann-Whitney p {_p(d.mann_whitney_p)}, Kolmogorov-Smirnov D "
                f"{d.ks_statistic:.3f} p {_p(d.ks_p)} (every {d.step_a}/{d.step_b} packets of A/{letter}, "
                f"n {d.n_a}/{d.n_b}, for serial correlation) -> {d.verdict}"
                + (f"; {d.note}" if d.note else ""))
    single = any(len(r.get("run_ids", ())) <= 1 for r in runs)
    flagged = any(m.verdict in ("higher", "lower") for c in comparisons for m in c.metrics)
    if single and flagged:
        # Within a run, intervals capture packet-to-packet noise; the state of a
        # shared machine also changes from one run to the next, which a single
        # run per side cannot show. Say so where it matters.
        lines += ["", *_wrapped("note: ", "one run per side: a difference can come from the machine's state "
                                "at the time as well as from the configuration. Interleave repeated runs and "
                                "compare them as groups (a1,a2,a3 b1,b2,b3) to separate the two.")]
    lines.append("")
    if not envdiff:
        lines.append("environment differences: none")
    else:
        lines.append(f"environment differences ({len(envdiff)}):")
        for diff in envdiff[:40]:
            values = " | ".join("-" if v is None else str(v) for v in diff.values)
            lines.append(f"  {diff.key}: {values[:160]}")
        if len(envdiff) > 40:
            lines.append(f"  ... and {len(envdiff) - 40} more (see --json)")
    return lines


def _p(p: float) -> str:
    return "< 1e-300" if p <= 1e-300 else f"{p:.3g}"
