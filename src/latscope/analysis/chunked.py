"""Metrics over a lazily read run in one pass, one Parquet row group at a time.

The results are exactly those of analysis.metrics and analysis.summary on
whole arrays (tests compare them); only time and memory differ. Each row
group's columns are read once, in one call that Arrow decodes in parallel, and
every metric, count and the arrival order are taken from them before the next
group is read. A Samples object (everything in memory) is one single chunk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from latscope.analysis import metrics
from latscope.store.samples import FLAG_LOST, MISSING

CountFn = Callable[[Any, dict[str, int] | None], dict[str, int]]


@dataclass(frozen=True)
class Scan:
    """What one pass over a run yields."""

    counts: dict[str, int]
    duration_ns: int
    values: dict[str, np.ndarray]
    lost: np.ndarray


def chunks(samples: Any) -> Iterable[tuple[int, int, Any]]:
    """(start, stop, part) over ``samples``: row groups of a LazyColumns, or everything at once."""
    split = getattr(samples, "chunks", None)
    return split() if split is not None else [(0, len(samples), samples)]


def scan(samples: Any, names: list[str], recorded: dict[str, int] | None, count: CountFn) -> Scan:
    """Packet counts (``count`` is summary.packet_counts), duration, metrics ``names`` and the lost mask."""
    local = [n for n in names if n != "delta"]
    cols = ["flags", "sched_ns", "send_ns", "rx_hw_ns", "rx_sw_ns"] + [c for n in local for c in metrics.METRICS[n][1]]
    n_rows = len(samples)
    values = {n: np.empty(n_rows, dtype=np.float64) for n in local}
    lost = np.zeros(n_rows, dtype=bool)
    stream = _DeltaStream(n_rows) if "delta" in names else None
    totals: dict[str, int] = {}
    lo: int | None = None
    hi: int | None = None
    seen = 0
    for a, b, part in chunks(samples):
        if hasattr(part, "prefetch"):
            part.prefetch(cols)
        # Counts are sums over rows, so chunk counts add up; duplicated and
        # foreign come from the capture-time record and are taken once.
        for key, value in count(part, recorded).items():
            totals[key] = value if key in ("duplicated", "foreign") else totals.get(key, 0) + value
        # The run's span is that of its schedule; imported runs may have no
        # schedule, and then the send times tell.
        sched = part["sched_ns"]
        if not np.any(sched != MISSING):
            sched = part["send_ns"]
        valid = sched[sched != MISSING]
        if len(valid):
            seen += len(valid)
            lo = int(valid.min()) if lo is None else min(lo, int(valid.min()))
            hi = int(valid.max()) if hi is None else max(hi, int(valid.max()))
        lost[a:b] = (part["flags"] & FLAG_LOST) != 0
        for n in local:
            values[n][a:b] = metrics.METRICS[n][0](part)
        if stream is not None:
            stream.feed(a, metrics.rx_best(part))
    if stream is not None:
        done = stream.finish()
        values["delta"] = done if done is not None else metrics.delta(samples)
    duration = hi - lo if seen > 1 and lo is not None and hi is not None else 0
    return Scan(totals or count(samples, recorded), duration, values, lost)


class _DeltaStream:
    """metrics.delta (inter-arrival time in arrival order) fed one chunk of rx timestamps at a time.

    Arrival order is a global sort, but reordering is local: a packet is
    overtaken only by packets sent around the same time. Arrivals wait in a
    sorted buffer until the next chunk shows its earliest arrival; everything
    not later than that is final (ties go to the lower row, as in the stable
    sort of metrics.delta). Should a still later chunk hold an arrival before
    one already finalised, the stream gives up (finish() returns None) and the
    caller falls back to the global sort: exact in every case.
    """

    def __init__(self, n: int) -> None:
        self.out = np.full(n, np.nan)
        self.buf_t = np.zeros(0, dtype=np.int64)
        self.buf_row = np.zeros(0, dtype=np.int64)
        self.last: int | None = None
        self.broken = False

    def feed(self, first_row: int, rx: np.ndarray) -> None:
        if self.broken:
            return
        rows = np.flatnonzero(rx != MISSING)
        if len(rows) == 0:
            return
        t = rx[rows]
        earliest = int(t.min())
        if self.last is not None and earliest < self.last:
            self.broken = True
            return
        self._finalise(int(np.searchsorted(self.buf_t, earliest, side="right")))
        # Buffered rows are all lower than this chunk's, so a stable sort of
        # [buffer, chunk] breaks ties by row like the global stable sort.
        t = np.concatenate([self.buf_t, t])
        r = np.concatenate([self.buf_row, rows + first_row])
        if len(t) > 1 and bool(np.any(t[1:] < t[:-1])):
            order = np.argsort(t, kind="stable")
            t, r = t[order], r[order]
        self.buf_t, self.buf_row = t, r

    def finish(self) -> np.ndarray | None:
        if self.broken:
            return None
        self._finalise(len(self.buf_t))
        return self.out

    def _finalise(self, cut: int) -> None:
        if cut == 0:
            return
        t = self.buf_t[:cut]
        d = np.empty(cut)
        d[0] = np.nan if self.last is None else float(t[0] - self.last)
        d[1:] = np.diff(t)
        self.out[self.buf_row[:cut]] = d
        self.last = int(t[-1])
        self.buf_t, self.buf_row = self.buf_t[cut:], self.buf_row[cut:]
