"""Round trips (run --mode rtt): the far clock's offset, its bound, and the one-way estimates it gives.

Each round trip has four timestamps (docs/metrics.md): t1 our kernel TX, t2
the far end's kernel RX, t3 its kernel TX of the echo, t4 our kernel RX of
the echo. With the far clock ahead of ours by ``offset``, causality alone says

    t3 - t4  <=  offset  <=  t2 - t1

(the far end cannot receive before we sent, nor we before it answered). Over
the run every round trip is such an interval; while the clocks do not drift
apart the offset lies in all of them, so the estimate is the midpoint of
their intersection and the bound its half-width: a hard bound, not a standard
deviation, and at most half the smallest round trip. When the intervals do
not intersect (a clock was stepped or drifted during the run), the round trip
with the smallest RTT stands alone: its midpoint +- half its RTT (NTP's
minimum-delay filter). remote/clock.py applies the same rule to the guest
clock exchanges.

The one-way estimates are then forward = (t2 - t1) - offset and reverse =
(t4 - t3) + offset, each good to +- bound. On one host (one clock) the offset
is 0 and lies inside the bound by construction: a result outside it means
inconsistent timestamps.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from latscope.analysis import metrics
from latscope.analysis.stats import describe


def estimate(forward_ns: np.ndarray, reverse_ns: np.ndarray) -> dict[str, Any] | None:
    """The offset estimate from per-round-trip t2 - t1 and t4 - t3 (float ns, NaN where unknown)."""
    ok = ~np.isnan(forward_ns) & ~np.isnan(reverse_ns)
    if not ok.any():
        return None
    upper = forward_ns[ok]
    lower = -reverse_ns[ok]
    lo, hi = float(lower.max()), float(upper.min())
    rtt = upper - lower
    if lo <= hi:
        offset, bound, method = (lo + hi) / 2, (hi - lo) / 2, "intersection"
    else:
        best = int(np.argmin(rtt))
        offset, bound, method = (lower[best] + upper[best]) / 2, rtt[best] / 2, "min-rtt"
    return {"offset_ns": int(np.rint(offset)), "bound_ns": math.ceil(bound), "method": method,
            "round_trips": int(ok.sum()), "min_rtt_ns": int(rtt.min())}


def summary(samples: Any) -> dict[str, Any] | None:
    """The run's round_trip block (run.json summary), None for a one-way run."""
    try:
        far_rx = samples["far_rx_ns"]
    except KeyError:
        return None
    if metrics.absent(far_rx):
        return None
    fwd = metrics.forward_delay(samples)
    rev = metrics.reverse_delay(samples)
    est = estimate(fwd, rev)
    turn = metrics.turnaround(samples)
    doc: dict[str, Any] = {"clock": est, "turnaround_us": describe(turn, scratch=True).as_us()}
    if est is not None:
        off = est["offset_ns"]
        doc["forward_us"] = describe(fwd - off, scratch=True).as_us()
        doc["reverse_us"] = describe(rev + off, scratch=True).as_us()
        doc["clock_offset_us"] = describe((fwd - rev) / 2, scratch=True).as_us()
    return doc
