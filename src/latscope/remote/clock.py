"""How far the guest's clock is from the host's, and how sure we can be.

Each exchange gives four CLOCK_REALTIME readings, as NTP's do: t1 host sends,
t2 guest reads the request, t3 guest answers, t4 host reads the answer. With
the guest's clock ahead of the host's by ``offset``, causality alone says

    t3 - t4  <=  offset  <=  t2 - t1

(the guest cannot read a request before it was sent, nor the host an answer
before it was written). Every exchange is one such interval; over a short
series the clocks do not drift measurably, so the offset lies in the
intersection of all of them. The estimate is its midpoint and the
uncertainty its half-width: a hard bound, not a standard deviation. When
the intervals do not intersect (a clock was stepped or slewed during the
series), the exchange with the smallest round trip stands alone: its
midpoint +- half its round trip (NTP's minimum-delay filter).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class OffsetEstimate:
    """Guest clock minus host clock (ns), its bound, and the exchanges it came from."""

    offset_ns: int
    uncertainty_ns: int
    samples: int
    min_rtt_ns: int
    median_rtt_ns: int
    at_ns: int          # host time of the middle of the series
    method: str         # intersection | min-rtt

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def estimate(t1: Sequence[int], t2: Sequence[int], t3: Sequence[int], t4: Sequence[int]) -> OffsetEstimate:
    """The offset from exchanges (t1, t2, t3, t4), each a sequence of ns values of the same length."""
    a1, a2, a3, a4 = (np.asarray(x, dtype=np.int64) for x in (t1, t2, t3, t4))
    if not len(a1) or not (len(a1) == len(a2) == len(a3) == len(a4)):
        raise ValueError("estimate needs the same, non-zero number of t1..t4 values")
    rtt = (a4 - a1) - (a3 - a2)
    lower = a3 - a4
    upper = a2 - a1
    lo, hi = int(lower.max()), int(upper.min())
    at = int((int(a1[0]) + int(a4[-1])) // 2)
    if lo <= hi:
        return OffsetEstimate((lo + hi) // 2, (hi - lo + 1) // 2, len(a1), int(rtt.min()), int(np.median(rtt)),
                              at, "intersection")
    best = int(np.argmin(rtt))
    mid = (int(lower[best]) + int(upper[best])) // 2
    return OffsetEstimate(mid, int(rtt[best]) // 2 + 1, len(a1), int(rtt.min()), int(np.median(rtt)), at, "min-rtt")


def offset_at(before: OffsetEstimate, after: OffsetEstimate | None, t_ns: np.ndarray) -> np.ndarray:
    """The offset at host times ``t_ns``: linear between the estimates before and after the run."""
    if after is None or after.at_ns == before.at_ns:
        return np.full(len(t_ns), before.offset_ns, dtype=np.int64)
    slope = (after.offset_ns - before.offset_ns) / (after.at_ns - before.at_ns)
    return (before.offset_ns + slope * (t_ns.astype(np.float64) - before.at_ns)).round().astype(np.int64)


#: Columns of a worker's arrays that hold times of the worker's own clock, by role.
OWN_CLOCK = {"sender": ("sched", "wake", "send", "tx_sw", "tx_hw"), "receiver": ("rx_sw", "rx_hw", "rx_user")}
#: Columns of a receiver's arrays copied from the packets: the sender's clock.
HEADER_CLOCK = ("sched", "wake", "send", "tx")


def to_host_clock(arrays: dict[str, np.ndarray], names: tuple[str, ...], before: OffsetEstimate,
                  after: OffsetEstimate | None, missing: int) -> dict[str, np.ndarray]:
    """Copies of ``arrays`` with the guest-clock columns ``names`` moved onto the host's clock."""
    out = dict(arrays)
    for name in names:
        col = arrays.get(name)
        if col is None:
            continue
        col = col.astype(np.int64, copy=True)
        have = col != missing
        if have.any():
            # The offset is a function of host time; a guest time is close enough to pick it.
            col[have] -= offset_at(before, after, col[have])
        out[name] = col
    return out
