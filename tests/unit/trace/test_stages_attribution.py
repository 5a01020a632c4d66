"""Per-packet checkpoints and stages, collateral packets, culprits and their ranking."""

from __future__ import annotations

import numpy as np

from latscope.store.samples import MISSING, Samples
from latscope.trace import attribution as attr
from latscope.trace import model
from latscope.trace.breakdown import Options, analyse, load_run_table
from latscope.trace.parse_text import parse_kernel_text
from latscope.trace.report import to_json, to_text
from latscope.trace.stages import STAGES, locate, stage_durations
from latscope.trace.table import EventTable
from tests.unit.trace.synth import BASE_S, IDLE0, RECEIVER, SENDER, Trace, packet

TX_HOG, RX_HOG = ("txhog", 300), ("rxhog", 400)


def test_every_stage_is_found_on_the_real_trace(fixture_run) -> None:
    """Each packet of the captured window passes all checkpoints, and its stages add up to its e2e."""
    bd = analyse(load_run_table(fixture_run.path), fixture_run.samples(), Options())
    pk = bd.packets_detail
    traced = np.flatnonzero((pk.rows[:, 2] >= 0) & (pk.rows[:, 11] >= 0))
    assert len(traced) >= 10
    assert (pk.times[traced] != MISSING).all(), "a checkpoint is missing on a fully traced packet"
    d = pk.durations()[traced]
    e2e = (pk.times[traced, 12] - pk.times[traced, 0]).astype(float)
    assert np.allclose(d.sum(axis=1), e2e) and (d >= 0).all()


def test_late_packet_of_the_real_trace_names_the_busy_loop(fixture_run) -> None:
    """The late packet of the fixture waited in the runqueue while ls-interferer held CPU 1."""
    bd = analyse(load_run_table(fixture_run.path), fixture_run.samples(), Options(threshold_ns=300_000))
    assert bd.late and bd.culprits[0].name == "ls-interferer" and bd.culprits[0].cpus == (1,)
    p = bd.late[0]
    assert p.dominant_stage == "runqueue_wait"
    wait = next(s for s in p.stages if s.name == "runqueue_wait")
    hog = next(c for c in p.culprits if c.name == "ls-interferer")
    assert hog.ns >= 0.8 * wait.ns and hog.cpu == 1 and hog.kind == "task"
    assert any("mapped onto the run by its markers" in w for w in bd.warnings)


def test_collateral_packet_points_at_the_packet_that_woke_the_receiver() -> None:
    """A packet enqueued while the receiver was still runnable (no wakeup of its own) is collateral."""
    tr = Trace()
    tr.add(0, 1, *IDLE0, "local_timer_entry", "vector=236", "d.h1.")
    packet(tr, 0, 100, run_at=1600, skb="00000000000000a1")
    packet(tr, 1, 1100, wake_receiver=False, run_at=1600, skb="00000000000000a2")
    tr.add(1300, 1, "hog", 7, "local_timer_entry", "vector=236", "d.h..")
    tr.switch(1600, 1, ("hog", 7), RECEIVER)
    tl = model.build(parse_kernel_text(tr.text()))
    pk = locate(tl, np.array([0, 1]), {}, 100, 200)
    assert pk.collateral.tolist() == [False, True] and pk.cause.tolist() == [-1, 0]
    assert (pk.rows[1, 8:10] == -1).all() and pk.times[1, 10] != MISSING


def test_missing_checkpoints_fold_into_the_next_stage() -> None:
    """A checkpoint not seen adds its time to the following stage; the total stays the same."""
    times = np.array([[0, 10, 20, 30, MISSING, 50, 60, 70, 80, 90, 100, 110, 120]], dtype=np.int64)
    d = stage_durations(times)[0]
    assert d[STAGES.index("qdisc")] == 0 and d[STAGES.index("driver_xmit")] == 20 and d.sum() == 120
    assert np.isnan(stage_durations(np.array([[0] + [MISSING] * 12], dtype=np.int64))).all()


def test_silent_gap_is_a_culprit_when_nothing_ran() -> None:
    """A receiver wait on a CPU that shows no event at all for a long stretch is blamed on a silent gap."""
    tr = Trace()
    tr.add(0, 1, *IDLE0, "local_timer_entry", "vector=236", "d.h1.")
    tr.add(1, 1, *IDLE0, "local_timer_exit", "vector=236", "d.h1.")
    for seq in range(20):
        packet(tr, seq, 1000 * (seq + 1), skb=f"{seq + 1:016x}")
    packet(tr, 20, 30_000, run_at=30_900, skb="00000000000000ff")  # 900 us of nothing on CPU 1
    bd = analyse(parse_kernel_text(tr.text()), None, Options(threshold_ns=500_000))
    assert [p.seq for p in bd.late] == [20]
    late = bd.late[0]
    gaps = [c for c in late.culprits if c.kind == "gap"]
    # with no event at all, the switch out of idle is placed at the wakeup: the wait shows as the receive's
    assert late.dominant_stage in ("runqueue_wait", "recv_return")
    assert gaps and gaps[0].ns >= 800_000 and gaps[0].cpu == 1
    assert bd.culprits[0].kind == "gap"


def test_ranking_orders_by_total_then_count() -> None:
    """Culprits across late packets are ranked by total time; count is the number of packets delayed."""
    def late(seq: int, *culprits: tuple[str, int]) -> attr.LatePacket:
        return attr.LatePacket(seq, 1e6, 0, "runqueue_wait", 1e6, (),
                               tuple(attr.Culprit("task", n, 1, 1, ns, "runqueue_wait") for n, ns in culprits), None)

    ranked = attr.rank([late(1, ("a", 500), ("b", 100)), late(2, ("b", 450)), late(3, ("c", 10))])
    assert [(r.name, r.count, r.total_ns) for r in ranked] == [("b", 2, 550), ("a", 1, 500), ("c", 1, 10)]


