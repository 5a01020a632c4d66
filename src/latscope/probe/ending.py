"""How a measurement ended, and what is true about its packets when it did not end well.

The two halves' columns are joined (probe.merge); then:

- a half that died (SIGKILL, a crash) took its columns with it, and the
  other half's are kept: without the sender's, the rows come from the
  receiver's packets and their headers (as for `recv`); without the
  receiver's, every row is the sender's with no receive time.
- a packet counts as *lost* only if the receiver was listening when it
  would have arrived. Packets sent after the receiver stopped (killed,
  stopped by a signal, timed out) are *unobserved*: no receive time, no
  lost flag, counted in ``completeness.unobserved``.
- a run in which no packet was sent measured nothing and is not stored:
  ``join`` raises with a message that says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from latscope.contract import FLAG_LOST, FLAG_SEND_FAILED, MISSING
from latscope.errors import CaptureError
from latscope.probe.merge import merge
from latscope.stopping import signal_name

#: A packet sent this shortly before the receiver stopped listening may still have been on its way.
IN_FLIGHT_NS = 100_000_000
#: Signals that stop a worker when sent to it by someone other than latscope (which uses SIGTERM/SIGUSR1
#: on a stop request; those show as ``stopped_by`` or as a receiver that gave up).
STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")


@dataclass(frozen=True)
class Ending:
    """Whether the run is complete, why it ended (one phrase) and what the user should be told."""

    interrupted: bool
    reason: str
    warnings: tuple[str, ...] = ()


def join(s_arr: dict[str, np.ndarray] | None, s_info: dict[str, Any], r_arr: dict[str, np.ndarray] | None,
         r_info: dict[str, Any], stream: int, stopped_by: int | None = None,
         ) -> tuple[dict[str, np.ndarray], dict[str, int], Ending]:
    """Sample columns, completeness counts and the ending; ``stopped_by``: the stop request's signal, if any."""
    if s_arr is None:
        hello = r_info.get("hello") or {}
        cols, counts = merge(None, r_arr, r_info, stream, base_time_ns=_int(hello.get("base_time_ns")),
                             period_ns=_int(hello.get("period_ns")))
    else:
        cols, counts = merge(s_arr, r_arr, r_info, stream)
    unobserved = unobserved_rows(cols, r_arr is not None, r_info)
    n_unobserved = int(np.count_nonzero(unobserved))
    if n_unobserved:
        cols["flags"][unobserved] &= ~np.int32(FLAG_LOST)
        counts["lost"] = int(np.count_nonzero(cols["flags"] & FLAG_LOST))
        counts["unobserved"] = n_unobserved
    if counts["sent"] == 0 and counts["received"] == 0:
        raise CaptureError(nothing_measured(s_info, r_info, stopped_by, len(cols["seq"])))
    return cols, counts, describe(s_info, r_info, counts, stopped_by)


def unobserved_rows(cols: dict[str, np.ndarray], have_receiver: bool, r_info: dict[str, Any]) -> np.ndarray:
    """Rows without a receive time that no receiver was listening for (sent ones: a failed send is no packet)."""
    no_rx = (cols["rx_user_ns"] == MISSING) & ((cols["flags"] & FLAG_SEND_FAILED) == 0)
    if not have_receiver:
        return no_rx
    if r_info.get("stop_reason") == "end" or not r_info.get("ended_ns"):
        return np.zeros(len(no_rx), dtype=bool)
    got = cols["rx_user_ns"] != MISSING
    if got.any():
        # When the receiver stopped, on the sender's clock: the last packet it got plus how long it went
        # on listening after it (a duration on one clock, so it holds when the halves' clocks differ).
        last = int(np.argmax(np.where(got, cols["rx_user_ns"], np.iinfo(np.int64).min)))
        stopped = int(cols["send_ns"][last]) + int(r_info["ended_ns"]) - int(cols["rx_user_ns"][last])
    else:
        stopped = int(r_info["ended_ns"])  # nothing arrived: the clocks are one (both halves on this host)
    return no_rx & (cols["send_ns"] != MISSING) & (cols["send_ns"] > stopped - IN_FLIGHT_NS)


def describe(s_info: dict[str, Any], r_info: dict[str, Any], counts: dict[str, int],
             stopped_by: int | None) -> Ending:
    """Status, reason and warnings of a run that measured something."""
    warnings: list[str] = []
    reasons: list[str] = []
    if r_info.get("died"):
        reasons.append(f"the receiver was {r_info['died']}")
        warnings.append(f"the receiver was {r_info['died']}: the receive times of the packets it had got died "
                        f"with it; the sender's {counts['sent']} packets are stored, their arrival unobserved "
                        "(not counted as lost)")
    if s_info.get("died"):
        reasons.append(f"the sender was {s_info['died']}")
        warnings.append(f"the sender was {s_info['died']}: its own columns (wakeup, kernel TX times) died with "
                        f"it; the {counts['received']} packets the receiver got are stored with the send times "
                        "their headers carry")
    if stopped_by is not None:
        reasons.append(f"stopped by {signal_name(stopped_by)}")
    elif r_info.get("signal") in STOP_SIGNALS:
        # Sent to the worker directly (the controller's own stop request is ``stopped_by``).
        reasons.append(f"the receiver was stopped by {r_info['signal']}")
    elif r_info.get("interrupted") and r_info.get("stop_reason") in ("idle", "no packets", "timeout"):
        # The receiver gave up on its own; the SIGTERM the sender then got came from latscope.
        reasons.append(f"the receiver gave up ({r_info['stop_reason']})")
    elif s_info.get("signal") in STOP_SIGNALS:
        reasons.append(f"the sender was stopped by {s_info['signal']}")
    if counts.get("unobserved") and not r_info.get("died"):
        warnings.append(f"{counts['unobserved']} packets were sent after the receiver had stopped: unobserved, "
                        "not counted as lost")
    interrupted = bool(reasons) or bool(s_info.get("interrupted")) or bool(r_info.get("interrupted"))
    reason = reasons[0] if reasons else str(r_info.get("stop_reason") or "")
    return Ending(interrupted, reason, tuple(warnings))


def nothing_measured(s_info: dict[str, Any], r_info: dict[str, Any], stopped_by: int | None, rows: int) -> str:
    """Why a run without a single sent packet is not stored, in one line."""
    tail = "nothing was stored"
    if s_info.get("died"):
        return f"the sender was {s_info['died']} before its first packet; {tail}"
    if stopped_by is not None:
        return f"stopped by {signal_name(stopped_by)} before the first packet was sent; {tail}"
    if s_info.get("signal"):
        return f"the sender was stopped by {s_info['signal']} before its first packet; {tail}"
    if rows and s_info.get("send_failed"):
        return f"all {rows} sends failed; {tail}"
    if r_info.get("died"):
        return f"the receiver was {r_info['died']} and no packet was sent; {tail}"
    return f"no packet was sent; {tail}"


def late_signal(late: int | None, interrupted: bool) -> tuple[str, ...]:
    """The note for a stop signal that came while a complete run was being stored."""
    if late is None or interrupted:
        return ()
    return ((f"{signal_name(late)} came while the run was being stored: the measurement had ended, "
            "so the run is stored complete"),)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
