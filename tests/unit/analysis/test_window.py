"""Time ranges select the packets sent in them; windows cut a metric into per-window statistics."""

from __future__ import annotations

import numpy as np
import pytest

from latscope.analysis.window import Range, offsets, select, window_series
from latscope.errors import ConfigError
from latscope.store.samples import MISSING

S = 1_000_000_000
T0 = 1_795_000_000_000_000_000


def _times(n: int, period: int = 1_000_000) -> np.ndarray:
    return T0 + np.arange(n, dtype=np.int64) * period


def test_everything_selects_every_row() -> None:
    """No option: all rows, as a slice, with the run's span."""
    sel = select(_times(5000), Range())
    assert sel.rows == slice(0, 5000) and sel.count == 5000 and sel.span_ns == 4999 * 1_000_000


def test_from_to_is_half_open_on_send_time() -> None:
    """--from 1s --to 2s keeps the packets scheduled in [1 s, 2 s) from the first packet."""
    sel = select(_times(5000), Range(1 * S, 2 * S))
    assert sel.rows == slice(1000, 2000) and sel.count == 1000


def test_skip_warmup_and_from_take_the_later_start() -> None:
    """--skip-warmup and --from both cut the beginning; the later one wins."""
    assert select(_times(5000), Range(None, None, 2 * S)).rows == slice(2000, 5000)
    assert select(_times(5000), Range(1 * S, None, 3 * S)).rows == slice(3000, 5000)


def test_unordered_times_give_row_indices() -> None:
    """Times that are not monotonic (or missing) select by mask, never by a wrong slice."""
    t = _times(10)
    t[[2, 7]] = t[[7, 2]]
    t[5] = MISSING
    sel = select(t, Range(2_000_000, 6_000_000))
    assert list(sel.rows) == [3, 4, 7]


def test_empty_range_is_a_usage_error() -> None:
    """A range beyond the run, or --to before --from, is a ConfigError that names the run's length."""
    with pytest.raises(ConfigError, match="holds no packets"):
        select(_times(1000), Range(5 * S, 6 * S))
    with pytest.raises(ConfigError, match="not after"):
        Range(5 * S, 4 * S).check()


def test_offsets_keep_missing() -> None:
    """Offsets count from the first packet; missing times stay missing."""
    t = _times(3)
    t[1] = MISSING
    out = offsets(t.copy(), T0)
    assert out[0] == 0 and out[1] == MISSING and out[2] == 2_000_000


def test_window_series_matches_numpy_per_window() -> None:
    """Each window's count, p50, p99 and max equal numpy's on that window's values; lost packets are counted."""
    rng = np.random.default_rng(1)
    n = 10_000
    off = np.arange(n, dtype=np.int64) * 1_000_000
    v = rng.lognormal(10, 0.3, n)
    lost = rng.random(n) < 0.01
    v[lost] = np.nan
    ws = window_series(off, v, S, lost)
    assert len(ws) == 10
    for w in range(10):
        seg = v[w * 1000:(w + 1) * 1000]
        seg = seg[~np.isnan(seg)]
        assert ws.count[w] == len(seg)
        assert ws.lost[w] == np.count_nonzero(lost[w * 1000:(w + 1) * 1000])
        assert ws.p99[w] == pytest.approx(np.percentile(seg, 99))
        assert ws.p50[w] == pytest.approx(np.median(seg))
        assert ws.max[w] == seg.max()


def test_window_series_starts_at_the_range_and_keeps_gaps() -> None:
    """Windows start at the range's start; an empty window inside stays, with count 0 and NaN statistics."""
    off = np.array([5 * S, 5 * S + 10, 7 * S + 5], dtype=np.int64)
    ws = window_series(off, np.array([1.0, 2.0, 3.0]), S, origin_ns=5 * S)
    assert list(ws.start_s) == [5.0, 6.0, 7.0]
    assert list(ws.count) == [2, 0, 1] and np.isnan(ws.p99[1])
