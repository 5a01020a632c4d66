"""Sender timer precision against rt-tests' cyclictest, same period, CPU and priority, same run.

    .venv/bin/python benchmarks/probe/timer_vs_cyclictest.py [--loops 20000] [--rounds 3]

cyclictest measures how late its thread wakes from clock_nanosleep(TIMER_ABSTIME);
latscope's wakeup_latency (wake_ns - sched_ns) is the same quantity for the
sender. Both run on the same CPU at the same SCHED_FIFO priority and period,
alternating, so the machine's noise hits both. cyclictest holds
/dev/cpu_dma_latency at 0 while it runs (no deep C-states) unless --laptop;
latscope only with --cpu-dma-latency 0, so the table shows both ways for both.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from common import cleanup, host, pct, run_latscope, samples, scratch


def cyclictest(loops: int, period_us: int, cpu: int, prio: int, laptop: bool) -> tuple[float, float]:
    """p50 and p99 (us) of cyclictest's wakeup latency, from its 1 us histogram."""
    with tempfile.NamedTemporaryFile("r", suffix=".hist") as hist:
        cmd = ["cyclictest", "-q", "-m", "-t", "1", "-a", str(cpu), "-p", str(prio), "-i", str(period_us),
               "-l", str(loops), "--histogram=10000", f"--histfile={hist.name}"]
        if laptop:
            cmd.append("--laptop")
        subprocess.run(cmd, check=True, capture_output=True)
        counts = {}
        for line in Path(hist.name).read_text().splitlines():
            if line.startswith("#") or not line.strip():
                continue
            us, n = line.split()[:2]
            counts[int(us)] = int(n)
    values = np.repeat(np.array(list(counts)), np.array(list(counts.values())))
    return pct(values, 50), pct(values, 99)


def latscope(loops: int, period_us: int, cpu: int, prio: int, spin_us: int, dma0: bool) -> tuple[float, float]:
    results = scratch()
    try:
        doc = run_latscope(["--topology", "loopback", "--count", str(loops), "--period", f"{period_us}us",
                            "--cpu-send", str(cpu), "--prio-send", str(prio), "--cpu-recv", str(1 - cpu),
                            "--spin", f"{spin_us}us"] + (["--cpu-dma-latency", "0"] if dma0 else []), results)
        s = samples(results, doc["run_id"], ["wake_ns", "sched_ns"])
        w = (s["wake_ns"] - s["sched_ns"]) / 1000.0
        return pct(w, 50), pct(w, 99)
    finally:
        cleanup(results)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--loops", type=int, default=20_000)
    ap.add_argument("--period-us", type=int, default=1000)
    ap.add_argument("--cpu", type=int, default=0)
    ap.add_argument("--prio", type=int, default=80)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--spin-us", type=int, default=50)
    a = ap.parse_args()
    rows: dict[str, list[tuple[float, float]]] = {}
    for _ in range(a.rounds):
        for name, fn in (
            ("cyclictest (cpu_dma_latency=0)", lambda: cyclictest(a.loops, a.period_us, a.cpu, a.prio, False)),
            ("cyclictest --laptop", lambda: cyclictest(a.loops, a.period_us, a.cpu, a.prio, True)),
            ("latscope", lambda: latscope(a.loops, a.period_us, a.cpu, a.prio, 0, False)),
            (f"latscope --spin {a.spin_us}us", lambda: latscope(a.loops, a.period_us, a.cpu, a.prio, a.spin_us,
                                                                False)),
            ("latscope --cpu-dma-latency 0", lambda: latscope(a.loops, a.period_us, a.cpu, a.prio, 0, True)),
            (f"latscope --spin {a.spin_us}us --cpu-dma-latency 0",
             lambda: latscope(a.loops, a.period_us, a.cpu, a.prio, a.spin_us, True)),
        ):
            rows.setdefault(name, []).append(fn())
    print(f"host: {host()}; period {a.period_us} us, {a.loops} wakeups x {a.rounds} rounds, CPU {a.cpu}, "
          f"SCHED_FIFO {a.prio}")
    print("| timer | wakeup p50 (us) | wakeup p99 (us) |")
    print("|---|---|---|")
    for name, vals in rows.items():
        p50 = np.median([v[0] for v in vals])
        p99 = np.median([v[1] for v in vals])
        print(f"| {name} | {p50:.2f} | {p99:.2f} |")


if __name__ == "__main__":
    main()
