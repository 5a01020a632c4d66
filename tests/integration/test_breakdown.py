"""`latscope run --trace` and `latscope breakdown` end to end as root, with real interference.

The load generators are small Python loops started here, bounded in time,
pinned to the receiver's CPU and killed by pid in a finally block. The tests
check names and structure against ground truth the load generators record
themselves (when they held the CPU), never absolute latencies or a ranking
that the host's own stalls could upset.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from latscope.store.layout import ResultsStore
from latscope.store.samples import MISSING
from latscope.trace import tracefs
from latscope.trace.breakdown import load_run_table
from latscope.trace.table import EventTable
from tests.conftest import BIN
from tests.integration.runwatch import wait_for_packets

pytestmark = [pytest.mark.root, pytest.mark.tracefs, pytest.mark.slow,
              pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two CPUs (sender and receiver apart)")]

RECV_CPU = 1
SEND_CPU = 0
HOG_COMM = "ls-interferer"
#: How far outside its recorded busy interval the hog may still hold the CPU: the sleep call's entry and
#: return, which its own clock readings cannot bracket.
HOG_EDGE_NS = 200_000
#: A packet the hog kept from the receiver for at least this long must be attributed to it.
HOG_HELD_NS = 100_000
#: The note on a task's share when part of it was silent while the host's steal grew (trace/attribution.py).
STOLEN_NOTE = re.compile(r"(\d+) us of it without any event while the host's steal")

# A SCHED_FIFO busy loop: every PERIOD ms it spins for BUSY ms, for at most SECONDS or until SIGTERM.
# It records, in CLOCK_REALTIME (the clock the trace is mapped onto), every stretch in which it may hold
# the CPU: from its sleep timer's expiry to its next sleep call. The last stretch (exit, writing the file)
# has no end: "until it exits". "ready" comes once it runs FIFO on its CPU.
# Shared by the load generators: sleep until monotonic time ``t`` and return, in CLOCK_REALTIME, when the
# task may have held its CPU again: its timer's expiry (the kernel may run it from then on; a host stall
# before the task reads its clock would otherwise be held time its log misses), or now if it did not sleep.
SLEEP_UNTIL = r"""
import time
def sleep_until(t):
    rt = time.CLOCK_REALTIME
    wait = t - time.monotonic()
    expiry = time.clock_gettime_ns(rt) + int(max(0.0, wait) * 1e9)
    time.sleep(max(0.0, wait))
    return min(expiry, time.clock_gettime_ns(rt))
"""

HOG = SLEEP_UNTIL + r"""
import ctypes, json, os, signal, sys, time
period, busy, seconds, cpu, out = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
ctypes.CDLL("libc.so.6").prctl(15, b"ls-interferer", 0, 0, 0)
os.sched_setaffinity(0, {cpu})
os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(50))
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
rt = time.CLOCK_REALTIME
held = []
print("ready", flush=True)
end = time.monotonic() + seconds
nxt = time.monotonic()
woke = time.clock_gettime_ns(rt)
while not stop and time.monotonic() < end:
    nxt += period / 1000
    spin_end = time.monotonic() + busy / 1000
    while time.monotonic() < spin_end:
        pass
    held.append((woke, time.clock_gettime_ns(rt)))
    woke = sleep_until(nxt)
held.append((woke, 2**62))
with open(out + ".tmp", "w") as fh:
    json.dump(held, fh)
os.rename(out + ".tmp", out)
"""

# Every PERIOD ms, at SCHED_FIFO 50 on CPU, write 64 KiB and fsync it (ext4: block requests, journal
# commits, kworkers, the block device's interrupt), for at most SECONDS or until SIGTERM; the stretches in
# which it may hold the CPU are recorded as the hog's are (they include the waits inside fsync).
WRITER = SLEEP_UNTIL + r"""
import ctypes, json, os, signal, sys, time
path, period, seconds, cpu, out = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
ctypes.CDLL("libc.so.6").prctl(15, b"ls-fsync-writer", 0, 0, 0)
os.sched_setaffinity(0, {cpu})
os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(50))
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
rt = time.CLOCK_REALTIME
buf = os.urandom(65536)
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
held = []
print("ready", flush=True)
end = time.monotonic() + seconds
nxt = time.monotonic()
woke = time.clock_gettime_ns(rt)
n = 0
while not stop and time.monotonic() < end:
    nxt += period / 1000
    os.write(fd, buf)
    os.fsync(fd)
    n += 1
    if n % 64 == 0:
        os.lseek(fd, 0, 0)
    held.append((woke, time.clock_gettime_ns(rt)))
    woke = sleep_until(nxt)
