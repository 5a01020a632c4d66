"""Distribution statistics of one metric."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Percentiles of the standard summary: key -> percentile.
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9, "p9999": 99.99}


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


def describe(values: np.ndarray, percentiles: dict[str, float] | None = None) -> Stats:
    """Stats of ``values`` (ns, NaN ignored). stddev is the population standard deviation."""
    pcts = percentiles or PERCENTILES
    v = values[~np.isnan(values)] if values.dtype.kind == "f" else values
    if len(v) == 0:
        return Stats(0, None, None, None, None, {k: None for k in pcts})
    q = np.percentile(v, list(pcts.values()))
    return Stats(
        count=int(len(v)),
        min=float(v.min()),
        avg=float(v.mean()),
        max=float(v.max()),
        stddev=float(v.std()),
        percentiles={k: float(x) for k, x in zip(pcts, q)},
    )
