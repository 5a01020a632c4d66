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
    the count the sender reported, else to the highest seq seen.
    """
    recv = receiver or {}
    if sender is not None:
        n = len(sender["sched"])
    elif recv_info.get("sent_reported") is not None:
        n = int(recv_info["sent_reported"])
    else:
        rx_user = recv.get("rx_user", np.zeros(0, np.int64))
        seen = np.flatnonzero(rx_user != MISSING)
        n = int(seen[-1]) + 1 if len(seen) else 0

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
        for name in ("sched", "wake", "send"):
            cols[f"{name}_ns"] = rcol(name)
        tx = rcol("tx")
        is_hw = rcol("tx_is_hw")
        hw = (tx != MISSING) & (is_hw == 1)
        cols["tx_sw_ns"] = np.where(hw, MISSING, tx)
        cols["tx_hw_ns"] = np.where(hw, tx, MISSING)
        if base_time_ns is not None and period_ns:
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
    }
    return cols, counts
