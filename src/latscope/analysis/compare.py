"""Comparison of runs: per-metric differences with intervals, and verdicts fit for heavy tails.

For each metric the verdict says "higher" or "lower" only when both hold:

- statistically: the (1 - alpha) block-bootstrap interval of B - A excludes 0
  (for the distribution as a whole: the Mann-Whitney U test on thinned
  series rejects at alpha);
- practically: the difference is at least ``min_effect`` (default 1 µs).

The second condition is not cosmetic. Within one run, the bootstrap measures
how precisely a percentile is known; it cannot know that two runs of the same
configuration, made ten minutes apart on a shared machine, differ by a few
hundred nanoseconds because the machine was doing something else. With
60,000 packets per run such a difference is "statistically significant" and
meaningless. ``min_effect`` states the smallest difference the user cares
about. Means are compared by bootstrap too, never by a t-test: one 10 ms
outlier moves a mean more than a million normal packets.

The minimum and the maximum are single packets; no resampling method gives
them a valid interval, so they are shown and differenced but not tested.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from latscope.analysis.bootstrap import Dependence, block_bootstrap, dependence, hierarchical_bootstrap, interval
from latscope.analysis.envdiff import Difference

#: Metrics of the table, in order: (key, label, unit).
METRICS = (
    ("min", "min", "us"),
    ("avg", "avg", "us"),
    ("p50", "p50", "us"),
    ("p99", "p99", "us"),
    ("p999", "p99.9", "us"),
    ("max", "max", "us"),
    ("stddev", "stddev", "us"),
    ("loss", "loss", "%"),
)
#: The statistics the bootstrap resamples, in the order _resampled() returns them.
_BOOTSTRAPPED = ("avg", "stddev", "p50", "p99", "p999", "loss")
#: Rank tests run on at most this many packets per run (after thinning).
RANK_SAMPLE = 50_000
#: Fewer nearly independent packets than this per run: no rank test.
MIN_INDEPENDENT = 20
#: Hodges-Lehmann uses all pairs of at most this many packets per run.
HL_SAMPLE = 2_000

HIGHER, LOWER, SAME, UNTESTED = "higher", "lower", "no significant difference", "not tested"


@dataclass(frozen=True)
class Settings:
    """Knobs of a comparison; defaults are those of `latscope compare`."""

    alpha: float = 0.05
    resamples: int = 1000
    min_effect_ns: float = 1_000.0
    seed: int = 0


@dataclass(frozen=True)
class RunData:
    """One run as compare sees it: latency per sent packet (NaN when lost), in send order.

    Several runs of one configuration (repeats) are one RunData whose
    ``starts`` mark where each run after the first begins in ``latency_ns``.
    """

    label: str
    latency_ns: np.ndarray
    starts: tuple[int, ...] = ()

    @classmethod
    def group(cls, label: str, runs: list[np.ndarray]) -> RunData:
        """Repeated runs of one configuration, compared as a group."""
        starts = tuple(int(x) for x in np.cumsum([len(r) for r in runs[:-1]]))
        return cls(label, np.concatenate(runs) if len(runs) > 1 else runs[0], starts)

    @property
    def runs(self) -> list[np.ndarray]:
        return np.split(self.latency_ns, list(self.starts)) if self.starts else [self.latency_ns]

    @property
    def received(self) -> np.ndarray:
        return self.latency_ns[~np.isnan(self.latency_ns)]


@dataclass(frozen=True)
class MetricResult:
    """One row: values of A and B, B - A, its interval, and the verdict."""

    key: str
    label: str
    unit: str
    a: float | None
    b: float | None
    difference: float | None
    interval: tuple[float, float] | None
    verdict: str
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        def r(v: float | None) -> float | None:
            return None if v is None or not math.isfinite(v) else round(v, 3 if self.unit == "us" else 4)

        return {
            "label": self.label,
            "unit": self.unit,
            "a": r(self.a),
            "b": r(self.b),
            "difference": r(self.difference),
            "interval": None if self.interval is None else [r(self.interval[0]), r(self.interval[1])],
            "verdict": self.verdict,
            "note": self.note,
        }


@dataclass(frozen=True)
class DistributionResult:
    """Rank and distribution tests of B against A on thinned series."""

    n_a: int
    n_b: int
    step_a: int
    step_b: int
    hodges_lehmann_us: float
    cliffs_delta: float
    mann_whitney_p: float
    ks_statistic: float
    ks_p: float
    verdict: str
    note: str = ""

    @property
    def magnitude(self) -> str:
        """Romano et al. (2006) labels for |Cliff's delta|."""
        d = abs(self.cliffs_delta)
        return "negligible" if d < 0.147 else "small" if d < 0.33 else "medium" if d < 0.474 else "large"

    def as_json(self) -> dict[str, Any]:
        return {
            "n_a": self.n_a, "n_b": self.n_b, "thinning_a": self.step_a, "thinning_b": self.step_b,
            "hodges_lehmann_shift_us": round(self.hodges_lehmann_us, 3),
            "cliffs_delta": round(self.cliffs_delta, 4), "cliffs_delta_magnitude": self.magnitude,
            "mann_whitney_p": _json_float(self.mann_whitney_p), "ks_statistic": _json_float(self.ks_statistic, 4),
            "ks_p": _json_float(self.ks_p), "verdict": self.verdict, "note": self.note,
        }


