"""Round-trip metrics, the offset estimate and the clock bound, on timestamps with a planted offset and delays."""

from __future__ import annotations

import numpy as np
import pytest

from latscope.analysis import clockbound, metrics, roundtrip
from latscope.analysis.summary import summarise
from latscope.store.samples import MISSING, SAMPLE_COLUMNS, TIME_COLUMNS, Samples

OFFSET = 3_217_000  # the far clock runs 3.217 ms ahead


def planted(n: int = 500, seed: int = 1) -> tuple[Samples, np.ndarray, np.ndarray, np.ndarray]:
    """Round trips with known forward/reverse delays and turnaround, the far end's times on its own clock."""
    rng = np.random.default_rng(seed)
    fwd = rng.integers(4_000, 9_000, n)
    rev = rng.integers(5_000, 12_000, n)
    turn = rng.integers(20_000, 90_000, n)
    t1 = 1_800_000_000_000_000_000 + np.arange(n) * 1_000_000
    t2 = t1 + fwd + OFFSET
    t3 = t2 + turn
    t4 = t3 - OFFSET + rev
    cols = {c: np.full(n, MISSING, dtype=np.int64) for c in TIME_COLUMNS}
    cols.update(seq=np.arange(n), stream=np.zeros(n, np.int32), flags=np.zeros(n, np.int32),
                send_ns=t1 - 2_000, tx_sw_ns=t1, rx_sw_ns=t4, rx_user_ns=t4 + 500, sched_ns=t1 - 9_000,
                wake_ns=t1 - 8_000, far_rx_ns=t2, far_tx_ns=t3)
    assert set(cols) == set(SAMPLE_COLUMNS)
    return Samples(cols), fwd, rev, turn


def test_rtt_and_turnaround_are_exact() -> None:
    """RTT = forward + reverse delay, whatever the offset; the turnaround is the far end's hold time."""
    s, fwd, rev, turn = planted()
    assert np.array_equal(metrics.rtt(s), (fwd + rev).astype(float))
    assert np.array_equal(metrics.latency(s), (fwd + rev).astype(float))
    assert np.array_equal(metrics.turnaround(s), turn.astype(float))


def test_offset_estimate_brackets_the_planted_offset() -> None:
    """Causality: the planted offset lies within estimate +- bound, and the bound is at most half the least RTT."""
    s, fwd, rev, _turn = planted()
    est = roundtrip.estimate(metrics.forward_delay(s), metrics.reverse_delay(s))
    assert est is not None and est["method"] == "intersection"
    assert abs(est["offset_ns"] - OFFSET) <= est["bound_ns"]
    assert est["bound_ns"] <= (fwd + rev).min() / 2 + 1


def test_summary_one_way_estimates_are_within_the_bound() -> None:
    """The summary's forward/reverse medians differ from the planted ones by no more than the bound."""
    s, fwd, rev, _turn = planted()
    doc = summarise(s)["round_trip"]
    bound_us = doc["clock"]["bound_ns"] / 1000
    assert abs(doc["forward_us"]["p50"] - np.median(fwd) / 1000) <= bound_us + 0.001
    assert abs(doc["reverse_us"]["p50"] - np.median(rev) / 1000) <= bound_us + 0.001


def test_a_stepped_clock_falls_back_to_the_least_rtt() -> None:
    """Intervals that do not intersect (the far clock stepped by 1 ms mid-run): the min-RTT exchange decides."""
    s, fwd, rev, _turn = planted()
    cols = dict(s.columns)
    half = len(fwd) // 2
    for c in ("far_rx_ns", "far_tx_ns"):
        cols[c] = cols[c].copy()
        cols[c][half:] += 1_000_000
    s2 = Samples(cols)
    est = roundtrip.estimate(metrics.forward_delay(s2), metrics.reverse_delay(s2))
    assert est is not None and est["method"] == "min-rtt"
    best = int(np.argmin(fwd + rev))
    planted_offset = OFFSET + (1_000_000 if best >= half else 0)
    assert abs(est["offset_ns"] - planted_offset) <= est["bound_ns"]


def test_one_way_runs_are_unchanged() -> None:
    """Without far_rx_ns the latency is rx_best - send_ns, and there is no round_trip block."""
    s, _f, _r, _t = planted()
    cols = dict(s.columns, far_rx_ns=np.full(len(s), MISSING), far_tx_ns=np.full(len(s), MISSING))
    one_way = Samples(cols)
    assert np.array_equal(metrics.latency(one_way), (cols["rx_sw_ns"] - cols["send_ns"]).astype(float))
    assert "round_trip" not in summarise(one_way)
    assert roundtrip.estimate(np.array([np.nan]), np.array([np.nan])) is None


def test_clock_bound_takes_the_strongest_source_and_flags() -> None:
    """One clock beats everything; otherwise the smaller of the RTT bound and the hosts' sum; unknown is flagged."""
    synced = {"bound_ns": 800}
    assert clockbound.assess({"a": synced, "b": synced}, same_clock=True)["bound_ns"] == 0
    rtt = {"offset_ns": -300, "bound_ns": 1_000}
    assert clockbound.assess({"a": synced, "b": synced}, same_clock=False, rtt=rtt)["bound_ns"] == 1_300
    assert clockbound.assess({"a": synced, "b": {"bound_ns": 100}}, same_clock=False, rtt=rtt)["bound_ns"] == 900
    unknown = clockbound.assess({"a": synced}, same_clock=False)
    assert unknown["bound_ns"] is None and clockbound.flag(unknown, 50.0)["flagged"]
    small = clockbound.flag(clockbound.assess({}, same_clock=False, rtt={"offset_ns": 0, "bound_ns": 4_000}), 50.0)
    assert not small["flagged"]
    assert clockbound.flag(clockbound.assess({}, same_clock=False, rtt={"offset_ns": 0, "bound_ns": 6_000}),
                           50.0)["flagged"]


@pytest.mark.parametrize("required,refused", [(10_000, False), (999, True)])
def test_require_sync_refuses_above_the_bound(required: int, refused: bool) -> None:
    """--require-sync: refused when the bound is larger than asked, with the reason in one line."""
    check = clockbound.assess({}, same_clock=False, rtt={"offset_ns": 0, "bound_ns": 1_000})
    why = clockbound.refusal(check, required)
    assert (why is not None) == refused
    if why:
        assert "\n" not in why and "1.000 us" in why
