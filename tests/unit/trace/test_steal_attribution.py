"""Silent gaps split by the run's host steal series: planted steal -> hypervisor, none -> unexplained."""

from __future__ import annotations

import numpy as np

from latscope.env.steal import StealSeries
from latscope.trace.attribution import SILENT_NAME, STEAL_NAME, UNEXPLAINED_NAME
from latscope.trace.breakdown import Options, analyse
from latscope.trace.parse_text import parse_kernel_text
from tests.unit.trace.synth import BASE_S, IDLE0, Trace, packet

MS = 1_000_000
T0 = BASE_S * 1_000_000_000  # trace time 0 in ns (the synthetic traces' clock)


def gap_trace(hog: bool = False, irq: bool = False) -> Trace:
    """20 normal packets, then packet 20 whose receiver waits 900 us on a CPU 1 without a single event.

    ``hog``: a task "hog" (pid 7) is current on CPU 1 through the silence (two events at its start).
    ``irq``: 700 us of the silence lie inside a local timer interrupt (its entry at 30.1 ms, exit at 30.8).
    """
    tr = Trace()
    tr.add(0, 1, *IDLE0, "local_timer_entry", "vector=236", "d.h1.")
    tr.add(1, 1, *IDLE0, "local_timer_exit", "vector=236", "d.h1.")
    for seq in range(20):
        packet(tr, seq, 1000 * (seq + 1), skb=f"{seq + 1:016x}")
    packet(tr, 20, 30_000, run_at=30_900, skb="00000000000000ff")
    if hog:
        tr.switch(30_013, 1, IDLE0, ("hog", 7))
        tr.add(30_015, 1, "hog", 7, "local_timer_entry", "vector=236", "d.h..")
        tr.add(30_016, 1, "hog", 7, "local_timer_exit", "vector=236", "d.h..")
    if irq:
        tr.add(30_100, 1, *IDLE0, "local_timer_entry", "vector=236", "d.h1.")
        tr.add(30_800, 1, *IDLE0, "local_timer_exit", "vector=236", "d.h1.")
    return tr


def series(grow_cpu1_at_ms: float | None, span_ms: int = 80) -> StealSeries:
    """Samples every 10 ms from -20 ms; CPU 1's steal grows by one 10 ms tick at ``grow_cpu1_at_ms``;
    CPU 0's steal grows at every sample (steal elsewhere must not count)."""
    ts = T0 + np.arange(-20, span_ms, 10, dtype=np.int64) * MS
    cpu0 = np.arange(len(ts), dtype=np.int64) * 10 * MS
    cpu1 = np.zeros(len(ts), np.int64)
    if grow_cpu1_at_ms is not None:
        cpu1[ts >= T0 + int(grow_cpu1_at_ms * MS)] = 10 * MS
    return StealSeries(ts, (0, 1), np.stack([cpu0, cpu1], axis=1))


def late_culprits(tr: Trace, steal: StealSeries | None):
    bd = analyse(parse_kernel_text(tr.text()), None, Options(threshold_ns=500_000), steal=steal)
    assert [p.seq for p in bd.late] == [20]
    return bd, bd.late[0].culprits


def test_gap_with_steal_growth_on_its_cpu_is_the_hypervisor() -> None:
    """CPU 1's steal grew over the gap (accounted at the next tick, within 10 ms after it): hypervisor."""
    bd, culprits = late_culprits(gap_trace(), series(grow_cpu1_at_ms=35))
    steal = [c for c in culprits if c.name == STEAL_NAME]
    assert steal and steal[0].kind == "steal" and steal[0].cpu == 1 and steal[0].ns >= 800_000
    assert not [c for c in culprits if c.kind == "gap"]
    assert bd.culprits[0].name == STEAL_NAME and bd.trace["host_steal"]["covers_trace"]


def test_gap_without_steal_growth_is_unexplained() -> None:
    """Steal grew on CPU 0 all along and on CPU 1 only long before: the gap on CPU 1 is unexplained."""
    _bd, culprits = late_culprits(gap_trace(), series(grow_cpu1_at_ms=-5))
    gaps = [c for c in culprits if c.kind == "gap"]
    assert gaps and gaps[0].name == UNEXPLAINED_NAME and gaps[0].cpu == 1 and gaps[0].ns >= 800_000
    assert not [c for c in culprits if c.kind == "steal"]


def test_without_a_series_or_outside_it_the_gap_stays_silent() -> None:
    """No steal series (a trace brought in), or one that ends before the gap: neither claim is made."""
    for steal in (None, series(grow_cpu1_at_ms=35, span_ms=20)):
        _bd, culprits = late_culprits(gap_trace(), steal)
        gaps = [c for c in culprits if c.kind == "gap"]
        assert gaps and gaps[0].name == SILENT_NAME
        assert not [c for c in culprits if c.kind == "steal"]


def test_stall_while_another_task_was_current_stays_its_time_and_steal_is_noted() -> None:
    """A task current on CPU 1 through 880 us without an event keeps the time (a busy loop makes no events,
    and a task the host preempted still held the CPU after); steal growing meanwhile is noted on it."""
    _bd, plain = late_culprits(gap_trace(hog=True), series(grow_cpu1_at_ms=-5))
    hog = [c for c in plain if c.name == "hog"]
    assert hog and hog[0].ns >= 800_000 and not [c for c in plain if c.kind in ("steal", "gap")]
    assert "steal" not in hog[0].note
    _bd, stolen = late_culprits(gap_trace(hog=True), series(grow_cpu1_at_ms=35))
    hog_stolen = [c for c in stolen if c.name == "hog"]
    assert hog_stolen and hog_stolen[0].ns == hog[0].ns
    assert not [c for c in stolen if c.kind in ("steal", "gap")]
    assert "steal time on this CPU grew" in hog_stolen[0].note


def test_silence_inside_an_interrupt_is_counted_once() -> None:
    """700 us without an event between a timer interrupt's entry and exit, while the receiver waits.

    Steal grew over it: the hypervisor took the handler's CPU; those 700 us are steal, not also the timer's.
    No steal: the handler took them; they are the timer's, not also a gap. Either way the culprits' time
    in a stage adds up to no more than the stage lasted (it once named steal and the timer for the same time).
    """
    for grow in (35, -5):
        bd, culprits = late_culprits(gap_trace(irq=True), series(grow_cpu1_at_ms=grow))
        by_kind = {k: sum(c.ns for c in culprits if c.kind == k) for k in ("steal", "gap", "irq")}
        if grow == 35:   # all 890 us of silence are the hypervisor's; the timer kept none of it
            assert by_kind["steal"] >= 850_000 and by_kind["irq"] < 20_000 and by_kind["gap"] == 0, culprits
        else:            # the handler's 700 us are the timer's; the silence before and after it (190 us) a gap
            assert by_kind["irq"] == 700_000 and by_kind["steal"] == 0, culprits
            assert 150_000 <= by_kind["gap"] <= 200_000, culprits
        for st in bd.late[0].stages:
            held = sum(c.ns for c in culprits if c.stage == st.name)
            assert held <= st.ns, (st, culprits)
