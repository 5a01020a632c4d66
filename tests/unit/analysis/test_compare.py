"""compare: effect sizes equal their definitions, verdicts hold up to serial correlation and heavy tails."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ks_2samp, mannwhitneyu

from latscope.analysis.bootstrap import Dependence
from latscope.analysis.compare import (
    HIGHER,
    LOWER,
    SAME,
    UNTESTED,
    RunData,
    Settings,
    compare_pair,
    hodges_lehmann,
    quantile_shift,
    rank_tests,
)
from tests.support import ar1_lognormal

FAST = Settings(resamples=300)


def test_cliffs_delta_and_tests_equal_their_definitions() -> None:
    """Cliff's delta is P(B>A) - P(B<A) by brute force; MWU and KS p equal scipy's on the same (unthinned) data."""
    rng = np.random.default_rng(0)
    a, b = rng.lognormal(0, 0.5, 300), rng.lognormal(0.2, 0.5, 400)
    one = Dependence(1.0, 0, 1)
    r = rank_tests(a, b, (one, one), Settings(min_effect_ns=0.0))
    brute = (np.sign(np.subtract.outer(b, a))).mean()
    assert r.cliffs_delta == pytest.approx(brute)
    assert r.mann_whitney_p == pytest.approx(mannwhitneyu(b, a, alternative="two-sided").pvalue)
    assert r.ks_p == pytest.approx(ks_2samp(a, b).pvalue)


def test_hodges_lehmann_is_the_median_of_pairwise_differences() -> None:
    """HL shift = median(b_j - a_i) over all pairs (small samples: no subsampling)."""
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(200), rng.standard_normal(300) + 3
    assert hodges_lehmann(a, b, rng) == pytest.approx(np.median(np.subtract.outer(b, a)))


def _pair(seed: int, n: int, shift_ns: float = 0.0, rho: float = 0.9) -> tuple[RunData, RunData]:
    rng = np.random.default_rng(seed)
    a = ar1_lognormal(rng, n, rho, 20_000, 0.3)
    b = ar1_lognormal(rng, n, rho, 20_000, 0.3) + shift_ns
    return RunData("A", a), RunData("B", b)


def test_same_distribution_is_no_significant_difference() -> None:
    """Two serially correlated heavy-tailed runs from one distribution: every metric 'no significant difference'."""
    a, b = _pair(10, 60_000)
    c = compare_pair(a, b, FAST)
    for m in c.metrics:
        assert m.verdict in (SAME, UNTESTED), m
    assert c.distribution is not None and c.distribution.verdict == SAME
    assert c.metric("min").verdict == UNTESTED and c.metric("max").verdict == UNTESTED


@pytest.mark.slow
def test_a_shift_of_three_microseconds_is_found() -> None:
    """The same runs with B shifted by 3 µs: the location metrics and the distribution say 'higher'."""
    a, b = _pair(11, 60_000, shift_ns=3_000)
    c = compare_pair(a, b, FAST)
    for key in ("avg", "p50", "p99"):
        assert c.metric(key).verdict == HIGHER, c.metric(key)
        # the 95 % interval holds the true shift (on these seeded data; over many seeds about 95 % do)
        lo, hi = c.metric(key).interval
        assert lo < 3.0 < hi, (key, lo, hi)
    assert c.distribution.verdict == HIGHER
    assert c.distribution.hodges_lehmann_us == pytest.approx(3.0, abs=0.5)
    assert compare_pair(b, a, FAST).metric("p50").verdict == LOWER


@pytest.mark.slow
def test_false_positive_rate_holds_under_serial_correlation() -> None:
    """Over many same-distribution pairs, 'CI excludes 0' happens near alpha with blocks, far more often without.

    This is the property behind "two runs of one configuration are not
    'different' merely because n is large": with iid resampling the intervals
    of autocorrelated data are several times too narrow.
    """
    from latscope.analysis import bootstrap
    from latscope.analysis.compare import _resampled

    trials, hits_block, hits_iid, hits_rank = 40, 0, 0, 0
    settings = Settings(resamples=200, min_effect_ns=0.0)
    for seed in range(trials):
        a, b = _pair(100 + seed, 5_000)
        c = compare_pair(a, b, settings)
        hits_block += c.metric("p50").verdict != SAME
        hits_rank += c.distribution.verdict != SAME
        rng = np.random.default_rng(seed)
        ea, da = bootstrap.block_bootstrap(a.latency_ns, _resampled, 1, 200, rng)
        eb, db = bootstrap.block_bootstrap(b.latency_ns, _resampled, 1, 200, rng)
        lo, hi = bootstrap.interval(eb[2] - ea[2], da[:, 2], db[:, 2], 0.05)
        hits_iid += lo > 0 or hi < 0
    assert hits_block / trials <= 0.15
    assert hits_rank / trials <= 0.15
    assert hits_iid / trials >= 0.3


@pytest.mark.slow
def test_min_effect_separates_real_from_relevant() -> None:
    """A real 0.3 µs shift on tight data: the interval excludes 0, but below --min-effect it is not a difference."""
    rng = np.random.default_rng(5)
    a = RunData("A", 7_000 + 100 * rng.standard_normal(60_000))
    b = RunData("B", 7_300 + 100 * rng.standard_normal(60_000))
    c = compare_pair(a, b, FAST)
    assert c.metric("p50").verdict == SAME and "minimum effect" in c.metric("p50").note
    assert compare_pair(a, b, Settings(resamples=300, min_effect_ns=100)).metric("p50").verdict == HIGHER


def test_loss_difference_is_found() -> None:
    """B loses a 2 % burst of packets, A none: loss is 'higher' for B, in percent."""
    rng = np.random.default_rng(6)
    a = rng.lognormal(10, 0.2, 20_000)
    b = rng.lognormal(10, 0.2, 20_000)
    b[5_000:5_400] = np.nan
    c = compare_pair(RunData("A", a), RunData("B", b), FAST)
    loss = c.metric("loss")
    assert loss.b == pytest.approx(2.0) and loss.verdict == HIGHER


def test_quantile_shift_grows_in_the_tail() -> None:
    """B = A with a heavier tail: the shift is ~0 at the median and positive at p99."""
    rng = np.random.default_rng(8)
    a = rng.lognormal(10, 0.2, 40_000)
    b = rng.lognormal(10, 0.2, 40_000)
    b[b > np.percentile(b, 98)] *= 1.5
    s = quantile_shift(RunData("A", a), RunData("B", b), FAST)
    p50, p99 = list(s.levels).index(50.0), list(s.levels).index(99.0)
    assert s.low[p50] < 0 < s.high[p50]
    assert s.low[p99] > 0


def test_json_form() -> None:
    """Per metric: a, b, difference, interval and verdict; distribution with effect sizes."""
    a, b = _pair(12, 5_000, shift_ns=3_000)
    doc = compare_pair(a, b, FAST).as_json()
    p50 = doc["metrics"]["p50"]
    assert {"a", "b", "difference", "interval", "verdict"} <= set(p50)
    assert len(p50["interval"]) == 2 and p50["verdict"] == HIGHER
    assert {"cliffs_delta", "hodges_lehmann_shift_us", "mann_whitney_p", "ks_p"} <= set(doc["distribution"])


def _runs(rng: np.random.Generator, count: int, shift_ns: float = 0.0) -> list[np.ndarray]:
    # Each run sits at its own level (sd 1 µs): what a busy machine does to runs of one configuration.
    return [ar1_lognormal(rng, 5_000, 0.9, 20_000, 0.1) + rng.normal(0, 1_000) + shift_ns for _ in range(count)]


@pytest.mark.slow
def test_repeated_runs_carry_run_to_run_variation() -> None:
    """Groups of runs whose levels wander between runs: one pair of runs is often 'different', the groups are not."""
    pair_hits, group_hits = 0, 0
    for seed in range(6):
        rng = np.random.default_rng(200 + seed)
        ga, gb = _runs(rng, 4), _runs(rng, 4)
        pair_hits += compare_pair(RunData("a", ga[0]), RunData("b", gb[0]), FAST).metric("p50").verdict != SAME
        c = compare_pair(RunData.group("A", ga), RunData.group("B", gb), FAST)
        group_hits += c.metric("p50").verdict != SAME
        assert c.distribution.verdict == c.metric("p50").verdict
    assert group_hits <= 1 < pair_hits


def test_repeated_runs_still_find_a_real_shift() -> None:
    """Four runs against four runs shifted by 5 µs: 'higher', despite the run-to-run wander."""
    rng = np.random.default_rng(300)
    c = compare_pair(RunData.group("A", _runs(rng, 4)), RunData.group("B", _runs(rng, 4, 5_000)), FAST)
    assert c.metric("p50").verdict == HIGHER and c.metric("avg").verdict == HIGHER


def test_group_keeps_run_boundaries() -> None:
    """A group of runs splits back into its runs."""
    g = RunData.group("g", [np.arange(3.0), np.arange(5.0)])
    assert [len(r) for r in g.runs] == [3, 5] and len(g.latency_ns) == 8


def test_too_few_independent_packets_is_not_tested() -> None:
    """A short run that is one slow wave (rho 0.999) leaves too few independent packets for a rank test."""
    a, b = _pair(13, 3_000, rho=0.999)
    d = compare_pair(a, b, FAST).distribution
    assert d.verdict == UNTESTED and "independent" in d.note
