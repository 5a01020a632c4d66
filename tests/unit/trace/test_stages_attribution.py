"""Per-packet checkpoints and stages, collateral packets, culprits and their ranking."""

from __future__ import annotations

import numpy as np

from latscope.store.samples import MISSING
from latscope.trace import attribution as attr
from latscope.trace import model
from latscope.trace.breakdown import Options, analyse, load_run_table
from latscope.trace.parse_text import parse_kernel_text
from latscope.trace.stages import STAGES, locate, stage_durations
from tests.unit.trace.synth import IDLE0, RECEIVER, Trace, packet


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