held.append((woke, 2**62))
os.close(fd)
with open(out + ".tmp", "w") as fh:
    json.dump(held, fh)
os.rename(out + ".tmp", out)
"""


@contextlib.contextmanager
def background(code: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    """Run a load generator for the duration of the block, from its "ready" line on; ended by its pid."""
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "ready", f"load generator failed to start (status {proc.poll()})"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def held_intervals(proc: subprocess.Popen[str], path: Path) -> np.ndarray:
    """End a recording load generator (SIGTERM) and return its (n, 2) CLOCK_REALTIME intervals."""
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)
    return np.array(json.loads(path.read_text()), dtype=np.int64)


def widened(held: np.ndarray) -> np.ndarray:
    """The intervals grown by HOG_EDGE_NS on each side: all the time the task may have held its CPU."""
    return np.stack([held[:, 0] - HOG_EDGE_NS, held[:, 1] + HOG_EDGE_NS], axis=1)


def over_silence(held: np.ndarray, table: EventTable, cpu: int) -> np.ndarray:
    """The intervals stretched over the silence next to them on ``cpu``: back to the last event the kernel
    recorded there before each start, on to the first one after each end.

    A task that spins makes no events, so where the CPU was silent next to its busy stretch neither the
    trace nor the task's own clock readings can say whether it was the task or a host stall: a vCPU
    descheduled between the task's last clock reading and its sleep call (seen here: 350 us with nothing
    recorded before the switch away) still has the task current. The breakdown gives such time to the
    current task, by design; the ground truth must not call that a false blame.
    """
    ts = np.sort(table.ts[table.cpu == cpu].astype(np.int64) + int(table.meta.get("to_realtime_ns") or 0))
    if len(ts) == 0:
        return held
    before = np.searchsorted(ts, held[:, 0], "left") - 1
    after = np.searchsorted(ts, held[:, 1], "right")
    # Only within the recorded span: before the first event and after the last nothing was recorded at all.
    recorded = (held[:, 1] >= ts[0]) & (held[:, 0] <= ts[-1])
    start = np.where(recorded & (before >= 0), ts[np.clip(before, 0, None)], held[:, 0])
    end = np.where(recorded & (after < len(ts)), ts[np.clip(after, None, len(ts) - 1)], held[:, 1])
    return np.stack([start, end], axis=1)


def traced_run(latscope, *extra: str, count: int = 2000) -> dict:
    r = latscope("run", "--trace", "--count", str(count), "--cpu-send", str(SEND_CPU), "--cpu-recv",
                 str(RECV_CPU), "--json", "-q", *extra, timeout=180)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def breakdown(latscope, run_id: str, *extra: str) -> dict:
    r = latscope("breakdown", run_id, "--json", *extra, timeout=180)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def overlap_ns(held: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per window [a[i], b[i]]: how long the intervals ``held`` (n, 2) overlap it, in ns."""
    lo = np.maximum(held[None, :, 0], a[:, None])
    hi = np.minimum(held[None, :, 1], b[:, None])
    return np.clip(hi - lo, 0, None).sum(axis=1)