def _json_float(v: float, digits: int | None = None) -> float | None:
    """JSON has no NaN: a degenerate test gives null."""
    if not math.isfinite(v):
        return None
    return round(v, digits) if digits is not None else v


@dataclass(frozen=True)
class Comparison:
    """B against A: every metric, the distribution tests, and how dependent each run is."""

    a: str
    b: str
    metrics: tuple[MetricResult, ...]
    distribution: DistributionResult | None
    dependence: tuple[Dependence, Dependence]
    settings: Settings
    environment: tuple[Difference, ...] = field(default=())

    def metric(self, key: str) -> MetricResult:
        return next(m for m in self.metrics if m.key == key)

    def as_json(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "metrics": {m.key: m.as_json() for m in self.metrics},
            "distribution": None if self.distribution is None else self.distribution.as_json(),
            "dependence": [{"tau_packets": round(d.tau, 2), "block_packets": d.block, "thinning": d.step}
                           for d in self.dependence],
        }


def _resampled(series: np.ndarray) -> np.ndarray:
    """avg, stddev, p50, p99, p99.9 (ns) and loss (%) of a series with NaN for lost packets."""
    ok = ~np.isnan(series)
    v = series[ok]
    loss = 100.0 * (1.0 - len(v) / len(series)) if len(series) else math.nan
    if len(v) == 0:
        return np.array([math.nan] * 5 + [loss])
    p50, p99, p999 = np.percentile(v, (50.0, 99.0, 99.9))
    return np.array([v.mean(), v.std(), p50, p99, p999, loss])


