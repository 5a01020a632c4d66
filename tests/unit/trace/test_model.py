"""The per-CPU timeline: running tasks (recorded and inferred switches), nested interrupts, wakeups."""

from __future__ import annotations

import numpy as np

from latscope.trace import model
from latscope.trace.parse_text import parse_kernel_text
from tests.unit.trace.synth import IDLE0, RECEIVER, Trace

US = 1000


def ts(us: float) -> int:
    from tests.unit.trace.synth import BASE_S

    return BASE_S * 1_000_000_000 + int(us * US)


def woken_out_of_idle() -> model.Timeline:
    """CPU 1 idle, a wakeup of the receiver (pid 200), its events with no switch in, then its switch out."""
    tr = Trace()
    tr.add(100, 1, *IDLE0, "call_function_single_entry", "vector=251", "d.h1.")
    tr.add(103, 1, *IDLE0, "sched_wakeup", "comm=receiver pid=200 prio=120 target_cpu=001", "dNh2.")
    tr.add(104, 1, *IDLE0, "call_function_single_exit", "vector=251", "dNh1.")
    tr.add(130, 1, *RECEIVER, "sys_exit_recvmsg", "0x40", ".....")
    tr.switch(150, 1, RECEIVER, ("swapper/1", 0))
    return model.build(parse_kernel_text(tr.text()))


def test_switch_out_of_idle_that_was_not_recorded_is_inferred() -> None:
    """Idle, a wakeup, then the woken task's events with no switch: it runs from the last idle event."""
    tl = woken_out_of_idle()
    assert model.running_at(tl, 1, ts(102)) == 0
    assert model.running_at(tl, 1, ts(110)) == 200 and model.running_at(tl, 1, ts(149)) == 200
    assert model.running_at(tl, 1, ts(151)) == 0
    start, cpu = model.first_segment_after(tl.segments, 200, np.array([ts(103)]))
    assert start[0] == ts(104) and cpu[0] == 1


def test_task_to_task_without_switch_keeps_the_old_task_until_the_new_ones_first_event() -> None:
    """Between two tasks a missing switch is placed at the new task's first event."""
    tr = Trace()
    tr.add(100, 0, "hog", 7, "local_timer_entry", "vector=236", "d.h..")
    tr.add(110, 0, "hog", 7, "local_timer_exit", "vector=236", "d.h..")
    tr.add(900, 0, "sender", 100, "print", "hello", "...1.")
    tl = model.build(parse_kernel_text(tr.text()))
    assert model.running_at(tl, 0, ts(500)) == 7 and model.running_at(tl, 0, ts(901)) == 100


def test_missing_switch_to_a_higher_priority_wakeup_is_placed_at_the_preemption() -> None:
    """A FIFO task woken by the tick inside a lower-priority task, its switch not recorded: it ran from the irq exit.

    The shape of a real capture on this VM: the old task's switches out are never recorded, so the
    FIFO loop's first event is its own switch out a millisecond later. Blaming that millisecond on the
    old task named the wrong culprit for every packet the loop delayed.
    """
    tr = Trace()
    tr.switch(0, 1, RECEIVER, ("tokio", 75), prio=110)
    tr.add(100, 1, "tokio", 75, "local_timer_entry", "vector=236", "dNh1.")
    tr.add(101, 1, "tokio", 75, "sched_wakeup", "comm=hog pid=7 prio=49 target_cpu=001", "dNh4.")
    tr.add(110, 1, "tokio", 75, "local_timer_exit", "vector=236", "dNh1.")
    tr.switch(1100, 1, ("hog", 7), RECEIVER, prio=49)
    tl = model.build(parse_kernel_text(tr.text()))
    assert model.running_at(tl, 1, ts(50)) == 75
    assert model.running_at(tl, 1, ts(111)) == 7 and model.running_at(tl, 1, ts(1099)) == 7
    shares = {s.pid: s.ns for s in model.window_shares(tl, 1, ts(110), ts(1100))}
    assert shares == {7: 990 * US}


def test_missing_switch_to_a_lower_priority_task_stays_at_its_first_event() -> None:
    """The same shape with a woken task of lower priority than the running one: it cannot have preempted it."""
    tr = Trace()
    tr.switch(0, 1, RECEIVER, ("fifo", 75), prio=49)
    tr.add(100, 1, "fifo", 75, "local_timer_entry", "vector=236", "dNh1.")
    tr.add(101, 1, "fifo", 75, "sched_wakeup", "comm=other pid=7 prio=120 target_cpu=001", "dNh4.")
    tr.add(110, 1, "fifo", 75, "local_timer_exit", "vector=236", "dNh1.")
    tr.switch(1100, 1, ("other", 7), RECEIVER, prio=120)
    tl = model.build(parse_kernel_text(tr.text()))
    assert model.running_at(tl, 1, ts(1099)) == 75 and model.running_at(tl, 1, ts(1101)) == 200


def test_shares_count_nested_interrupts_once() -> None:
    """A timer interrupt inside a softirq inside a task: each gets only its own time in a window."""
    tr = Trace()
    tr.switch(0, 0, ("swapper/0", 0), ("worker", 9))
    tr.add(10, 0, "worker", 9, "softirq_entry", "vec=3 [action=NET_RX]", "..s1.")
    tr.add(15, 0, "worker", 9, "local_timer_entry", "vector=236", "d.h1.")
    tr.add(20, 0, "worker", 9, "local_timer_exit", "vector=236", "d.h1.")
    tr.add(30, 0, "worker", 9, "softirq_exit", "vec=3 [action=NET_RX]", "..s1.")
    tr.switch(100, 0, ("worker", 9), ("swapper/0", 0))
    tl = model.build(parse_kernel_text(tr.text()))
    shares = {(s.kind, s.name): s.ns for s in model.window_shares(tl, 0, ts(0), ts(100))}
    assert shares[("task", "worker")] == 80 * US
    assert shares[("softirq", "softirq NET_RX")] == 15 * US
    assert shares[("irq", "local timer")] == 5 * US
    assert sum(shares.values()) == 100 * US


def test_silent_gaps_are_found() -> None:
    """A stretch without any event on a CPU longer than the minimum is reported."""
    tr = Trace()
    tr.add(0, 1, *IDLE0, "local_timer_entry", "vector=236", "d.h1.")
    tr.add(5, 1, *IDLE0, "local_timer_exit", "vector=236", "d.h1.")
    tr.add(700, 1, *IDLE0, "local_timer_entry", "vector=236", "d.h1.")
    tl = model.build(parse_kernel_text(tr.text()))
    assert model.silent_gaps(tl, 1, ts(0), ts(750), 100 * US) == [(ts(5), ts(700))]


def test_real_trace_receiver_runs_where_its_events_are(text_bytes: bytes, raw_bytes: bytes) -> None:
    """On the captured trace (no switch out of idle recorded on CPU 1) the receiver is current at its events."""
    t = parse_kernel_text(text_bytes, raw_bytes)
    tl = model.build(t)
    rcv = t.rows("sys_exit_recvmsg")
    rcv = rcv[t.cpu[rcv] == 1]
    assert len(rcv) > 5
    assert all(model.running_at(tl, 1, int(t.ts[r])) == int(t.pid[r]) for r in rcv)
    wk = tl.wakeups
    receiver = int(t.pid[rcv[0]])
    mine = wk.pid == receiver
    assert mine.any() and (wk.ran[mine] >= wk.ts[mine]).all()
    # the busy loop kept the receiver waiting at least once, the idle CPU ran it at once otherwise
    assert wk.at_once[mine].any() and not wk.at_once[mine].all()
