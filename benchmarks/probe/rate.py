"""How fast latscope can send and receive without missing a period.

    .venv/bin/python benchmarks/probe/rate.py [--seconds 60] [--periods 100,50,20]

For each period, a veth run with the sender on CPU 0 and the receiver on CPU 1
(SCHED_FIFO 80, --spin 20us). A period is missed when a packet left more than
one period after its scheduled time (the sender could not keep up) and a
packet is lost when the receiver never saw it (it could not keep up). The
highest rate is the shortest period with no missed period and no loss.
cyclictest on the same CPU and priority, for as many wakeups, is the baseline:
its wakeups later than one period are misses the machine itself causes.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from common import cleanup, host, run_latscope, samples, scratch


def one(period_us: int, seconds: float, topology: str) -> dict:
    results = scratch()
    try:
        count = int(seconds * 1e6 / period_us)
        doc = run_latscope(["--topology", topology, "--count", str(count), "--period", f"{period_us}us",
                            "--cpu-send", "0", "--cpu-recv", "1", "--prio-send", "80", "--prio-recv", "80",
                            "--spin", f"{min(20, period_us // 2)}us"], results)
        s = samples(results, doc["run_id"], ["sched_ns", "send_ns"])
        late = (s["send_ns"] - s["sched_ns"]) > period_us * 1000
        return {"period_us": period_us, "packets": count, "missed": int(np.count_nonzero(late)),
                "lost": doc["packets"]["lost"], "latency_p99_us": doc["latency_us"]["p99"],
                "wakeup_p99_us": doc["wakeup_latency_us"]["p99"]}
    finally:
        cleanup(results)


def cyclictest_misses(period_us: int, seconds: float) -> tuple[int, int]:
    """Baseline on the same CPU and priority: cyclictest wakeups later than one period, of how many."""
    loops = int(seconds * 1e6 / period_us)
    with tempfile.NamedTemporaryFile("r", suffix=".hist") as hist:
        subprocess.run(["cyclictest", "-q", "-m", "-t", "1", "-a", "0", "-p", "80", "-i", str(period_us),
                        "-l", str(loops), "--laptop", "--histogram=100000", f"--histfile={hist.name}"],
                       check=True, capture_output=True)
        late = 0
        for line in Path(hist.name).read_text().splitlines():
            if line.startswith("#") or not line.strip():
                continue
            us, n = line.split()[:2]
            if int(us) >= period_us:
                late += int(n)
    return late, loops


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--periods", default="100,50,20")
    ap.add_argument("--topology", default="veth")
    a = ap.parse_args()
    rows = []
    for p in a.periods.split(","):
        row = one(int(p), a.seconds, a.topology)
        row["cyclictest_late"], _ = cyclictest_misses(int(p), a.seconds)
        rows.append(row)
    print(f"host: {host()}; {a.seconds:.0f} s per period, {a.topology}, sender CPU 0, receiver CPU 1, FIFO 80")
    print("| period (us) | rate (pps) | packets | missed periods | lost | latency p99 (us) | wakeup p99 (us) "
          "| cyclictest wakeups later than a period (same CPU, prio, count) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['period_us']} | {1_000_000 // r['period_us']} | {r['packets']} | {r['missed']} | {r['lost']} "
              f"| {r['latency_p99_us']:.3f} | {r['wakeup_p99_us']:.3f} | {r['cyclictest_late']} |")
    ok = [r["period_us"] for r in rows if r["missed"] == 0 and r["lost"] == 0]
    print(f"\nshortest period held with no missed period and no loss: {min(ok)} us" if ok else
          "\nno period was held without a miss")


if __name__ == "__main__":
    main()
