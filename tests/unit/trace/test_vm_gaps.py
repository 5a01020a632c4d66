"""The VM breakdown's vectorised pieces agree with their one-at-a-time definitions."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from latscope.trace.vmculprits import _overlaps

T0 = 1_795_000_000_000_000_000  # realistic epoch nanoseconds: the products must not overflow

interval = st.tuples(st.integers(0, 10**9), st.integers(0, 10**8)).map(lambda t: (T0 + t[0], T0 + t[0] + t[1]))


@settings(max_examples=300, deadline=None)
@given(st.lists(interval, max_size=40), st.lists(interval, min_size=1, max_size=40))
def test_overlaps_sum_each_intervals_overlap_with_each_window(ivals, windows) -> None:
    """Overlapping and nested intervals count as often as they appear, as the per-window sum did."""
    a = np.array([w[0] for w in windows], np.int64)
    b = np.array([w[1] for w in windows], np.int64)
    want = [sum(max(0, min(e, wb) - max(s, wa)) for s, e in ivals) for wa, wb in windows]
    assert _overlaps(ivals, a, b).tolist() == want


def test_no_intervals_or_no_windows() -> None:
    assert _overlaps([], np.array([T0]), np.array([T0 + 5])).tolist() == [0]
    assert _overlaps([(T0, T0 + 9)], np.zeros(0, np.int64), np.zeros(0, np.int64)).tolist() == []


def test_running_at_many_times_is_running_at_each() -> None:
    """Before the first segment, inside, on boundaries, after the last, and a CPU without segments."""
    from latscope.trace import model
    from tests.unit.trace.test_model import ts, woken_out_of_idle

    tl = woken_out_of_idle()
    times = np.array([ts(u) for u in (50, 100, 102, 104, 110, 149, 150, 151, 400)], np.int64)
    for cpu in (0, 1):
        assert model.running_at_many(tl, cpu, times).tolist() == [model.running_at(tl, cpu, int(t)) for t in times]
