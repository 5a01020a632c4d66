"""How a run ended: a dead half's columns, packets nobody observed, and runs that measured nothing."""

from __future__ import annotations

import signal

import numpy as np
import pytest

from latscope.errors import CaptureError
from latscope.probe.ending import IN_FLIGHT_NS, join, late_signal
from latscope.store.samples import FLAG_LOST, FLAG_SEND_FAILED, MISSING

M = MISSING
BASE = 1_795_000_000_000_000_000
PERIOD = 1_000_000


def _sender(n: int) -> dict[str, np.ndarray]:
    sched = BASE + np.arange(n, dtype=np.int64) * PERIOD
    return {"sched": sched, "wake": sched + 5_000, "send": sched + 6_000, "tx_sw": sched + 9_000,
            "tx_hw": np.full(n, M, np.int64), "flags": np.zeros(n, np.int32)}


def _receiver(n: int, got: list[int], capacity: int | None = None) -> dict[str, np.ndarray]:
    cap = capacity or n
    r = {k: np.full(cap, M, np.int64) for k in ("sched", "wake", "send", "tx", "tx_is_hw", "rx_sw", "rx_hw",
                                                "rx_user")}
    r["flags"] = np.zeros(cap, np.int32)
    for i in got:
        sched = BASE + i * PERIOD
        r["sched"][i], r["wake"][i], r["send"][i] = sched, sched + 5_000, sched + 6_000
        r["rx_sw"][i] = sched + 50_000
        r["rx_user"][i] = sched + 60_000
    return r


def test_a_killed_receiver_leaves_the_senders_packets_unobserved_not_lost() -> None:
    """No receiver columns: every sent packet is a row with no receive time, none flagged lost."""
    s = _sender(500)
    s["flags"][7] = FLAG_SEND_FAILED
    cols, counts, end = join(s, {"interrupted": True, "signal": "SIGTERM"}, None, {"died": "killed by SIGKILL"}, 9)
    assert len(cols["seq"]) == 500 and counts["sent"] == 499 and counts["received"] == 0
    assert counts["lost"] == 0 and counts["unobserved"] == 499
    assert not (cols["flags"] & FLAG_LOST).any()
    assert end.interrupted and end.reason == "the receiver was killed by SIGKILL"
    assert any("the receiver was killed by SIGKILL" in w and "499" in w for w in end.warnings)


def test_a_killed_sender_keeps_the_receivers_packets_with_their_schedule() -> None:
    """No sender columns: rows up to the highest seq received; a gap is lost and keeps its schedule."""
    r = _receiver(1000, [0, 1, 2, 4, 5], capacity=1000)
    info = {"hello": {"base_time_ns": BASE, "period_ns": PERIOD}, "stop_reason": "stopped", "interrupted": True,
            "ended_ns": BASE + 5 * PERIOD + 10 * IN_FLIGHT_NS}
    cols, counts, end = join(None, {"died": "killed by SIGKILL"}, r, info, 9)
    assert list(cols["seq"]) == [0, 1, 2, 3, 4, 5]
    assert counts["received"] == 5 and counts["lost"] == 1 and "unobserved" not in counts
    assert cols["sched_ns"][3] == BASE + 3 * PERIOD and cols["flags"][3] & FLAG_LOST
    assert end.reason == "the sender was killed by SIGKILL"


def test_packets_sent_after_the_receiver_stopped_are_unobserved() -> None:
    """A receiver stopped by a signal: gaps before it stopped are lost, packets sent after it are not."""
    n = 400
    got = [i for i in range(200) if i != 50]
    r = _receiver(n, got)
    last_rx = BASE + 199 * PERIOD + 60_000
    # It went on listening 20 ms after its last packet, then a SIGINT ended it.
    info = {"stop_reason": "interrupted", "interrupted": True, "signal": "SIGINT", "ended_ns": last_rx + 20_000_000}
    cols, counts, end = join(_sender(n), {"interrupted": True, "signal": "SIGTERM"}, r, info, 9)
    stopped_send = BASE + 199 * PERIOD + 6_000 + 20_000_000
    horizon = stopped_send - IN_FLIGHT_NS
    expect_lost = [i for i in range(n) if i not in got and BASE + i * PERIOD + 6_000 <= horizon]
    assert list(np.flatnonzero(cols["flags"] & FLAG_LOST)) == expect_lost and 50 in expect_lost
    assert counts["lost"] == len(expect_lost)
    assert counts["unobserved"] == n - len(got) - len(expect_lost)
    assert end.reason == "the receiver was stopped by SIGINT"


def test_a_normal_end_changes_nothing() -> None:
    """After the end packet every missing packet is lost, however late it was sent."""
    r = _receiver(10, [0, 1, 2, 3, 4, 5, 6, 7, 8])
    cols, counts, end = join(_sender(10), {}, r, {"stop_reason": "end", "ended_ns": BASE}, 9)
    assert counts["lost"] == 1 and "unobserved" not in counts and cols["flags"][9] & FLAG_LOST
    assert not end.interrupted and end.reason == "end" and end.warnings == ()


def test_the_stop_request_names_the_signal() -> None:
    _cols, _counts, end = join(_sender(3), {"interrupted": True, "signal": "SIGTERM"}, _receiver(3, [0, 1, 2]),
                             {"stop_reason": "end"}, 9, signal.SIGINT)
    assert end.interrupted and end.reason == "stopped by SIGINT"


@pytest.mark.parametrize(("s_info", "stopped_by", "message"), [
    ({"died": "killed by SIGKILL"}, None, "the sender was killed by SIGKILL before its first packet"),
    ({"interrupted": True, "signal": "SIGTERM"}, signal.SIGINT, "stopped by SIGINT before the first packet was sent"),
    ({"interrupted": True, "signal": "SIGHUP"}, None, "the sender was stopped by SIGHUP before its first packet"),
    ({}, None, "no packet was sent"),
])
def test_nothing_measured_is_not_stored(s_info: dict, stopped_by: int | None, message: str) -> None:
    """Zero packets sent and received: an error that says why, ending in 'nothing was stored'."""
    sender = None if s_info.get("died") else _sender(0)
    with pytest.raises(CaptureError, match=f"^{message}; nothing was stored$"):
        join(sender, s_info, _receiver(0, []), {"stop_reason": "no packets"}, 9, stopped_by)


def test_all_sends_failed_is_nothing_measured() -> None:
    s = _sender(5)
    s["flags"][:] = FLAG_SEND_FAILED
    with pytest.raises(CaptureError, match="all 5 sends failed"):
        join(s, {"send_failed": 5}, _receiver(5, []), {"stop_reason": "idle"}, 9)


def test_late_signal_note_only_for_complete_runs() -> None:
    assert late_signal(None, False) == ()
    assert late_signal(signal.SIGTERM, True) == ()
    assert "SIGTERM came while the run was being stored" in late_signal(signal.SIGTERM, False)[0]


def test_a_receiver_that_gave_up_is_the_reason_not_the_senders_sigterm() -> None:
    """Idle receiver: latscope then stopped the sender with SIGTERM; the reason is the receiver's."""
    r = _receiver(50, list(range(10)))
    info = {"stop_reason": "idle", "interrupted": True, "ended_ns": BASE + 9 * PERIOD + 5_000_000_000}
    _cols, _counts, end = join(_sender(50), {"interrupted": True, "signal": "SIGTERM"}, r, info, 9)
    assert end.interrupted and end.reason == "the receiver gave up (idle)"