@pytest.mark.serial
def test_interferer_on_receiver_cpu_is_named_for_exactly_the_packets_it_held(latscope, results: Path,
                                                                             tmp_path: Path) -> None:
    """A SCHED_FIFO busy loop on the receiver's CPU, checked against the intervals it recorded itself.

    Recall: every late packet that the hog kept from the receiver (between the kernel's receive timestamp
    and the receiver's user-space timestamp, for HOG_HELD_NS and a quarter of the packet's delay at
    least) names the hog (comm, pid, CPU).
    Precision: no packet blames the hog for more time than the hog could have held the CPU within the
    packet's life (from its scheduled send to the receiver's timestamp), so a packet the hog never
    touched does not name it at all.
    """
    held_file = tmp_path / "hog.json"
    # The probe runs SCHED_FIFO below the hog, so while the hog spins the receiver cannot run.
    with background(HOG, "10", "1", "60", str(RECV_CPU), str(held_file)) as hog:
        run = traced_run(latscope, "--prio-send", "20", "--prio-recv", "10")
        held = held_intervals(hog, held_file)
    assert run["completeness"]["trace_overruns"] == 0
    assert len(held) > 100, "the hog hardly ran"

    s = ResultsStore(results).resolve(run["run_id"]).samples(["seq", "sched_ns", "rx_sw_ns", "rx_user_ns"])
    ok = (s["rx_sw_ns"] != MISSING) & (s["rx_user_ns"] != MISSING)
    e2e = (s["rx_user_ns"] - s["sched_ns"])[ok]
    # Break down the slowest quarter: that takes in most packets the hog delayed, and many it did not.
    threshold_us = float(np.percentile(e2e, 75)) / 1000
    doc = breakdown(latscope, run["run_id"], "--threshold", f"{threshold_us:.3f}us")
    assert doc["format"] == "latscope-breakdown" and doc["metric"] == "e2e"
    late = doc["late_packets"]
    assert len(late) > 100, doc["late_count"]

    row = {int(q): i for i, q in enumerate(s["seq"])}
    idx = np.array([row[p["seq"]] for p in late])
    sched, rx_sw, rx_user = s["sched_ns"][idx], s["rx_sw_ns"][idx], s["rx_user_ns"][idx]
    # Ground truth per late packet: how long the hog held the receiver's CPU while the packet waited for
    # the receiver (its busy spin only), and the most it could have held that CPU in the packet's life.
    spin_held = overlap_ns(held, rx_sw, rx_user)
    could_hold = overlap_ns(widened(over_silence(held, load_run_table(Path(run["path"])), RECV_CPU)), sched,
                            rx_user)
    blamed = np.array([sum(c["us"] for c in p["culprits"] if c["pid"] == hog.pid) * 1000 for p in late])
    on_cpus = {c["cpu"] for p in late for c in p["culprits"] if c["pid"] == hog.pid}
    assert on_cpus <= {RECV_CPU}, on_cpus

    # The breakdown explains the stages that carry a real part of a packet's delay (docs/breakdown.md):
    # a packet that something else delayed for milliseconds need not name a hog that held it briefly.
    excess = (rx_user - sched) - np.median(e2e)
    must = spin_held >= np.maximum(HOG_HELD_NS, 0.25 * excess)
    assert must.sum() >= 20, f"only {must.sum()} late packets were held by the hog: the test proves nothing"
    named = blamed > 0
    missed = [late[i]["seq"] for i in np.flatnonzero(must & ~named)]
    # A few may legitimately lose their link to the hog (a packet the trace could not follow through
    # every stage); a broken attribution misses most.
    assert len(missed) <= 0.05 * must.sum(), (len(missed), int(must.sum()), missed[:10])
    # The hog delayed them after the kernel's receive timestamp (netif_rx, C5): a packet it held for over
    # half of its life has its dominant stage there. (Only those: with a quarter of the excess, a host
    # stall of a few ms on the sender's side may well be the larger stage.)
    after_rx_sw = {"netrx_wait", "rx_stack", "socket_enqueue", "receiver_wakeup", "runqueue_wait", "recv_return",
                   "user_space"}
    mostly = spin_held > 0.5 * (rx_user - sched)
    assert mostly.sum() >= 10, f"only {mostly.sum()} late packets were held by the hog for half their life"
    dominant_elsewhere = [(late[i]["seq"], late[i]["dominant_stage"], late[i]["stages"])
                          for i in np.flatnonzero(mostly) if late[i]["dominant_stage"] not in after_rx_sw]
    assert len(dominant_elsewhere) <= 0.05 * mostly.sum(), (int(mostly.sum()), dominant_elsewhere[:5])

    # Precision: blame never exceeds what the hog could have held (1 us of rounding per culprit entry). The
    # one exception the breakdown states: a silent stretch while the hog was current and the host's steal
    # grew is left to the hog, with a note saying how much of it may be the hypervisor's. A host stall
    # between the hog's last clock reading and its sleep call is held CPU its own log cannot bracket.
    said_stolen = np.array([sum(float(us) for c in p["culprits"] if c["pid"] == hog.pid
                                for us in STOLEN_NOTE.findall(c.get("note") or "")) * 1000 for p in late])
    over = np.flatnonzero(blamed > could_hold + said_stolen + 1_000)
    assert len(over) == 0, [(late[i]["seq"], blamed[i], could_hold[i], said_stolen[i],
                             [c for c in late[i]["culprits"] if c["pid"] == hog.pid]) for i in over[:5]]
    untouched = could_hold == 0
    assert untouched.sum() >= 10, "too few late packets away from the hog to check precision"

    for p in late:
        assert {"seq", "latency_us", "dominant_stage", "stages", "culprits"} <= set(p)
        assert all({"name", "us"} <= set(st) for st in p["stages"])
        assert all({"comm", "pid", "cpu", "us"} <= set(c) for c in p["culprits"])
        # the stages add up to the packet's latency (e2e: every checkpoint from schedule to user space)
        assert abs(sum(st["us"] for st in p["stages"]) - p["latency_us"]) < 0.01 * len(p["stages"]) + 0.001
    mine = [c for c in doc["culprits"] if c["comm"] == HOG_COMM and hog.pid in c["pids"]]
    assert mine and mine[0]["kind"] == "task" and mine[0]["count"] >= int(must.sum()) - len(missed)
    text = latscope("breakdown", run["run_id"], "--threshold", f"{threshold_us:.3f}us", "--top", "2000")
    assert text.returncode == 0, text.stderr
    assert f"{HOG_COMM} (pid {hog.pid})" in text.stdout


