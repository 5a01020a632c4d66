"""Derived metrics, computed from raw timestamps at analysis time (docs/metrics.md).

Every function returns float64 nanoseconds aligned with the sample rows, NaN
where an input timestamp is missing. Differences are taken in int64 before the
conversion to float: epoch nanoseconds (~1.8e18) do not fit a float64 exactly,
but their differences do.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from latscope.store.samples import MISSING, Samples


def best(samples: Samples, hw: str, sw: str) -> np.ndarray:
    """Hardware timestamp where present, else software (int64, MISSING when neither)."""
    hw_col = samples[hw]
    # Most runs have no hardware timestamps at all; a lazily read column then
    # is a zero-stride view of MISSING, and the software column is the answer.
    if len(hw_col) and hw_col.strides == (0,) and hw_col[0] == MISSING:
        return samples[sw]
    return np.where(hw_col != MISSING, hw_col, samples[sw])


def rx_best(samples: Samples) -> np.ndarray:
    """rx_hw_ns where present, else rx_sw_ns."""
    return best(samples, "rx_hw_ns", "rx_sw_ns")


def tx_best(samples: Samples) -> np.ndarray:
    """tx_hw_ns where present, else tx_sw_ns."""
    return best(samples, "tx_hw_ns", "tx_sw_ns")


def diff_ns(later: np.ndarray, earlier: np.ndarray) -> np.ndarray:
    """later - earlier as float64 ns, NaN where either side is MISSING."""
    ok = (later != MISSING) & (earlier != MISSING)
    # Subtract everywhere (rows with MISSING wrap around harmlessly) and blank
    # them afterwards: two fancy-indexed copies per column cost more than the math.
    out = (later - earlier).astype(np.float64)
    out[~ok] = np.nan
    return out


def latency(samples: Samples) -> np.ndarray:
    """One-way latency: rx_best - send_ns."""
    return diff_ns(rx_best(samples), samples["send_ns"])


def delta(samples: Samples) -> np.ndarray:
    """Inter-arrival interval: rx_best minus the rx_best of the packet received just before it.

    Packets are taken in arrival order, so reordering does not produce negative
    deltas; each delta belongs to the later packet. The first received packet
    and lost packets have NaN.
    """
    rx = rx_best(samples)
    out = np.full(len(rx), np.nan)
    idx = np.flatnonzero(rx != MISSING)
    if len(idx) < 2:
        return out
    arrived = rx[idx]
    # Without reordering the rows are already in arrival order; checking is
    # far cheaper than sorting 10 million timestamps.
    if np.all(arrived[1:] >= arrived[:-1]):
        order = idx
    else:
        order = idx[np.argsort(arrived, kind="stable")]
        arrived = rx[order]
    out[order[1:]] = np.diff(arrived).astype(np.float64)
    return out


def wakeup_latency(samples: Samples) -> np.ndarray:
    """Sender timer precision: wake_ns - sched_ns."""
    return diff_ns(samples["wake_ns"], samples["sched_ns"])


def sender_latency(samples: Samples) -> np.ndarray:
    """Sender kernel TX path: tx_sw_ns - send_ns."""
    return diff_ns(samples["tx_sw_ns"], samples["send_ns"])


def path_delay(samples: Samples) -> np.ndarray:
    """Wire, bridge or hypervisor path: rx_best - tx_best."""
    return diff_ns(rx_best(samples), tx_best(samples))


def arrival_latency(samples: Samples) -> np.ndarray:
    """Receiver wakeup and scheduling: rx_user_ns - rx_best."""
    return diff_ns(samples["rx_user_ns"], rx_best(samples))


def e2e(samples: Samples) -> np.ndarray:
    """Everything from the schedule on: rx_user_ns - sched_ns (no coordinated omission)."""
    return diff_ns(samples["rx_user_ns"], samples["sched_ns"])


#: name -> (function, columns it needs). Names are those of docs/metrics.md.
METRICS: dict[str, tuple[Callable[[Samples], np.ndarray], tuple[str, ...]]] = {
    "latency": (latency, ("send_ns", "rx_hw_ns", "rx_sw_ns")),
    "delta": (delta, ("rx_hw_ns", "rx_sw_ns")),
    "wakeup_latency": (wakeup_latency, ("wake_ns", "sched_ns")),
    "sender_latency": (sender_latency, ("tx_sw_ns", "send_ns")),
    "path_delay": (path_delay, ("rx_hw_ns", "rx_sw_ns", "tx_hw_ns", "tx_sw_ns")),
    "arrival_latency": (arrival_latency, ("rx_user_ns", "rx_hw_ns", "rx_sw_ns")),
    "e2e": (e2e, ("rx_user_ns", "sched_ns")),
}