def compare_pair(a: RunData, b: RunData, settings: Settings = Settings()) -> Comparison:
    """Compare run B with run A (the baseline)."""
    rng = np.random.default_rng(settings.seed)
    ra, rb = a.received, b.received
    deps = ([_dependence(r) for r in a.runs], [_dependence(r) for r in b.runs])
    # The least independent run of a group sets the thinning of the group.
    dep = (max(deps[0], key=lambda d: d.tau), max(deps[1], key=lambda d: d.tau))
    boot = []
    for run, ds in ((a, deps[0]), (b, deps[1])):
        if len(run.latency_ns) == 0:
            boot.append((np.full(len(_BOOTSTRAPPED), math.nan), np.zeros((0, len(_BOOTSTRAPPED)))))
        elif run.starts:
            boot.append(hierarchical_bootstrap(run.runs, _resampled, [d.block for d in ds], settings.resamples, rng))
        else:
            boot.append(block_bootstrap(run.latency_ns, _resampled, ds[0].block, settings.resamples, rng))
    (est_a, dev_a), (est_b, dev_b) = boot
    rows = []
    for key, label, unit in METRICS:
        if key in ("min", "max"):
            va = float(ra.min()) if len(ra) else None
            vb = float(rb.min()) if len(rb) else None
            if key == "max":
                va = float(ra.max()) if len(ra) else None
                vb = float(rb.max()) if len(rb) else None
            rows.append(_row(key, label, unit, va, vb, None, UNTESTED,
                             "one packet decides it; no resampling gives it a valid interval"))
            continue
        i = _BOOTSTRAPPED.index(key)
        va, vb = _finite(est_a[i]), _finite(est_b[i])
        if va is None or vb is None or len(dev_a) == 0 or len(dev_b) == 0:
            rows.append(_row(key, label, unit, va, vb, None, UNTESTED, "no data"))
            continue
        ci = interval(vb - va, dev_a[:, i], dev_b[:, i], settings.alpha)
        rows.append(_judge(key, label, unit, va, vb, ci, settings))
    dist = None
    if len(ra) >= 8 and len(rb) >= 8:
        (ta, sa), (tb, sb) = _thinned(a, deps[0]), _thinned(b, deps[1])
        dist = rank_tests(ta, tb, dep, settings, prethinned=(sa, sb))
        if a.starts or b.starts:
            # Packets of different runs are not exchangeable when runs differ as
            # wholes: the rank p-value would ignore that. The verdict comes from
            # the run-level interval of the median instead.
            p50 = next(r for r in rows if r.key == "p50")
            dist = replace(dist, verdict=p50.verdict, note="repeated runs: verdict from run-level resampling "
                           "of the median; the rank p-values treat all packets as one sample")
    return Comparison(a.label, b.label, tuple(rows), dist, dep, settings)


def _dependence(series: np.ndarray) -> Dependence:
    return dependence(series[~np.isnan(series)])


def _thinned(data: RunData, deps: list[Dependence]) -> tuple[np.ndarray, int]:
    """Each run's received packets thinned by its own step (and to RANK_SAMPLE in total), pooled; the largest step."""
    runs = [r[~np.isnan(r)] for r in data.runs]
    floor = math.ceil(sum(len(r) for r in runs) / RANK_SAMPLE)
    steps = [max(d.step, floor) for d in deps]
    return np.concatenate([r[::step] for r, step in zip(runs, steps, strict=True)]), max(steps)


