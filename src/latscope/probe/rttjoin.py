"""The rows of a round-trip run: the sender's columns and its echoes, the reflector's own record filling gaps.

The sender holds all four timestamps of every round trip it saw come back
(probe.echoes): t1 in tx_*_ns, t4 in rx_*_ns, t2 and t3 in far_rx_ns and
far_tx_ns. A round trip whose echo never came back is lost (FLAG_LOST). The
reflector's own columns, when it ran on this host (``reflector`` not None),
fill in a t3 no later echo carried (its successor was lost) and a t2 of an
echo that was lost on the way back, so a lost echo can be told from a lost
packet (far_rx_ns set, rx_*_ns null: the return leg lost it).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from latscope.contract import MISSING
from latscope.errors import CaptureError
from latscope.probe import ending


def join(s_arr: dict[str, np.ndarray] | None, s_info: dict[str, Any], reflector: dict[str, np.ndarray] | None,
         f_info: dict[str, Any], stream: int, stopped_by: int | None = None,
         ) -> tuple[dict[str, np.ndarray], dict[str, int], ending.Ending]:
    """Sample columns, completeness counts and the ending of a round-trip run."""
    if s_arr is None or "echo_rx_user" not in s_arr:
        why = s_info.get("died") or "ended without its columns"
        raise CaptureError(f"the sender was {why}: a round-trip run's echoes live in the sender, "
                           "so nothing was stored")
    echoes = {"rx_sw": s_arr["echo_rx_sw"], "rx_hw": s_arr["echo_rx_hw"], "rx_user": s_arr["echo_rx_user"],
              "flags": s_arr["echo_flags"]}
    foreign = dict(f_info.get("foreign") or {})
    for reason, n in (s_info.get("echo_foreign") or {}).items():
        foreign[f"echo_{reason}"] = n
    r_info = {**f_info, "duplicated": int(s_info.get("echo_duplicated") or 0),
              "reordered": int(s_info.get("echo_reordered") or 0), "foreign": foreign}
    if f_info.get("died"):
        r_info["died"] = f_info["died"]
    cols, counts, end = ending.join(s_arr, s_info, echoes, r_info, stream, stopped_by)
    n = len(cols["seq"])
    far_rx = s_arr["echo_far_rx"][:n].astype(np.int64)
    far_tx = s_arr["echo_far_tx"][:n].astype(np.int64)
    filled = 0
    if reflector is not None and "far_rx" in reflector:
        m = min(n, len(reflector["far_rx"]))
        for mine, theirs in ((far_rx, reflector["far_rx"]), (far_tx, reflector["far_tx"])):
            gap = (mine[:m] == MISSING) & (theirs[:m] != MISSING)
            mine[:m][gap] = theirs[:m][gap]
            filled += int(np.count_nonzero(gap))
    cols["far_rx_ns"] = far_rx
    cols["far_tx_ns"] = far_tx
    back = cols["rx_user_ns"] != MISSING
    counts["missing_far_timestamps"] = int(np.count_nonzero(back & ((far_rx == MISSING) | (far_tx == MISSING))))
    counts["far_timestamps_from_reflector"] = filled
    counts["reflected"] = int(f_info.get("echoed") or 0) if reflector is not None else counts["received"]
    return cols, counts, end
