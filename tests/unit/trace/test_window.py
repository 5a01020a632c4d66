"""Reading a run's trace by windows (latscope.trace.window) and the per-CPU indexes of the timeline.

A synthetic two-second trace with a packet every 50 ms (so the late packets' windows are apart) and a
background task that ticks on the sender's CPU throughout (so window edges cut its runs): the
breakdown read by windows must be the whole table's, field for field, in cases chosen to break a
careless window: a culprit whose run began 30 ms before its packet's window, late packets at the very
start and end of the trace, window edges inside a task's run and between an interrupt's entry and exit.
The indexes are checked against the straightforward scans they replaced.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from latscope.store.samples import MISSING, Samples
from latscope.trace import model, window
from latscope.trace.breakdown import Options, _analyse_windows, analyse, analyse_run
from latscope.trace.parse_text import parse_kernel_text
from latscope.trace.report import to_json
from latscope.trace.table import EventTable, read_table, write_table
from tests.unit.trace.synth import BASE_S, RECEIVER, SENDER, Trace, packet

PERIOD_US = 50_000
N = 40
HOG = ("hog", 7)
BG = ("bg", 11)
WORKER = ("worker", 13)
LATE = {0: 700, 10: None, 20: 900, 39: 600}   # seq -> when the receiver ran (us after t0); 10: late sender


def t0_of(seq: int) -> int:
    return 1000 + PERIOD_US * seq


def ns(us: float) -> int:
    return BASE_S * 1_000_000_000 + round(us * 1000)


def synthetic() -> tuple[EventTable, Samples]:
    tr = Trace()
    # the background task on CPU 0: a timer tick every 7 ms for the whole trace
    for k in range(int(t0_of(N) / 7000) + 1):
        t = 300 + 7000 * k
        tr.add(t, 0, *BG, "local_timer_entry", "vector=236", "d.h..")
        tr.add(t + 4, 0, *BG, "local_timer_exit", "vector=236", "d.h..")
    sched, wake, rx_user = [], [], []
    for seq in range(N):
        t0 = t0_of(seq)
        skb = f"{seq + 1:016x}"
        if seq == 20:
            # the hog took CPU 1 30 ms before the packet (before its window; the switch was not recorded,
            # only its timer tick shows it) and makes no other event until it yields to the receiver
            # 900 us after the packet
            tr.add(t0 - 30_000, 1, *HOG, "local_timer_entry", "vector=236", "d.h..")
            tr.add(t0 - 29_990, 1, *HOG, "local_timer_exit", "vector=236", "d.h..")
            packet(tr, seq, t0, wake_receiver=False, run_at=t0 + 900, skb=skb)
            tr.add(t0 + 11, 0, *SENDER, "sched_waking", "comm=receiver pid=200 prio=120 target_cpu=001", "d.s4.")
            # the wakeup IPI reached CPU 1 late: until then the hog's run from before the window is the
            # only thing that says who held CPU 1
            tr.add(t0 + 400, 1, *HOG, "sched_wakeup", "comm=receiver pid=200 prio=120 target_cpu=001", "dNh2.")
            tr.switch(t0 + 900, 1, HOG, RECEIVER, state="R")
            run_at = t0 + 900
        elif seq % 2 and seq not in LATE:
            # a SCHED_OTHER worker put on CPU 1 by a recorded switch 3 ms earlier; the receiver (FIFO) is
            # woken there and preempts it, its switch not recorded: it ran from the worker's last event
            # after the wakeup, as judged by the priority of that recorded switch (model._preempted_at)
            run_at = t0 + 20
            tr.switch(t0 - 3000, 1, ("swapper/1", 0), WORKER, prio=120)
            tr.add(t0 - 2000, 1, *WORKER, "local_timer_entry", "vector=236", "d.h..")
            tr.add(t0 - 1990, 1, *WORKER, "local_timer_exit", "vector=236", "d.h..")
            packet(tr, seq, t0, wake_receiver=False, run_at=run_at, skb=skb)
            tr.add(t0 + 11, 0, *SENDER, "sched_waking", "comm=receiver pid=200 prio=49 target_cpu=001", "d.s4.")
            tr.add(t0 + 12, 1, *WORKER, "sched_wakeup", "comm=receiver pid=200 prio=49 target_cpu=001", "dNh2.")
            tr.add(t0 + 14, 1, *WORKER, "local_timer_exit", "vector=236", "dNh..")
            tr.switch(run_at + 9, 1, RECEIVER, ("swapper/1", 0), prio=49)
        else:
            run_at = t0 + (LATE[seq] if LATE.get(seq) else 20)
            packet(tr, seq, t0, run_at=run_at, skb=skb)
            # the wakeup IPI on the idle receiver CPU: the receiver's unrecorded switch-in is placed at
            # its exit, the event before the receiver's first one
            tr.add(t0 + 11, 1, "<idle>", 0, "call_function_single_entry", "vector=251", "d.h1.")
            tr.add(t0 + 13, 1, "<idle>", 0, "call_function_single_exit", "vector=251", "dNh1.")
        # seq 10: the sender was scheduled 600 us before it woke (the bg task held CPU 0)
        sched.append(ns(t0 - (600 if seq == 10 else 5)))
        wake.append(ns(t0 - 2))
        rx_user.append(ns(run_at + 6))
    table = parse_kernel_text(tr.text()).with_meta(to_realtime_ns=0)
    cols = {"seq": np.arange(N, dtype=np.int64), "sched_ns": np.array(sched), "wake_ns": np.array(wake),
            "rx_user_ns": np.array(rx_user), "send_ns": np.array(wake) + 5_000}
    return table, Samples(cols)


def stored(tmp_path: Path, table: EventTable, group_rows: int = 64) -> Path:
    """A run directory holding ``table`` as trace/events.parquet, in row groups of ``group_rows``."""
    run = tmp_path / "run"
    (run / "trace").mkdir(parents=True)
    path = run / "trace" / "events.parquet"
    write_table(table, path)
    whole = pq.read_table(path)
    pq.write_table(whole, path, compression="zstd", row_group_size=group_rows)
    return run


OPTS = Options(threshold_ns=200_000)


def doc(bd: object) -> str:
    """The --json document as text (a stage without an end is NaN, which no dict compares equal to)."""
    return json.dumps(to_json(bd))  # type: ignore[arg-type]


def test_windowed_breakdown_is_the_whole_tables(tmp_path: Path) -> None:
    table, samples = synthetic()
    run = stored(tmp_path, table)
    whole = analyse(table, samples, OPTS, run_id="r")
    bd = analyse_run(run, None, samples, OPTS, run_id="r")
    sub = bd.timeline.table.meta["subset"] if bd.timeline is not None else {}
    assert sub and sub["events"] == len(table) and sub["rows_read"] < 0.8 * len(table), sub
    assert doc(bd) == doc(whole)
    # and the whole table's answer is the planted one
    assert sorted(p.seq for p in whole.late) == sorted(LATE)
    p20 = next(p for p in whole.late if p.seq == 20)
    hog = [c for c in p20.culprits if c.pid == HOG[1]]
    assert hog and hog[0].cpu == 1 and hog[0].ns >= 850_000, p20.culprits
    p10 = next(p for p in whole.late if p.seq == 10)
    assert p10.dominant_stage == "sender_wakeup" and any(c.pid == BG[1] for c in p10.culprits), p10.culprits


def test_whole_trace_option_reads_everything(tmp_path: Path) -> None:
    table, samples = synthetic()
    bd = analyse_run(stored(tmp_path, table), None, samples, OPTS, run_id="r", whole=True)
    assert bd.timeline is not None and "subset" not in bd.timeline.table.meta
    assert doc(bd) == doc(analyse(table, samples, OPTS, run_id="r"))


def test_checkpoints_outside_the_probes_window_fall_back_to_the_whole_table(tmp_path: Path) -> None:
    """Probe times 15 ms off the trace (a wrong clock offset): the windows miss the checkpoints' margin."""
    table, samples = synthetic()
    shifted = Samples({k: (v - 15_000_000 if k != "seq" else v) for k, v in samples.columns.items()})
    run = stored(tmp_path, table)
    assert _analyse_windows(run / "trace" / "events.parquet", shifted, OPTS, run_id="r", overruns=None,
                            steal=None) is None
    assert doc(analyse_run(run, None, shifted, OPTS, run_id="r")) == doc(analyse(table, shifted, OPTS, run_id="r"))


