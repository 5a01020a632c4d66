"""Joining the two halves' columns into the rows of samples.parquet, and counting completeness."""

from __future__ import annotations

from typing import Any

import numpy as np

from latscope.contract import FLAG_LOST, FLAG_SEND_FAILED, MISSING


def merge(
    sender: dict[str, np.ndarray] | None,
    receiver: dict[str, np.ndarray] | None,
    recv_info: dict[str, Any],
    stream: int,
    *,
    base_time_ns: int | None = None,
    period_ns: int | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Sample columns and completeness counts.

    With the sender's own columns (``run``), they are authoritative for the
    send side and define how many packets exist. Without them (``recv`` on
    another host), the packets' headers and the end packet tell: rows go up to
    the count the sender reported, else to the highest seq seen. Either way no
    row lies beyond the receiver's columns: packets the receiver had no memory
    for are counted as ``refused``, and nothing from the wire sizes an array.
    """
    recv = receiver or {}
    rx_user_in = recv.get("rx_user")
    capacity = len(rx_user_in) if rx_user_in is not None else 0
    if sender is not None:
        planned = len(sender["sched"])
    else:
        reported = _bounded(recv_info.get("sent_reported"), _INT64_MAX)
        if reported is not None:
            planned = reported
        else:
            seen = np.flatnonzero(rx_user_in != MISSING) if rx_user_in is not None else np.zeros(0, np.int64)
            planned = int(seen[-1]) + 1 if len(seen) else 0
    if _bounded(recv_info.get("refused"), _INT64_MAX, 1) is not None:
        # The receiver turned packets away for lack of memory: nothing past its columns is known.
        bound = capacity
    elif sender is not None:
        bound = planned
    else:
        # Rows past the last packet received are lost packets, but only as many as the receiver
        # could have held: a reported count is never trusted to size the arrays on its own.
        bound = max(capacity, _bounded(recv_info.get("memory_slots"), _INT64_MAX) or 0)
    n = min(planned, bound)
    refused = planned - n
    implausible = 0
    base_time_ns = _bounded(base_time_ns, _MAX_BASE_NS, 1)
    period_ns = _bounded(period_ns, _MAX_PERIOD_NS, 1)

    def rcol(name: str) -> np.ndarray:
        col = recv.get(name)
        out = np.full(n, MISSING, dtype=np.int64)
        if col is not None:
            m = min(n, len(col))
            out[:m] = col[:m]
        return out

    cols: dict[str, np.ndarray] = {
        "seq": np.arange(n, dtype=np.int64),
        "stream": np.full(n, stream & 0x7FFFFFFF, dtype=np.int32),
    }
    if sender is not None:
        for name in ("sched", "wake", "send"):
            cols[f"{name}_ns"] = sender[name][:n].astype(np.int64)
        cols["tx_sw_ns"] = sender["tx_sw"][:n].astype(np.int64)
        cols["tx_hw_ns"] = sender["tx_hw"][:n].astype(np.int64)
        send_flags = sender["flags"][:n].astype(np.int32)
    else:
        # These times came in the packets: one outside 1970..2116 is no time (and would overflow
        # the differences the analysis takes), so it is dropped and counted.
        for name in ("sched", "wake", "send", "tx"):
            col = rcol(name)
            bad = (col != MISSING) & ((col < 0) | (col > _MAX_BASE_NS))
            implausible += int(np.count_nonzero(bad))
            col[bad] = MISSING
            if name != "tx":
                cols[f"{name}_ns"] = col
        tx = col
        is_hw = rcol("tx_is_hw")
        hw = (tx != MISSING) & (is_hw == 1)
        cols["tx_sw_ns"] = np.where(hw, MISSING, tx)
        cols["tx_hw_ns"] = np.where(hw, tx, MISSING)
        if base_time_ns is not None and period_ns is not None and base_time_ns + n * period_ns <= _INT64_MAX:
            # A lost packet's schedule is known even though its header never arrived.
            missing = cols["sched_ns"] == MISSING
            cols["sched_ns"][missing] = base_time_ns + cols["seq"][missing] * period_ns
        send_flags = np.zeros(n, dtype=np.int32)
    cols["rx_sw_ns"] = rcol("rx_sw")
    cols["rx_hw_ns"] = rcol("rx_hw")
    cols["rx_user_ns"] = rcol("rx_user")
    recv_flags = np.zeros(n, dtype=np.int32)
    if "flags" in recv:
        m = min(n, len(recv["flags"]))
        recv_flags[:m] = recv["flags"][:m]
    flags = send_flags | recv_flags
    failed = (flags & FLAG_SEND_FAILED) != 0
    received = cols["rx_user_ns"] != MISSING
    lost = ~received & ~failed
    flags[lost] |= FLAG_LOST
    cols["flags"] = flags.astype(np.int32)

    sent_mask = ~failed
    has_tx = (cols["tx_sw_ns"] != MISSING) | (cols["tx_hw_ns"] != MISSING)
    has_rx = (cols["rx_sw_ns"] != MISSING) | (cols["rx_hw_ns"] != MISSING)
    foreign = recv_info.get("foreign") or {}
    counts = {
        "sent": int(np.count_nonzero(sent_mask)),
        "received": int(np.count_nonzero(received)),
        "lost": int(np.count_nonzero(lost)),
        "duplicated": int(recv_info.get("duplicated") or 0),
        "reordered": int(recv_info.get("reordered") or 0),
        "foreign": int(sum(foreign.values())),
        "send_failed": int(np.count_nonzero(failed)),
        # Without the sender's own columns a lost packet's TX timestamp is
        # unknowable, so only packets that arrived can be missing one.
        "missing_tx_timestamps": int(np.count_nonzero((sent_mask if sender is not None else received) & ~has_tx)),
        "missing_rx_timestamps": int(np.count_nonzero(received & ~has_rx)),
        "trace_overruns": 0,
        # Packets of the run the receiver had no memory for: neither received nor lost, not in the samples.
        "refused": int(refused),
        "implausible_timestamps": implausible,
    }
    return cols, counts


_INT64_MAX = 2**63 - 1
_MAX_BASE_NS = 2**62
_MAX_PERIOD_NS = 2**47


def _bounded(value: Any, hi: int, lo: int = 0) -> int | None:
    """``value`` when it is an int in [lo, hi], else None: these numbers came from the wire."""
    return value if type(value) is int and lo <= value <= hi else None
