"""Distribution statistics of one metric."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from latscope.contract import PERCENTILES

__all__ = ["PERCENTILES", "Stats", "describe"]


@dataclass(frozen=True)
class Stats:
    """min/avg/max/stddev and percentiles of a metric, in nanoseconds (None when empty)."""

    count: int
    min: float | None
    avg: float | None
    max: float | None
    stddev: float | None
    percentiles: dict[str, float | None]

    def as_us(self) -> dict[str, float | int | None]:
        """JSON form in microseconds: min, avg, max, stddev, p50 ... p9999, count."""
        def us(v: float | None) -> float | None:
            return None if v is None else round(v / 1000.0, 3)

        doc: dict[str, float | int | None] = {
            "count": self.count,
            "min": us(self.min),
            "avg": us(self.avg),
            "max": us(self.max),
            "stddev": us(self.stddev),
        }
        doc.update({k: us(v) for k, v in self.percentiles.items()})
        return doc


def describe(values: np.ndarray, percentiles: dict[str, float] | None = None, *, scratch: bool = False) -> Stats:
    """Stats of ``values`` (ns, NaN ignored). stddev is the population standard deviation.

    ``scratch=True`` lets describe reorder ``values`` in place (the caller no
    longer needs their order), which saves a copy of the whole array.
    """
    pcts = percentiles or PERCENTILES
    nan = np.isnan(values) if values.dtype.kind == "f" else None
    copied = nan is not None and bool(nan.any())
    v = values[~nan] if copied and nan is not None else values
    del nan
    if len(v) == 0:
        return Stats(0, None, None, None, None, {k: None for k in pcts})
    count, lo, avg, hi, sd = len(v), float(v.min()), float(v.mean()), float(v.max()), float(v.std())
    # v is our own copy when NaNs were filtered out: let the partition reuse it
    # instead of copying 80 MB again on a 10-million-packet run. The moments are
    # taken before, so the reordering cannot change their rounding.
    q = np.percentile(v, list(pcts.values()), overwrite_input=copied or scratch)
    return Stats(
        count=count,
        min=lo,
        avg=avg,
        max=hi,
        stddev=sd,
        percentiles={k: float(x) for k, x in zip(pcts, q, strict=True)},
    )