def test_a_table_without_clock_offset_is_read_whole(tmp_path: Path) -> None:
    table, samples = synthetic()
    meta = {k: v for k, v in table.meta.items() if k != "to_realtime_ns"}
    run = stored(tmp_path, EventTable(**{**table.__dict__, "meta": meta}))
    assert _analyse_windows(run / "trace" / "events.parquet", samples, OPTS, run_id="r", overruns=None,
                            steal=None) is None


def test_scan_matches_a_whole_read(tmp_path: Path) -> None:
    table, _samples = synthetic()
    path = stored(tmp_path, table, group_rows=50) / "trace" / "events.parquet"
    sc = window.scan(path)
    t = read_table(path)
    assert len(sc) == len(t) and (sc.ts == t.ts).all() and (sc.cpu == t.cpu).all()
    assert sc.event_names == t.event_names and (sc.event == t.event).all()
    assert sc.counts() == t.counts()
    assert sc.marker_pids() == (SENDER[1], RECEIVER[1])
    rows = np.flatnonzero(sc.window_rows(np.array([ns(t0_of(20)) - 100_000]), np.array([ns(t0_of(20)) + 50_000])))
    part = read_table(path, rows)
    for col in ("ts", "cpu", "pid", "nums"):
        assert (getattr(part, col) == getattr(t, col)[rows]).all()
    assert [part.string(int(x)) for x in part.comm] == [t.string(int(x)) for x in t.comm[rows]]
    # the CPU's row before the window and after it are in, the rest of the trace is not
    on1 = np.flatnonzero(t.cpu == 1)
    first_in = int(np.searchsorted(t.ts, ns(t0_of(20)) - 100_000))
    before = on1[on1 < first_in][-1]
    assert before in rows and t.ts[before] == ns(t0_of(20) - 29_990)   # the hog's last event before
    # earlier than that only the last recorded switch of each CPU (the priority an unrecorded one is judged by)
    earlier = rows[rows < before]
    assert len(earlier) <= 2 and (t.event[earlier] == t.code("sched_switch")).all(), earlier
    switches1 = on1[(t.event[on1] == t.code("sched_switch")) & (on1 < first_in)]
    assert switches1[-1] in rows
    assert len(rows) < 0.1 * len(t)


