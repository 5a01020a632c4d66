"""Host steal on this machine: a real run's series agrees with /proc/stat read around it.

Steal may or may not happen (CI, bare metal): these tests assert consistency, never that steal occurred.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from latscope.env.steal import STEAL_FILE, StealSampler, read_series, read_steal
from latscope.store.layout import ResultsStore


def test_sampler_agrees_with_proc_stat_read_before_and_after() -> None:
    """The series' growth per CPU is /proc/stat's growth between readings just before and after, to one sample."""
    t_before = time.clock_gettime_ns(time.CLOCK_REALTIME)
    before = read_steal()
    smp = StealSampler()
    smp.start()
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        sum(range(20_000))  # keep a CPU busy meanwhile, as a run does
    s = smp.stop()
    after = read_steal()
    t_after = time.clock_gettime_ns(time.CLOCK_REALTIME)
    assert len(s) >= 10 and set(s.cpus) == set(before)
    outside = (int(s.ts_ns[0]) - t_before) + (t_after - int(s.ts_ns[-1]))
    for j, cpu in enumerate(s.cpus):
        series = int(s.steal_ns[-1, j] - s.steal_ns[0, j])
        proc = after[cpu] - before[cpu]
        assert before[cpu] <= s.steal_ns[0, j] and s.steal_ns[-1, j] <= after[cpu]
        # what the series misses is the steal of the moments it was not sampling, at most one counter step more
        assert 0 <= proc - series <= outside + s.resolution_ns, (cpu, proc, series, outside)


def test_a_real_run_stores_its_steal_series_consistent_with_proc_stat(latscope, results: Path) -> None:
    """`run` (loopback) leaves steal.parquet and summary.host_steal, bracketed by /proc/stat before and after."""
    before = read_steal()
    t_before = time.clock_gettime_ns(time.CLOCK_REALTIME)
    r = latscope("run", "--topology", "loopback", "--count", "400", "--json")
    t_after = time.clock_gettime_ns(time.CLOCK_REALTIME)
    after = read_steal()
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    run = ResultsStore(results).resolve(doc["run_id"])
    s = read_series(run.path / STEAL_FILE)
    rec = run.record.extra["host_steal"]
    assert rec["samples"] == len(s) and rec["file"] == STEAL_FILE and "error" not in rec
    # about one sample every 10 ms over a run of 0.4 s and its set-up
    span_s = (s.ts_ns[-1] - s.ts_ns[0]) / 1e9
    assert span_s >= 0.4 and len(s) >= 0.5 * span_s / 0.010
    assert t_before <= s.ts_ns[0] and s.ts_ns[-1] <= t_after and (np.diff(s.ts_ns) > 0).all()
    summary = doc["host_steal"] if "host_steal" in doc else run.record.summary["host_steal"]
    for j, cpu in enumerate(s.cpus):
        col = s.steal_ns[:, j]
        assert before[cpu] <= col[0] and col[-1] <= after[cpu]
        steps = np.diff(col)
        # never backwards, and never more than the time between two samples (plus the counter's step and lag)
        assert (steps >= 0).all() and (steps <= np.diff(s.ts_ns) + 2 * s.resolution_ns).all()
        entry = summary["cpus"][str(cpu)]
        assert entry["steal_ns"] == int(col[-1] - col[0])
        assert abs(entry["percent"] - 100 * entry["steal_ns"] / (s.ts_ns[-1] - s.ts_ns[0])) < 0.01
    shown = latscope("show", doc["run_id"])
    assert shown.returncode == 0, shown.stderr
    stole = any(summary["cpus"][str(c)]["steal_ns"] for c in s.cpus)
    assert ("host steal:" in shown.stdout) == stole
    if stole:
        line = next(ln for ln in shown.stdout.splitlines() if "host steal:" in ln)
        assert all(f"of CPU {c}" in line for c in s.cpus)
