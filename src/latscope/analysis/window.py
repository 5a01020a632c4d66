"""Time ranges of a run (`--from/--to/--skip-warmup`) and per-window series.

Time into the run is measured on the sender's schedule (``sched_ns``) from the
first scheduled packet: a lost or late packet still has a place in time, so a
window holds the packets *sent* in it, and a latency spike is shown where it
was caused rather than where it was finally delivered. Runs without a
schedule (some imports) fall back to ``send_ns``, then to the receive time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from latscope.errors import ConfigError
from latscope.store.samples import MISSING
from latscope.units import format_duration

#: Columns that can place a packet in time, best first.
TIME_COLUMNS = ("sched_ns", "send_ns", "rx_sw_ns")


@dataclass(frozen=True)
class Range:
    """What the user asked for: offsets from the start of the run, in ns."""

    start_ns: int | None = None
    stop_ns: int | None = None
    warmup_ns: int = 0

    @property
    def is_everything(self) -> bool:
        return self.start_ns is None and self.stop_ns is None and not self.warmup_ns

    def effective_start_ns(self) -> int:
        """The later of --from and --skip-warmup: both cut the beginning."""
        return max(self.start_ns or 0, self.warmup_ns)

    def check(self) -> None:
        """Reject a range that cannot hold anything, before any data is read."""
        if self.stop_ns is not None and self.stop_ns <= self.effective_start_ns():
            raise ConfigError(
                f"empty time range: --to {format_duration(self.stop_ns)} is not after the start "
                f"{format_duration(self.effective_start_ns())} (--from/--skip-warmup)"
            )


@dataclass(frozen=True)
class Selection:
    """The rows a Range selected, and where the run and the range lie in time."""

    rows: slice | np.ndarray
    count: int
    t0_ns: int  # absolute time of the run's first packet
    span_ns: int  # length of the whole run
    start_ns: int  # first offset kept
    stop_ns: int | None  # first offset no longer kept (None: to the end)
    time_column: str

    def as_json(self) -> dict[str, Any]:
        return {
            "from_s": self.start_ns / 1e9,
            "to_s": None if self.stop_ns is None else self.stop_ns / 1e9,
            "rows": self.count,
            "run_span_s": self.span_ns / 1e9,
            "time_column": self.time_column,
        }


def time_column(present: dict[str, bool]) -> str:
    """The first column of TIME_COLUMNS that holds values (``present`` maps column -> has values)."""
    for name in TIME_COLUMNS:
        if present.get(name):
            return name
    raise ConfigError("the run has no timestamps to place its packets in time")


def select(time_ns: np.ndarray, rng: Range, column: str = "sched_ns") -> Selection:
    """Rows whose offset from the first packet lies in [start, stop).

    With no range every row is kept (including rows without a time). A
    monotonic time column (the normal case) gives a slice, which lets columns
    be read for just that part of the file.
    """
    rng.check()
    valid = time_ns != MISSING
    if not np.any(valid):
        raise ConfigError(f"the run has no {column} values to place its packets in time")
    everywhere = bool(valid.all())
    known = time_ns if everywhere else time_ns[valid]
    t0 = int(known.min())
    span = int(known.max()) - t0
    del known
    if rng.is_everything:
        return Selection(slice(0, len(time_ns)), len(time_ns), t0, span, 0, None, column)
    start = t0 + rng.effective_start_ns()
    stop = None if rng.stop_ns is None else t0 + rng.stop_ns
    rows: slice | np.ndarray
    if everywhere and bool(np.all(time_ns[1:] >= time_ns[:-1])):
        lo = int(np.searchsorted(time_ns, start, side="left"))
        hi = len(time_ns) if stop is None else int(np.searchsorted(time_ns, stop, side="left"))
        rows, count = slice(lo, max(lo, hi)), max(0, hi - lo)
    else:
        keep = valid & (time_ns >= start)
        if stop is not None:
            keep &= time_ns < stop
        rows = np.flatnonzero(keep)
        count = len(rows)
    if count == 0:
        raise ConfigError(
            f"the time range {format_duration(rng.effective_start_ns())}.."
            f"{'end' if rng.stop_ns is None else format_duration(rng.stop_ns)} holds no packets "
            f"(the run lasts {span / 1e9:.3f} s)"
        )
    return Selection(rows, count, t0, span, rng.effective_start_ns(), rng.stop_ns, column)


@dataclass(frozen=True)
class WindowSeries:
    """Per-window statistics of one metric; arrays are aligned, ns, NaN where a window has no value."""

    window_ns: int
    start_s: np.ndarray
    count: np.ndarray
    lost: np.ndarray
    min: np.ndarray
    p50: np.ndarray
    p99: np.ndarray
    max: np.ndarray

    def __len__(self) -> int:
        return len(self.start_s)

    def as_json(self) -> dict[str, Any]:
        def us(a: np.ndarray) -> list[float | None]:
            return [None if np.isnan(x) else round(float(x) / 1000, 3) for x in a]

        return {
            "window_s": self.window_ns / 1e9,
            "start_s": [round(float(s), 6) for s in self.start_s],
            "count": [int(c) for c in self.count],
            "lost": [int(c) for c in self.lost],
            "min_us": us(self.min),
            "p50_us": us(self.p50),
            "p99_us": us(self.p99),
            "max_us": us(self.max),
        }


def window_series(offset_ns: np.ndarray, values: np.ndarray, window_ns: int,
                  lost: np.ndarray | None = None, origin_ns: int = 0) -> WindowSeries:
    """Cut ``values`` into consecutive windows of ``window_ns`` by their offset into the run.

    Windows start at ``origin_ns`` (the start of the selected range) so that
    `--from 5m --window 1s` gives windows at 300 s, 301 s, ... Empty windows
    inside the range are kept (count 0) so a gap in the data shows as a gap.
    """
    if window_ns <= 0:
        raise ConfigError("the window must be longer than 0")
    valid_t = offset_ns != MISSING
    idx_all = np.where(valid_t, (offset_ns - origin_ns) // window_ns, -1)
    if not np.any(valid_t):
        raise ConfigError("no packets with a time to cut into windows")
    nwin = int(idx_all.max()) + 1
    if nwin > 10_000_000:
        raise ConfigError(f"{nwin} windows is too many; choose a longer --window")
    if np.all(idx_all[1:] >= idx_all[:-1]):
        order = None
        sorted_idx = idx_all
    else:
        order = np.argsort(idx_all, kind="stable")
        sorted_idx = idx_all[order]
    bounds = np.searchsorted(sorted_idx, np.arange(nwin + 1), side="left")
    vals = values if order is None else values[order]
    out = {k: np.full(nwin, np.nan) for k in ("min", "p50", "p99", "max")}
    count = np.zeros(nwin, dtype=np.int64)
    for w in range(nwin):
        seg = vals[bounds[w]:bounds[w + 1]]
        seg = seg[~np.isnan(seg)]
        if len(seg) == 0:
            continue
        count[w] = len(seg)
        out["min"][w], out["max"][w] = seg.min(), seg.max()
        out["p50"][w], out["p99"][w] = np.percentile(seg, (50.0, 99.0))
    lost_count = np.zeros(nwin, dtype=np.int64)
    if lost is not None:
        li = idx_all[lost & valid_t]
        lost_count = np.bincount(li[li >= 0], minlength=nwin)[:nwin].astype(np.int64)
    start_s = (origin_ns + np.arange(nwin, dtype=np.float64) * window_ns) / 1e9
    return WindowSeries(window_ns, start_s, count, lost_count, out["min"], out["p50"], out["p99"], out["max"])


def offsets(time_ns: np.ndarray, t0_ns: int) -> np.ndarray:
    """Offset of each row from the start of the run (int64 ns, MISSING kept); reuses ``time_ns``."""
    missing = time_ns == MISSING
    time_ns -= t0_ns
    time_ns[missing] = MISSING
    return time_ns
