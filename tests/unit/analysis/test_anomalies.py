"""Anomaly detectors find what was planted, say when, and stay silent on clean heavy-tailed data."""

from __future__ import annotations

import numpy as np
import pytest

from latscope.analysis.anomalies import RunSeries, find_anomalies
from tests.support import ar1_lognormal

PERIOD = 1_000_000  # 1 kHz, as the default probe


def _run(lat: np.ndarray, lost: np.ndarray | None = None, same_clock: bool | None = True) -> RunSeries:
    n = len(lat)
    lost = np.zeros(n, bool) if lost is None else lost
    lat = lat.astype(np.float64).copy()
    lat[lost] = np.nan
    return RunSeries(np.arange(n, dtype=np.int64) * PERIOD, np.arange(n, dtype=np.int64) + 100, lat, lost,
                     PERIOD, same_clock)


def _kinds(found) -> list[str]:
    return [a.kind for a in found]


CLEAN = {
    "normal": lambda r, n: 50_000 + 2_000 * r.standard_normal(n),
    "lognormal-0.5": lambda r, n: 20_000 * r.lognormal(0, 0.5, n),
    "gamma": lambda r, n: 5_000 + 3_000 * r.gamma(2, 1, n),
    "ar1-lognormal": lambda r, n: ar1_lognormal(r, n, 0.9, 20_000, 0.3),
    "quantised": lambda r, n: np.round(7_000 + 600 * r.lognormal(0, 0.4, n), -3),
}


@pytest.mark.parametrize("family", sorted(CLEAN))
def test_clean_data_has_no_anomalies(family: str) -> None:
    """Stationary noise, heavy-tailed or serially correlated, with 0.1 % random loss: nothing is reported."""
    for seed in range(3):
        rng = np.random.default_rng(seed)
        n = 60_000
        assert find_anomalies(_run(CLEAN[family](rng, n), rng.random(n) < 0.001)) == []


def _base(seed: int = 3, n: int = 60_000) -> np.ndarray:
    return 20_000 * np.random.default_rng(seed).lognormal(0, 0.1, n)


def test_isolated_spikes_with_seq_and_time() -> None:
    """Three planted 200 µs spikes come back as three spikes with their seq and second."""
    lat = _base()
    lat[[5_000, 23_000, 41_000]] += 200_000
    found = find_anomalies(_run(lat))
    assert _kinds(found) == ["spike"] * 3
    assert sorted(a.seq_first for a in found) == [5_100, 23_100, 41_100]
    assert sorted(a.start_s for a in found) == [5.0, 23.0, 41.0]
    assert all(a.peak_us > 200 for a in found)


def test_held_then_released_burst() -> None:
    """20 packets held for 20 ms and delivered together: latency falls one period per packet."""
    lat = _base()
    lat[30_000:30_020] += 20_000_000 - np.arange(20) * PERIOD
    found = find_anomalies(_run(lat))
    assert _kinds(found) == ["held_burst"]
    a = found[0]
    assert a.start_s == 30.0 and a.end_s == pytest.approx(30.019) and a.packets == 20
    assert a.detail["slope"] == pytest.approx(-1.0, abs=0.05)
    assert "held" in a.explanation


def test_sustained_burst_is_not_called_held() -> None:
    """Ten packets all 300 µs late (arriving one period apart) are a latency burst, not a hold."""
    lat = _base()
    lat[10_000:10_010] += 300_000
    assert _kinds(find_anomalies(_run(lat))) == ["latency_burst"]


def test_drift_between_two_clocks() -> None:
    """A steady 30 µs drift is found with its size; with two clocks the explanation blames synchronisation."""
    lat = _base() + np.linspace(0, 30_000, 60_000)
    found = find_anomalies(_run(lat, same_clock=False))
    assert _kinds(found) == ["drift"]
    assert found[0].peak_us == pytest.approx(30, rel=0.1)
    assert "synchronised" in found[0].explanation


def test_drift_on_one_clock_blames_the_path() -> None:
    """The same drift measured on one host cannot be a clock problem, and the explanation says so."""
    found = find_anomalies(_run(_base() + np.linspace(0, 30_000, 60_000), same_clock=True))
    assert "same clock" in found[0].explanation


