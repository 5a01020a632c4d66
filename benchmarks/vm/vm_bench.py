"""VM benchmarks (issue 7): time to the first packet, bridge vs macvtap, guest sender vs guest cyclictest.

    .venv/bin/python benchmarks/vm/vm_bench.py --results /tmp/vm-bench [--repeats 3] [--count 3000]

1. Start-up: for each fresh guest, where the time from `measure` to the first packet
   received went: image (cached or built), QEMU start to the agent's first word (kernel,
   /init, 9p root, Python), setup (network, cwd, clock), the guest receiver's start (imports),
   and the sender's start to its first packet.
2. Host -> guest latency under TCG, bridge against macvtap: two guests booted side by side,
   runs interleaved (B M B M ...), then `latscope compare` of the two groups.
3. The guest as a sender (reverse) at 1 ms: its missed periods against cyclictest run in the
   same guest at the same period and priority (both wake with clock_nanosleep TIMER_ABSTIME).
Prints Markdown tables for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from latscope.probe.config import MeasureConfig
from latscope.session import measure_all
from latscope.store.layout import ResultsStore
from latscope.topo.vm.guest import running_guest
from latscope.topo.vm.options import VmOptions
from latscope.topo.vm.topology import vm_path


def first_packet_s(out, guest) -> float:
    rx = out.run.samples()["rx_user_ns"]
    return (int(rx[rx > 0].min()) - guest.started_ns) / 1e9


def startup(store: ResultsStore, variant: str, count: int) -> tuple[dict, object]:
    t0 = time.monotonic()
    stack = contextlib.ExitStack()
    guest = stack.enter_context(running_guest(VmOptions(variant=variant, accel="tcg")))
    (out,) = measure_all(MeasureConfig(topology="vm", count=count, name=f"bench-{variant}",
                                       tags=("vm-bench", variant)), store, path=vm_path(guest))
    row = {**guest.timings, "receiver_ready": guest.ready_s[0], "first_packet": first_packet_s(out, guest),
           "wall_to_first_packet": None}
    row["wall_to_first_packet"] = row["image"] + row["first_packet"]
    del t0
    return row, (stack, guest, out)


def cyclictest_missed(guest, loops: int, period_us: int) -> tuple[int, int, float]:
    r = guest.link.request("exec", timeout_s=loops * period_us / 1e6 * 20 + 60,
                           argv=["cyclictest", "-q", "-m", "-p80", f"-i{period_us}", f"-l{loops}",
                                 f"-h{4 * period_us}"]).header
    hist = {}
    overflow = 0
    for line in r["stdout"].splitlines():
        m = re.match(r"^(\d+)\s+(\d+)\s*$", line)
        if m:
            hist[int(m.group(1))] = int(m.group(2))
        m = re.match(r"^# Histogram Overflows:\s+(\d+)", line)
        if m:
            overflow = int(m.group(1))
    total = sum(hist.values()) + overflow
    missed = sum(c for us, c in hist.items() if us >= period_us) + overflow
    lat = np.repeat(np.array(list(hist.keys()), dtype=float), list(hist.values()))
    return missed, total, float(np.percentile(lat, 99)) if len(lat) else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", default="/tmp/vm-bench")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--count", type=int, default=3000)
    args = ap.parse_args()
    store = ResultsStore(Path(args.results))
    rows = []
    guests = {}
    try:
        for variant in ("bridge", "macvtap"):
            row, held = startup(store, variant, args.count)
            rows.append((variant, row))
            guests[variant] = held
        print("### Start-up: measure() to the first packet received (s)\n")
        keys = ("image", "boot", "setup", "receiver_ready", "first_packet", "wall_to_first_packet")
        print("| guest | " + " | ".join(keys) + " |")
        print("|---" * (len(keys) + 1) + "|")
        for variant, row in rows:
            print(f"| {variant} | " + " | ".join(f"{row[k]:.1f}" for k in keys) + " |")
        ids = {"bridge": [], "macvtap": []}
        for _ in range(args.repeats):
            for variant in ("bridge", "macvtap"):
                _stack, guest, _ = guests[variant]
                (out,) = measure_all(MeasureConfig(topology="vm", count=args.count, tags=("vm-bench", variant)),
                                     store, path=vm_path(guest))
                ids[variant].append(out.run.run_id)
        cmd = [str(Path(sys.executable).parent / "latscope"), "compare", ",".join(ids["bridge"]),
               ",".join(ids["macvtap"]), "--results", args.results]
        print(f"\n### bridge vs macvtap, {args.repeats} interleaved runs of {args.count} packets each\n")
        print("```\n$ latscope compare BRIDGE_RUNS MACVTAP_RUNS")
        print(subprocess.run(cmd, capture_output=True, text=True).stdout.rstrip() + "\n```")
        _stack, guest, _ = guests["bridge"]
        (rev,) = measure_all(MeasureConfig(topology="vm", count=args.count, direction="reverse", prio_send=80),
                             store, path=vm_path(guest))
        sched = rev.summary["schedule"]
        wake = rev.summary["wakeup_latency_us"]
        missed, total, p99 = cyclictest_missed(guest, args.count, 1000)
        print(f"\n### Guest as a sender at 1 ms (SCHED_FIFO 80) vs cyclictest in the same guest\n")
        print("| timer in the guest | wakeups | missed periods | wakeup p99 (us) |\n|---|---|---|---|")
        print(f"| latscope sender (reverse run {rev.run.run_id}) | {sched['scheduled']} | "
              f"{sched['missed_periods']} | {wake['p99']:.1f} |")
        print(f"| cyclictest -m -p80 -i1000 | {total} | {missed} | {p99:.1f} |")
    finally:
        for stack, _g, _o in guests.values():
            stack.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