def _finite(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def _row(key: str, label: str, unit: str, va: float | None, vb: float | None, ci: tuple[float, float] | None,
         verdict: str, note: str = "") -> MetricResult:
    scale = 1000.0 if unit == "us" else 1.0
    a = None if va is None else va / scale
    b = None if vb is None else vb / scale
    diff = None if a is None or b is None else b - a
    iv = None if ci is None else (ci[0] / scale, ci[1] / scale)
    return MetricResult(key, label, unit, a, b, diff, iv, verdict, note)


def _judge(key: str, label: str, unit: str, va: float, vb: float, ci: tuple[float, float],
           settings: Settings) -> MetricResult:
    diff = vb - va
    excludes_zero = ci[0] > 0 or ci[1] < 0
    # Loss is a rate: any real change matters, there is no µs threshold for it.
    big_enough = unit != "us" or abs(diff) >= settings.min_effect_ns
    if excludes_zero and big_enough:
        return _row(key, label, unit, va, vb, ci, HIGHER if diff > 0 else LOWER)
    note = ""
    if excludes_zero:
        note = f"real but below the minimum effect of {settings.min_effect_ns / 1000:g} us"
    return _row(key, label, unit, va, vb, ci, SAME, note)


def rank_tests(ra: np.ndarray, rb: np.ndarray, dep: tuple[Dependence, Dependence],
               settings: Settings, prethinned: tuple[int, int] | None = None) -> DistributionResult:
    """Mann-Whitney U, Cliff's delta, Hodges-Lehmann shift and KS on the thinned series of A and B.

    ``prethinned`` gives the steps when ``ra`` and ``rb`` are thinned already.
    """
    if prethinned is not None:
        ta, tb = ra, rb
        sa, sb = prethinned
    else:
        sa = max(dep[0].step, math.ceil(len(ra) / RANK_SAMPLE))
        sb = max(dep[1].step, math.ceil(len(rb) / RANK_SAMPLE))
        ta, tb = ra[::sa], rb[::sb]
    # scipy.stats costs 0.8 s to import: only a comparison of two runs loads it (not a one-run report)
    from scipy.stats import ks_2samp, mannwhitneyu

    u, p = mannwhitneyu(tb, ta, alternative="two-sided")
    delta = 2.0 * float(u) / (len(ta) * len(tb)) - 1.0
    hl = hodges_lehmann(ta, tb, np.random.default_rng(settings.seed))
    ks = ks_2samp(ta, tb)
    significant = p < settings.alpha and abs(hl) >= settings.min_effect_ns
    verdict = (HIGHER if hl > 0 else LOWER) if significant else SAME
    note = ""
    if min(len(ta), len(tb)) < MIN_INDEPENDENT:
        verdict = UNTESTED
        note = (f"only {min(len(ta), len(tb))} nearly independent packets in a run: it is short for its own "
                "serial correlation; use longer runs, or repeated runs as a group (a1,a2,a3)")
    elif not significant and p < settings.alpha:
        note = f"location differs but by less than the minimum effect of {settings.min_effect_ns / 1000:g} us"
    elif not significant and ks.pvalue < settings.alpha and ks.statistic >= 0.1:
        note = "the shapes differ (Kolmogorov-Smirnov) although the typical latency does not"
    return DistributionResult(len(ta), len(tb), sa, sb, hl / 1000.0, delta, float(p), float(ks.statistic),
                              float(ks.pvalue), verdict, note)


def hodges_lehmann(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> float:
    """Median of all pairwise differences b_j - a_i (on random subsamples of at most HL_SAMPLE each)."""
    if len(a) > HL_SAMPLE:
        a = rng.choice(a, HL_SAMPLE, replace=False)
    if len(b) > HL_SAMPLE:
        b = rng.choice(b, HL_SAMPLE, replace=False)
    return float(np.median(np.subtract.outer(b, a)))


#: Quantiles of the shift function (the "delta plot" of two distributions).
SHIFT_LEVELS = (10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 99.0, 99.9)


@dataclass(frozen=True)
class Shift:
    """B - A at each quantile level, with block-bootstrap intervals (ns)."""

    levels: np.ndarray
    difference: np.ndarray
    low: np.ndarray
    high: np.ndarray


def quantile_shift(a: RunData, b: RunData, settings: Settings = Settings(),
                   levels: tuple[float, ...] = SHIFT_LEVELS) -> Shift:
    """The shift function: where in the distribution B differs from A, and how surely (Wilcox's idea,
    with the block bootstrap instead of the Harrell-Davis estimator, for serially dependent packets)."""
    rng = np.random.default_rng(settings.seed)
    lv = np.asarray(levels, dtype=np.float64)

    def stat(series: np.ndarray) -> np.ndarray:
        v = series[~np.isnan(series)]
        return np.percentile(v, lv) if len(v) else np.full(len(lv), math.nan)

    ra, rb = a.received, b.received
    if len(ra) < 2 or len(rb) < 2:
        nan = np.full(len(lv), math.nan)
        return Shift(lv, nan, nan, nan)
    (est_a, dev_a), (est_b, dev_b) = (_boot(x, stat, settings.resamples, rng) for x in (a, b))
    diff = est_b - est_a
    bounds = [interval(float(diff[i]), dev_a[:, i], dev_b[:, i], settings.alpha) for i in range(len(lv))]
    return Shift(lv, diff, np.array([lo for lo, _ in bounds]), np.array([hi for _, hi in bounds]))


def _boot(data: RunData, stat: Callable[[np.ndarray], np.ndarray], resamples: int,
          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Block bootstrap of one run, hierarchical bootstrap of repeated runs."""
    runs = [r[~np.isnan(r)] for r in data.runs]
    if len(runs) > 1:
        return hierarchical_bootstrap(runs, stat, [dependence(r).block for r in runs], resamples, rng)
    return block_bootstrap(runs[0], stat, dependence(runs[0]).block, resamples, rng)