@pytest.mark.serial
def test_fsync_writer_io_is_attributed_where_it_ran(latscope, results: Path, tmp_path: Path) -> None:
    """An fsync loop on the receiver's CPU: its I/O work is named on the CPU where it ran, never beyond its time.

    Writer and probe run SCHED_FIFO (writer above the receiver) so that the writer, not the other tasks
    of a busy machine, is what the receiver waits for. Checked against the writer's own record: some late
    packet names the writer or its block I/O; the writer is never blamed for more than it could have
    held its CPU within a packet's life; every I/O task named has events on the CPU it is named on.
    """
    held_file = tmp_path / "writer.json"
    with background(WRITER, str(tmp_path / "fsync.dat"), "5", "60", str(RECV_CPU), str(held_file)) as writer:
        run = traced_run(latscope, "--prio-send", "20", "--prio-recv", "10")
        held = held_intervals(writer, held_file)
    assert run["completeness"]["trace_overruns"] == 0
    assert len(held) > 100, "the writer hardly ran"
    table = load_run_table(Path(run["path"]))
    counts = table.counts()
    assert counts.get("block_rq_issue", 0) > 0 and counts.get("block_rq_complete", 0) > 0
    assert writer.pid in set(table.pid.tolist())
    # Break down the slower half: the writer holds the CPU for tens of microseconds a burst, and such
    # packets are late against the median, whatever else a busy machine does to the slowest ones.
    doc = breakdown(latscope, run["run_id"], "--threshold", f"{run['e2e_us']['p50']}us")
    late = doc["late_packets"]
    assert late
    io = [c for c in doc["culprits"] if is_io(c)]
    assert io, f"no I/O culprit among {[c['comm'] for c in doc['culprits']]}"
    s = ResultsStore(results).resolve(run["run_id"]).samples(["seq", "sched_ns", "rx_user_ns"])
    row = {int(q): i for i, q in enumerate(s["seq"])}
    idx = np.array([row[p["seq"]] for p in late])
    could_hold = overlap_ns(widened(over_silence(held, table, RECV_CPU)), s["sched_ns"][idx], s["rx_user_ns"][idx])
    blamed = np.array([sum(c["us"] for c in p["culprits"] if c["pid"] == writer.pid) * 1000 for p in late])
    assert (blamed > 0).any(), "the writer itself is named for no late packet"
    over = np.flatnonzero(blamed > could_hold + 1_000)
    # Seen once in a fresh-clone run on this VM: one 4.5 ms episode (4 consecutive packets) billed to the
    # writer outside its own record with no trace event in between (host steal while the trace still showed
    # the writer on its CPU). Until the model tells such a stall from the task, a run may have that one
    # episode; broken attribution blames the writer far more often than that.
    assert len(over) <= max(4, len(late) // 50), [(late[i]["seq"], blamed[i], could_hold[i]) for i in over[:10]]
    assert {c["cpu"] for p in late for c in p["culprits"] if c["pid"] == writer.pid} <= {RECV_CPU}
    # "where it occurs": every I/O task culprit ran on the CPU it is blamed on (it has events there)
    per_packet = [c for p in late for c in p["culprits"] if is_io(c) and c["pid"] is not None]
    for c in per_packet:
        on_cpu = (table.pid == c["pid"]) & (table.cpu == c["cpu"])
        assert bool(np.any(on_cpu)), c


def is_io(c: dict) -> bool:
    name = c["comm"]
    return (name in ("ls-fsync-writer", "softirq BLOCK") or name.startswith(("jbd2/", "kworker/"))
            or (c["kind"] == "irq" and ("blk" in name or "virtio" in name or "nvme" in name)))


def test_ctrl_c_during_traced_run_removes_the_instance(results: Path) -> None:
    """SIGINT during `run --trace` keeps what was measured and removes the tracefs instance."""
    env = {**os.environ, "LATSCOPE_RESULTS": str(results)}
    proc = subprocess.Popen([str(BIN / "latscope"), "run", "--trace", "--count", "20000", "--period", "500us",
                             "-q"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        mine = []
        while time.monotonic() < deadline and not mine:
            mine = [n for n in tracefs.owned(tracefs.find_tracefs()) if n.startswith(f"latscope-{proc.pid}-")]
            time.sleep(0.05)
        assert mine, "the traced run never created its instance"
        wait_for_packets(results, proc, 200)  # mid-run, not during the set-up (a signal then stores nothing)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 1, err
    assert not [n for n in tracefs.owned(tracefs.find_tracefs()) if n.startswith(f"latscope-{proc.pid}-")]
    runs = [p for p in results.iterdir() if not p.name.startswith(".")]
    assert len(runs) == 1 and (runs[0] / "trace" / "events.parquet").exists()


def test_breakdown_read_by_windows_is_the_whole_traces(latscope, results: Path) -> None:
    """A real traced run: the breakdown from the rows it needs equals the one from every event, for the
    default threshold (late packets here and there: windows apart), a low one (windows everywhere) and
    the latency metric; and the default really read only part of the trace. The default through the
    command (`--whole-trace` against none), the other two through the same calls in this process."""
    from latscope.trace.breakdown import Options, _analyse_windows, analyse_run, load_run_steal
    from latscope.trace.report import to_json

    run = traced_run(latscope, count=2000)
    assert run["completeness"]["trace_overruns"] == 0
    rid = run["run_id"]
    part = latscope("breakdown", rid, "--json", timeout=180)
    whole = latscope("breakdown", rid, "--json", "--whole-trace", timeout=180)
    assert part.returncode == 0 and whole.returncode == 0, (part.stderr, whole.stderr)
    assert part.stdout == whole.stdout
    assert json.loads(part.stdout)["late_broken_down"] > 0
    # the steal sampler starts before the trace and stops after it: its series covers the whole trace
    assert json.loads(part.stdout)["trace"]["host_steal"]["covers_trace"] is True
    stored = ResultsStore(results).resolve(rid)
    assert stored.record.config["trace"] is True  # what compare lists when a traced and an untraced run differ
    samples, steal = stored.samples(), load_run_steal(stored.path)
    table = stored.path / "trace" / "events.parquet"
    for options in (Options(threshold_ns=30_000), Options(metric="latency")):
        windows = _analyse_windows(table, samples, options, run_id=rid, overruns=0, steal=steal)
        assert windows is not None, options  # read by windows, not by the whole-table fallback
        every = analyse_run(stored.path, stored.record.extra.get("trace"), samples, options, run_id=rid,
                            overruns=0, steal=steal, whole=True)
        assert to_json(windows) == to_json(every), options
        assert to_json(windows)["late_broken_down"] > 0
    bd = _analyse_windows(table, samples, Options(), run_id=rid, overruns=0, steal=None)
    assert bd is not None and bd.timeline is not None
    subset = bd.timeline.table.meta["subset"]
    assert subset["rows_read"] < subset["events"], subset


def test_a_round_trip_run_is_refused_with_the_reason(latscope, results: Path) -> None:
    """A traced --mode rtt run has a trace but no per-packet markers: the breakdown says it is a round
    trip (exit 1, one line), not that the run was not recorded with --trace."""
    run = traced_run(latscope, "--mode", "rtt", count=200)
    assert run["completeness"]["trace_overruns"] == 0
    r = latscope("breakdown", run["run_id"], timeout=180)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "is a round trip (--mode rtt)" in r.stderr, r.stderr
    assert "record with `latscope run --trace`" not in r.stderr
    out = results.parent / "rtt.html"
    r = latscope("report", run["run_id"], "-o", str(out), "--bootstrap", "200", timeout=180)
    assert r.returncode == 0, r.stderr
    section = out.read_text(encoding="utf-8").split("<h3>Trace breakdown</h3>")[1].split("<h2")[0]
    assert "A kernel trace was recorded, but this run is a round trip (--mode rtt)" in section