def test_oscillation_and_its_period() -> None:
    """A slow 8 µs sine with a 15 s period is reported as a wander with that period."""
    lat = _base() + 8_000 * np.sin(2 * np.pi * np.arange(60_000) / 15_000)
    found = find_anomalies(_run(lat, same_clock=False))
    assert _kinds(found) == ["oscillation"]
    assert found[0].period_s == pytest.approx(15, rel=0.1)


def test_negative_latencies_mean_clock_trouble() -> None:
    """Packets that arrive before they were sent are counted, with the most negative value."""
    lat = _base()
    lat[1000:1100] = -5_000
    found = find_anomalies(_run(lat, same_clock=False))
    neg = [a for a in found if a.kind == "negative_latency"]
    assert neg and neg[0].packets == 100 and neg[0].peak_us == -5.0
    assert "clock" in neg[0].explanation


def test_periodic_spikes_every_ten_seconds() -> None:
    """Spikes every 10 s (jittered by a packet or two) among random ones: period ~10 s is reported."""
    rng = np.random.default_rng(7)
    lat = _base()
    idx = np.arange(700, 60_000, 10_000) + rng.integers(-2, 3, 6)
    lat[idx] += 150_000
    lat[[3_333, 27_777]] += 150_000
    found = find_anomalies(_run(lat))
    periodic = [a for a in found if a.kind == "periodic_spikes"]
    assert len(periodic) == 1 and periodic[0].period_s == pytest.approx(10, rel=0.01)
    assert periodic[0].packets == 6


def test_random_spikes_are_not_periodic() -> None:
    """Randomly placed spikes do not make up a period: at most one false period in 150 seeds (anomalies.md)."""
    fired = 0
    for seed in range(150):
        rng = np.random.default_rng(seed)
        lat = _base(seed)
        lat[rng.choice(60_000, 30, replace=False)] += 200_000
        fired += any(a.kind == "periodic_spikes" for a in find_anomalies(_run(lat)))
    assert fired <= 1


def test_a_minute_long_period_in_a_long_run() -> None:
    """"Every ~60 s" in a 15-minute run, among 100 random spikes (anomalies.md)."""
    rng = np.random.default_rng(1)
    n = 900_000
    lat = 20_000 * rng.lognormal(0, 0.1, n)
    lat[np.arange(3_000, n, 60_000)] += 150_000
    lat[rng.choice(n, 100, replace=False)] += 150_000
    periodic = [a for a in find_anomalies(_run(lat)) if a.kind == "periodic_spikes"]
    assert periodic and periodic[0].period_s == pytest.approx(60, rel=0.01)


def test_loss_burst_against_random_loss() -> None:
    """50 consecutive losses stand out from 0.1 % random loss; the random losses do not."""
    rng = np.random.default_rng(4)
    lost = rng.random(60_000) < 0.001
    lost[20_000:20_050] = True
    found = find_anomalies(_run(_base(), lost))
    bursts = [a for a in found if a.kind == "loss_burst"]
    assert len(bursts) == 1
    assert bursts[0].packets == 50 and bursts[0].start_s == 20.0 and bursts[0].seq_first == 20_100


def test_start_of_run_is_called_warm_up() -> None:
    """A spike in the first second points at warm-up and at --skip-warmup."""
    lat = _base()
    lat[0:3] += 300_000
    found = find_anomalies(_run(lat))
    assert _kinds(found) == ["spike"] and "--skip-warmup" in found[0].explanation


def test_json_form_has_time_range_and_explanation() -> None:
    """Every anomaly serialises with kind, start_s, end_s and explanation."""
    lat = _base()
    lat[5_000] += 200_000
    doc = find_anomalies(_run(lat))[0].as_json()
    assert {"kind", "start_s", "end_s", "explanation", "seq_first", "peak_us"} <= set(doc)


def test_warm_up_window_scales_with_short_runs() -> None:
    """In a 2 s run only the first 2 % (40 ms) counts as warm-up, not the whole first second."""
    lat = _base(n=2_000)
    lat[500] += 300_000
    found = find_anomalies(_run(lat))
    assert _kinds(found) == ["spike"] and "--skip-warmup" not in found[0].explanation
