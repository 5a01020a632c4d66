"""Joining the halves: rows per packet, loss, failed sends, and a receiver-only run."""

from __future__ import annotations

import numpy as np

from latscope.probe.merge import merge
from latscope.store.samples import FLAG_LOST, FLAG_REORDERED, FLAG_SEND_FAILED, MISSING

M = MISSING


def _sender(n: int) -> dict[str, np.ndarray]:
    sched = np.arange(n, dtype=np.int64) * 1000 + 10**9
    return {"sched": sched, "wake": sched + 5, "send": sched + 6, "tx_sw": sched + 9,
            "tx_hw": np.full(n, M, np.int64), "flags": np.zeros(n, np.int32)}


def test_lost_and_failed_are_distinct() -> None:
    """A packet whose send failed is not lost; a sent packet that never arrived is."""
    s = _sender(4)
    s["flags"][3] = FLAG_SEND_FAILED
    rx = np.array([10**9 + 20, M, 10**9 + 2020, M], dtype=np.int64)
    r = {"rx_sw": rx, "rx_hw": np.full(4, M, np.int64), "rx_user": np.where(rx == M, M, rx + 1),
         "flags": np.array([0, 0, FLAG_REORDERED, 0], np.int32)}
    cols, counts = merge(s, r, {"duplicated": 2, "reordered": 1, "foreign": {"magic": 3}}, 5)
    assert list(cols["flags"]) == [0, FLAG_LOST, FLAG_REORDERED, FLAG_SEND_FAILED]
    assert counts["sent"] == 3 and counts["received"] == 2 and counts["lost"] == 1
    assert counts["send_failed"] == 1 and counts["foreign"] == 3 and counts["duplicated"] == 2
    assert list(cols["seq"]) == [0, 1, 2, 3]


def test_receiver_only_uses_reported_count_and_rebuilds_schedule() -> None:
    """Without the sender's columns, the end packet's count sets the rows; lost packets keep sched."""
    n = 5
    r = {k: np.full(8, M, np.int64) for k in ("sched", "wake", "send", "tx", "tx_is_hw", "rx_sw", "rx_hw",
                                              "rx_user")}
    r["flags"] = np.zeros(8, np.int32)
    for i in (0, 1, 3):
        r["sched"][i] = 100 + i * 10
        r["rx_sw"][i] = 150 + i * 10
        r["rx_user"][i] = 160 + i * 10
    r["tx"][0], r["tx_is_hw"][0] = 120, 0
    r["tx"][1], r["tx_is_hw"][1] = 131, 1
    cols, counts = merge(None, r, {"sent_reported": n}, 1, base_time_ns=100, period_ns=10)
    assert len(cols["seq"]) == n
    assert list(cols["sched_ns"]) == [100, 110, 120, 130, 140]
    assert counts["lost"] == 2 and counts["received"] == 3
    assert cols["tx_sw_ns"][0] == 120 and cols["tx_hw_ns"][0] == M
    assert cols["tx_hw_ns"][1] == 131 and cols["tx_sw_ns"][1] == M


def test_receiver_only_without_end_packet_stops_at_highest_seq() -> None:
    """If the end packet never came, rows go up to the highest seq received."""
    r = {k: np.full(6, M, np.int64) for k in ("sched", "wake", "send", "tx", "tx_is_hw", "rx_sw", "rx_hw",
                                              "rx_user")}
    r["flags"] = np.zeros(6, np.int32)
    r["rx_user"][[0, 2]] = 5
    r["rx_sw"][[0, 2]] = 4
    cols, counts = merge(None, r, {}, 1)
    assert len(cols["seq"]) == 3 and counts["lost"] == 1


def _receiver(n: int, received: tuple[int, ...]) -> dict[str, np.ndarray]:
    r = {k: np.full(n, M, np.int64) for k in ("sched", "wake", "send", "tx", "tx_is_hw", "rx_sw", "rx_hw",
                                              "rx_user")}
    r["flags"] = np.zeros(n, np.int32)
    for i in received:
        r["rx_sw"][i], r["rx_user"][i], r["sched"][i] = 100 + i, 110 + i, 50 + i
    return r


def test_a_reported_count_never_sizes_the_arrays_on_its_own() -> None:
    """sent_reported of 10**10 or 2**64-1 (a forged end packet) is bounded by the receiver's memory."""
    r = _receiver(4, (0, 1))
    cols, counts = merge(None, r, {"sent_reported": 10**10, "memory_slots": 6}, 1)
    assert len(cols["seq"]) == 6 and counts["lost"] == 4 and counts["refused"] == 10**10 - 6
    # Beyond int64 it is no count at all: rows end at the highest seq received.
    cols, counts = merge(None, r, {"sent_reported": 2**64 - 1, "memory_slots": 6}, 1)
    assert len(cols["seq"]) == 2 and counts["lost"] == 0 and counts["refused"] == 0
    cols, counts = merge(None, r, {"sent_reported": 10**10}, 1)
    assert len(cols["seq"]) == 4 and counts["refused"] == 10**10 - 4


def test_bad_numbers_from_the_hello_are_ignored() -> None:
    """A base time or period of the wrong type or out of range does not fill the schedule (and does not crash)."""
    r = _receiver(3, (0,))
    for base, period in (("x", 10), (100, "y"), (2**63, 10), (100, 2**60), (True, 1), (-5, 10)):
        cols, _ = merge(None, r, {"sent_reported": 3}, 1, base_time_ns=base, period_ns=period)
        assert list(cols["sched_ns"]) == [50, M, M]
    for bad in ("3", -1, None, 3.5):
        cols, _ = merge(None, r, {"sent_reported": bad}, 1)
        assert len(cols["seq"]) == 1


def test_packets_the_receiver_refused_are_neither_received_nor_lost() -> None:
    """When the receiver ran out of memory (refused > 0), rows end at its capacity and the rest is refused."""
    s = _sender(6)
    r = _receiver(4, (0, 1, 2, 3))
    cols, counts = merge(s, r, {"refused": 2, "capacity": 4}, 1)
    assert len(cols["seq"]) == 4 and counts["refused"] == 2 and counts["lost"] == 0
    cols, counts = merge(s, r, {"capacity": 4}, 1)
    assert len(cols["seq"]) == 6 and counts["lost"] == 2 and counts["refused"] == 0


def test_times_from_the_wire_outside_1970_to_2116_are_dropped_and_counted() -> None:
    """A send time of -2**63+1 or 2**63-1 in a packet would overflow latency: it becomes null and is counted."""
    r = _receiver(3, (0, 1, 2))
    r["send"][:] = [10**18, -(2**63) + 1, 2**63 - 1]
    r["tx"][2] = -5
    cols, counts = merge(None, r, {"sent_reported": 3}, 1)
    assert list(cols["send_ns"]) == [10**18, M, M] and cols["tx_sw_ns"][2] == M
    assert counts["implausible_timestamps"] == 3