def test_window_rows_at_the_ends_of_the_trace(tmp_path: Path) -> None:
    table, _samples = synthetic()
    sc = window.scan(stored(tmp_path, table) / "trace" / "events.parquet")
    keep = sc.window_rows(np.array([table.ts[0] - 10**9, table.ts[-1] - 1000]),
                          np.array([table.ts[0] + 1000, table.ts[-1] + 10**9]))
    assert keep[0] and keep[-1]
    assert not sc.window_rows(np.zeros(0, np.int64), np.zeros(0, np.int64)).any()


def test_covers_needs_the_margin_on_both_sides() -> None:
    lo, hi = np.array([0]), np.array([100_000_000])
    inside = np.array([[window.MIN_MARGIN_NS, 50_000_000, MISSING, 100_000_000 - window.MIN_MARGIN_NS]])
    assert window.covers(lo, hi, inside)
    assert not window.covers(lo, hi, inside - 1)
    assert not window.covers(lo, hi, np.where(inside == MISSING, MISSING, inside + 1))
    assert window.covers(lo, hi, np.full((1, 4), MISSING))


# -- the indexes against the scans they replaced ------------------------------------------------------

def _first_segment_after_scan(segs: model.Segments, pid: int, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sel = np.flatnonzero(segs.pid == pid)
    if len(sel) == 0:
        return np.full(len(ts), model.NONE, np.int64), np.full(len(ts), -1, np.int64)
    o = sel[np.argsort(segs.start[sel], kind="stable")]
    st = segs.start[o]
    k = np.searchsorted(st, ts, side="left")
    ok = k < len(st)
    kk = np.minimum(k, len(st) - 1)
    return np.where(ok, st[kk], model.NONE), np.where(ok, segs.cpu[o][kk].astype(np.int64), -1)


def _silent_gaps_scan(tl: model.Timeline, cpu: int, a: int, b: int, min_ns: int) -> list[tuple[int, int]]:
    ts = tl.table.ts[tl.cpu_rows[cpu]]
    inside = [int(x) for x in ts if a < x < b]
    return [(s, e) for s, e in itertools.pairwise([a, *inside, b]) if e - s >= min_ns]


@pytest.fixture(scope="module")
def timeline() -> model.Timeline:
    return model.build(synthetic()[0])


def test_first_segment_after_is_the_scans(timeline: model.Timeline) -> None:
    segs = timeline.segments
    probe = np.concatenate([segs.start, segs.start + 1, segs.start - 1, [0, 2**62]])
    for pid in [*np.unique(segs.pid).tolist(), 12345]:
        got = model.first_segment_after(segs, pid, probe)
        want = _first_segment_after_scan(segs, pid, probe)
        assert (got[0] == want[0]).all() and (got[1] == want[1]).all(), pid
    # one pid per query
    pids = np.resize(np.unique(segs.pid), len(probe))
    got = model.first_segment_after(segs, pids, probe)
    for i in range(0, len(probe), 7):
        w = _first_segment_after_scan(segs, int(pids[i]), probe[i:i + 1])
        assert got[0][i] == w[0][0] and got[1][i] == w[1][0]


def test_silent_gaps_are_the_scans(timeline: model.Timeline) -> None:
    ts = timeline.table.ts
    rng = np.random.default_rng(1)
    for _ in range(300):
        a = int(rng.integers(int(ts[0]) - 10**6, int(ts[-1])))
        b = a + int(rng.integers(1, 60_000_000))
        for cpu in (0, 1):
            # edges on events too
            for lo, hi in ((a, b), (int(ts[rng.integers(len(ts))]), int(ts[rng.integers(len(ts))]))):
                assert model.silent_gaps(timeline, cpu, lo, hi, 20_000) == _silent_gaps_scan(timeline, cpu, lo, hi,
                                                                                          20_000)


def test_rows_on_and_migration_times(timeline: model.Timeline) -> None:
    t = timeline.table
    for cpu in (0, 1, 5):
        want = np.flatnonzero((t.event == t.code("local_timer_entry")) & (t.cpu == cpu))
        assert (timeline.rows_on("local_timer_entry", cpu) == want).all()
    assert len(timeline.rows_on("no_such_event", 0)) == 0
    assert (timeline.migration_ts() == t.ts[timeline.migrations]).all()


def _window_shares_scan(tl: model.Timeline, cpu: int, a: int, b: int) -> list[model.Share]:
    """window_shares as it was: one Python step per interval and segment."""
    def union(ivals: list[tuple[int, int]]) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        for s, e in sorted(ivals):
            if out and s <= out[-1][1]:
                out[-1] = (out[-1][0], max(out[-1][1], e))
            else:
                out.append((s, e))
        return out

    def within(ivals: list[tuple[int, int]], s: int, e: int) -> int:
        return sum(max(0, min(e, y) - max(s, x)) for x, y in ivals)

    irq_total: dict[tuple[int, int], int] = {}
    hard: list[tuple[int, int]] = []
    soft: list[tuple[int, int, int]] = []
    sl = tl.irqs.on(cpu)
    for i in range(sl.start, sl.stop):
        st, en = int(tl.irqs.start[i]), int(tl.irqs.end[i])
        if st < a - 10_000_000 or st >= b:
            continue
        s, e = max(st, a), min(en, b)
        if e <= s:
            continue
        name = int(tl.irqs.name[i])
        if tl.irqs.kind[i] == model.HARD:
            hard.append((s, e))
            irq_total[(model.HARD, name)] = irq_total.get((model.HARD, name), 0) + e - s
        else:
            soft.append((s, e, name))
    hard_u = union(hard)
    for s, e, name in soft:
        irq_total[(model.SOFT, name)] = irq_total.get((model.SOFT, name), 0) + (e - s) - within(hard_u, s, e)
    busy = union(hard + [(s, e) for s, e, _ in soft])
    out: dict[tuple[str, str, int], int] = {}
    seg = tl.segments.on(cpu)
    for j in range(seg.start, seg.stop):
        s, e = max(int(tl.segments.start[j]), a), min(int(tl.segments.end[j]), b)
        if e <= s:
            continue
        net = (e - s) - within(busy, s, e)
        if net <= 0:
            continue
        pid = int(tl.segments.pid[j])
        key = ("idle", "idle", 0) if pid == 0 else ("task", tl.comm_of(int(tl.segments.comm[j])), pid)
        out[key] = out.get(key, 0) + net
    shares = [model.Share(k, n, p, cpu, ns) for (k, n, p), ns in out.items()]
    shares += [model.Share("irq" if k == model.HARD else "softirq", tl.comm_of(n), -1, cpu, ns)
               for (k, n), ns in irq_total.items() if ns > 0]
    return sorted(shares, key=lambda x: -x.ns)


def test_window_shares_are_the_scans(timeline: model.Timeline) -> None:
    ts = timeline.table.ts
    rng = np.random.default_rng(2)
    windows = [(int(ts[0]) - 5_000_000, int(ts[-1]) + 5_000_000)]
    for _ in range(150):
        a = int(ts[rng.integers(len(ts))]) + int(rng.integers(-3000, 3000))
        windows.append((a, a + int(rng.integers(1, 3_000_000))))
    for seq in LATE:  # the late packets' own windows
        windows.append((ns(t0_of(seq) - 700), ns(t0_of(seq) + 1000)))
    for a, b in windows:
        for cpu in (0, 1):
            assert model.window_shares(timeline, cpu, a, b) == _window_shares_scan(timeline, cpu, a, b), (cpu, a, b)


def test_window_shares_and_gaps_on_a_real_capture_are_the_scans(text_bytes: bytes) -> None:
    """The captured veth run: softirqs with hard interrupts inside, unrecorded switches, idle."""
    tl = model.build(parse_kernel_text(text_bytes))
    ts = tl.table.ts
    assert (tl.irqs.kind == model.SOFT).any() and (tl.irqs.kind == model.HARD).any()
    rng = np.random.default_rng(3)
    for _ in range(200):
        a = int(ts[rng.integers(len(ts))]) + int(rng.integers(-2000, 2000))
        b = a + int(rng.integers(1, 2_000_000))
        for cpu in range(tl.ncpu):
            assert model.window_shares(tl, cpu, a, b) == _window_shares_scan(tl, cpu, a, b), (cpu, a, b)
            assert model.silent_gaps(tl, cpu, a, b, 5_000) == _silent_gaps_scan(tl, cpu, a, b, 5_000)