def _two_delays() -> tuple[EventTable, Samples]:
    """Twenty packets on time and one (seq 20) held twice: 300 us between its send call and the device
    queue by a task that preempted the sender on CPU 0 (inside latency), then 800 us on the receiver's
    runqueue by a task holding CPU 1 (after the receive timestamp: outside latency, inside e2e)."""
    tr = Trace()
    tr.add(0, 1, *IDLE0, "local_timer_entry", "vector=236", "d.h1.")
    tr.add(1, 1, *IDLE0, "local_timer_exit", "vector=236", "d.h1.")
    sched, wake, send, rx_sw, rx_user = [], [], [], [], []
    for seq in range(21):
        t0, delay, run_at = 1000.0 * (seq + 1), 0.0, None
        if seq == 20:
            t0, delay = 30_000.0, 300.0
            tr.switch(t0 + 3, 0, SENDER, TX_HOG, state="R")
            tr.switch(t0 + 3 + delay - 1, 0, TX_HOG, SENDER, state="R")
            tr.switch(t0 - 50, 1, IDLE0, RX_HOG, state="R")
            run_at = t0 + delay + 900
            packet(tr, seq, t0, wake_receiver=False, run_at=run_at, skb="00000000000000ff", tx_delay=delay)
            tr.add(t0 + delay + 11, 0, *SENDER, "sched_waking", "comm=receiver pid=200 prio=120 target_cpu=001",
                   "d.s4.")
            tr.add(t0 + delay + 12, 1, *RX_HOG, "sched_wakeup", "comm=receiver pid=200 prio=120 target_cpu=001",
                   "dNh2.")
            tr.switch(run_at, 1, RX_HOG, RECEIVER, state="R")
            # the receiver moves while it waits (after the receive timestamp), the sender as it wakes (before
            # its send call): inside e2e, both outside latency
            tr.add(t0 + delay + 500, 1, *RX_HOG, "sched_migrate_task",
                   "comm=receiver pid=200 prio=120 orig_cpu=0 dest_cpu=1", "d..2.")
            tr.add(t0 - 3, 0, *IDLE0, "sched_migrate_task", "comm=sender pid=100 prio=120 orig_cpu=1 dest_cpu=0",
                   "d..2.")
        else:
            packet(tr, seq, t0, skb=f"{seq + 1:016x}")
        sched.append(_ns(t0 - 5))
        wake.append(_ns(t0 - 2))
        send.append(_ns(t0 + 1))
        rx_sw.append(_ns(t0 + delay + 6))  # netif_rx: where veth takes the receive timestamp
        rx_user.append(_ns((run_at if run_at is not None else t0 + 20) + 6))
    cols = {"seq": np.arange(21, dtype=np.int64), "sched_ns": np.array(sched), "wake_ns": np.array(wake),
            "send_ns": np.array(send), "rx_sw_ns": np.array(rx_sw), "rx_hw_ns": np.full(21, MISSING),
            "rx_user_ns": np.array(rx_user)}
    return parse_kernel_text(tr.text()).with_meta(to_realtime_ns=0), Samples(cols)


def _ns(t_us: float) -> int:
    return (BASE_S * 1_000_000 + round(t_us)) * 1000


def test_latency_metric_blames_only_the_stages_inside_it() -> None:
    """The same late packet judged on e2e and on latency: e2e names both planted tasks, the receiver's
    runqueue the dominant stage; latency names only the one that delayed the send side, in the TX stack,
    and marks the stages outside its span (sender wakeup, receiver side) as such, text and JSON alike."""
    table, samples = _two_delays()
    e2e = analyse(table, samples, Options(threshold_ns=500_000))
    lat = analyse(table, samples, Options(metric="latency", threshold_ns=200_000))
    assert [p.seq for p in e2e.late] == [p.seq for p in lat.late] == [20]
    pe, pl = e2e.late[0], lat.late[0]

    def names(p: attr.LatePacket, kind: str = "task") -> set[str]:
        return {c.name for c in p.culprits if c.kind == kind}

    assert pe.dominant_stage == "runqueue_wait" and {"txhog", "rxhog"} <= names(pe)
    assert all(s.in_metric for s in pe.stages)
    assert pl.dominant_stage == "tx_stack" and "txhog" in names(pl) and "rxhog" not in names(pl)
    assert names(pe, "migration") == {"receiver", "sender"} and names(pl, "migration") == set()
    inside = {s.name: s.in_metric for s in pl.stages}
    assert inside["tx_stack"] and inside["driver_xmit"]
    assert not inside["sender_wakeup"] and not inside["runqueue_wait"] and not inside["user_space"]
    # inside, each stage's time inside latency, which add up to it; outside, the whole stage as for e2e
    assert sum(s.ns for s in pl.stages if s.in_metric) == pl.value_ns == 305_000
    whole = {s.name: s.ns for s in pe.stages}
    assert all(s.ns == whole[s.name] for s in pl.stages if not s.in_metric) and len(pl.stages) == len(pe.stages)
    doc = to_json(lat)
    assert {s["name"]: s["in_metric"] for s in doc["late_packets"][0]["stages"]} == inside
    text = to_text(lat)
    line = next(x for x in text.splitlines() if "runqueue wait" in x and "median" in x)
    assert line.split("runqueue wait")[1].lstrip().startswith("-") and line.split("median")[1].strip() == "-"
    assert "outside latency: sender wakeup" in text and "Stage times inside latency" in text
