"""Autocorrelation and block bootstrap: checked against numpy references and known AR(1) properties."""

from __future__ import annotations

import math

import numpy as np
import pytest

from latscope.analysis.bootstrap import _acf, block_bootstrap, dependence, interval, ranks
from tests.support import ar1_lognormal


@pytest.mark.parametrize("kind", ["ties", "distinct", "one", "empty", "all equal"])
def test_ranks_are_scipys_average_ranks(kind: str) -> None:
    """ranks() gives what scipy.stats.rankdata gives (ties: the mean of the ranks they span)."""
    from scipy.stats import rankdata

    rng = np.random.default_rng(3)
    values = {"ties": rng.integers(0, 7, 5000).astype(float), "distinct": rng.lognormal(3, 1, 5000),
              "one": np.array([4.5]), "empty": np.zeros(0), "all equal": np.full(9, 2.0)}[kind]
    assert np.array_equal(ranks(values), rankdata(values))


def test_acf_matches_direct_sum() -> None:
    """The FFT autocorrelation equals the direct lagged products."""
    x = np.random.default_rng(0).standard_normal(500)
    got = _acf(x, 10)
    c = x - x.mean()
    ref = [np.dot(c[: len(c) - k], c[k:]) / np.dot(c, c) for k in range(11)]
    assert got == pytest.approx(ref, abs=1e-12)


def test_independent_data_need_no_thinning() -> None:
    """White noise: tau ~ 1, every packet is used."""
    dep = dependence(np.random.default_rng(1).lognormal(0, 1, 50_000))
    assert dep.tau < 1.3 and dep.step == 1


def test_ar1_tau_close_to_theory() -> None:
    """For an AR(1) with rho 0.9, tau = (1 + rho) / (1 - rho) = 19 (on ranks: close to it)."""
    x = ar1_lognormal(np.random.default_rng(2), 200_000, 0.9, 1e4, 0.3)
    dep = dependence(x)
    assert 14 < dep.tau < 24
    assert dep.step >= 2 * 14 and dep.block >= dep.step


def test_block_bootstrap_of_the_mean_matches_the_long_run_variance() -> None:
    """For AR(1) data the block-bootstrap spread of the mean is close to sigma * sqrt(tau / n); iid is not."""
    rng = np.random.default_rng(3)
    rho, n = 0.9, 20_000
    x = ar1_lognormal(rng, n, rho, 1.0, 1e-3)  # tiny sigma: effectively the Gaussian AR(1) itself
    sd_theory = x.std() * math.sqrt((1 + rho) / (1 - rho) / n)
    dep = dependence(x)
    _, dev = block_bootstrap(x, lambda s: np.array([s.mean()]), dep.block, 400, rng)
    _, dev_iid = block_bootstrap(x, lambda s: np.array([s.mean()]), 1, 400, rng)
    assert dev[:, 0].std() == pytest.approx(sd_theory, rel=0.3)
    assert dev_iid[:, 0].std() < 0.5 * sd_theory


def test_m_out_of_n_rescales_deviations() -> None:
    """Past RESAMPLE_CAP the resamples are shorter, and deviations are scaled to the full length."""
    from latscope.analysis import bootstrap

    rng = np.random.default_rng(4)
    x = rng.standard_normal(40_000)
    old = bootstrap.RESAMPLE_CAP
    try:
        bootstrap.RESAMPLE_CAP = 4_000
        _, dev = block_bootstrap(x, lambda s: np.array([s.mean()]), 1, 500, rng)
    finally:
        bootstrap.RESAMPLE_CAP = old
    assert dev[:, 0].std() == pytest.approx(1 / math.sqrt(40_000), rel=0.15)


def test_interval_is_the_percentile_interval_of_the_difference() -> None:
    """interval() takes the alpha/2 and 1-alpha/2 percentiles of estimate + devB - devA."""
    dev_a = np.zeros(1001)
    dev_b = np.linspace(-1, 1, 1001)
    lo, hi = interval(5.0, dev_a, dev_b, 0.10)
    assert lo == pytest.approx(4.1) and hi == pytest.approx(5.9)
