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


def absent(col: np.ndarray) -> bool:
    """True for a column without a single value (a lazily read all-null column is a zero-stride view)."""
    return len(col) == 0 or (col.strides == (0,) and col[0] == MISSING) or not np.any(col != MISSING)


def latency(samples: Samples) -> np.ndarray:
    """One-way latency: rx_best - send_ns; for a round trip (far_rx_ns present), the round-trip time."""
    one_way = diff_ns(rx_best(samples), samples["send_ns"])
    try:
        far_rx = samples["far_rx_ns"]
    except KeyError:  # samples loaded without the round-trip columns: a one-way run
        return one_way
    if absent(far_rx):
        return one_way
    return np.where(far_rx != MISSING, rtt(samples), one_way)


def t1(samples: Samples) -> np.ndarray:
    """A round trip's start: the kernel TX timestamp (tx_best), send_ns where the kernel gave none."""
    tx = tx_best(samples)
    return np.where(tx != MISSING, tx, samples["send_ns"])


def rtt(samples: Samples) -> np.ndarray:
    """Round-trip time without the far end's turnaround: (t4 - t1) - (t3 - t2), as NTP's delay."""
    return diff_ns(rx_best(samples), t1(samples)) - turnaround(samples)


def turnaround(samples: Samples) -> np.ndarray:
    """How long the far end held the packet: far_tx_ns - far_rx_ns (t3 - t2, one clock)."""
    return diff_ns(samples["far_tx_ns"], samples["far_rx_ns"])


def forward_delay(samples: Samples) -> np.ndarray:
    """t2 - t1: the outbound one-way delay plus the clock offset (the far clock minus ours)."""
    return diff_ns(samples["far_rx_ns"], t1(samples))


def reverse_delay(samples: Samples) -> np.ndarray:
    """t4 - t3: the return one-way delay minus the clock offset."""
    return diff_ns(rx_best(samples), samples["far_tx_ns"])


def clock_offset(samples: Samples) -> np.ndarray:
    """Per round trip, NTP's offset of the far clock: ((t2 - t1) + (t3 - t4)) / 2, good to +- rtt / 2."""
    return (forward_delay(samples) - reverse_delay(samples)) / 2


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


_RTT_COLUMNS = ("send_ns", "tx_hw_ns", "tx_sw_ns", "rx_hw_ns", "rx_sw_ns", "far_rx_ns", "far_tx_ns")
#: name -> (function, columns it needs). Names are those of docs/metrics.md.
METRICS: dict[str, tuple[Callable[[Samples], np.ndarray], tuple[str, ...]]] = {
    "latency": (latency, ("send_ns", "rx_hw_ns", "rx_sw_ns", "far_rx_ns", "far_tx_ns", "tx_hw_ns", "tx_sw_ns")),
    "delta": (delta, ("rx_hw_ns", "rx_sw_ns")),
    "wakeup_latency": (wakeup_latency, ("wake_ns", "sched_ns")),
    "sender_latency": (sender_latency, ("tx_sw_ns", "send_ns")),
    "path_delay": (path_delay, ("rx_hw_ns", "rx_sw_ns", "tx_hw_ns", "tx_sw_ns")),
    "arrival_latency": (arrival_latency, ("rx_user_ns", "rx_hw_ns", "rx_sw_ns")),
    "e2e": (e2e, ("rx_user_ns", "sched_ns")),
    # Round trips (run --mode rtt); NaN in one-way runs.
    "rtt": (rtt, _RTT_COLUMNS),
    "turnaround": (turnaround, ("far_rx_ns", "far_tx_ns")),
    "forward_delay": (forward_delay, _RTT_COLUMNS),
    "reverse_delay": (reverse_delay, _RTT_COLUMNS),
    "clock_offset": (clock_offset, _RTT_COLUMNS),
}
