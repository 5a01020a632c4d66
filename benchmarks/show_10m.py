#!/usr/bin/env python3
"""Benchmark: `latscope show` on a 10-million-packet run (almost 3 hours at 1 kHz).

Target (issue 4, item 8): under 5 s and under 1 GiB of peak memory.

The run is synthetic but shaped like a real one, so Parquet compresses it as
much (or as little) as a measured run: every timestamp column carries jitter,
latency is log-normal with spikes, a held-then-released burst, random losses
and a loss burst. It is made once and kept in --dir.

Each measurement is a fresh `latscope show` process; wall time and peak RSS
(ru_maxrss of that child, via wait4) are taken from the outside. The baseline,
measured in the same invocation on the same file, is a process that only reads
the Parquet columns `show` needs into numpy arrays (pyarrow read_table +
to_numpy) and does nothing else: the floor that no analysis can beat.

    .venv/bin/python benchmarks/show_10m.py [--packets 10000000] [--dir /tmp/latscope-bench] [--repeat 3]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BIN = Path(sys.executable).parent
NAME = "bench-show"
#: The columns the default text `show` reads.
SHOW_COLUMNS = ["seq", "flags", "sched_ns", "wake_ns", "send_ns", "rx_hw_ns", "rx_sw_ns", "rx_user_ns"]

BASELINE = """
import sys, numpy as np, pyarrow.parquet as pq, pyarrow.compute as pc
t = pq.read_table(sys.argv[1], columns=sys.argv[2].split(","))
cols = {n: pc.fill_null(t.column(n), 0).to_numpy() for n in t.column_names}
print(sum(len(c) for c in cols.values()))
"""


def make_run(root: Path, n: int) -> str:
    """Store the synthetic run (once) and return its id."""
    from latscope.probe.merge import merge
    from latscope.store.layout import ResultsStore, new_run_id
    from latscope.store.runfile import RunRecord
    from latscope.store.samples import FLAG_LOST, MISSING

    store = ResultsStore(root)
    for run in store.runs()[0]:
        if run.record.name == NAME and run.record.config.get("count") == n:
            return run.run_id
    rng = np.random.default_rng(2024)
    period = 1_000_000
    base = 1_795_000_000_000_000_000
    sched = base + np.arange(n, dtype=np.int64) * period
    wake = sched + rng.lognormal(np.log(3_000), 0.5, n).astype(np.int64)
    send = wake + rng.integers(300, 900, n)
    tx = send + rng.lognormal(np.log(3_000), 0.2, n).astype(np.int64)
    latency = 55_000 + rng.lognormal(np.log(8_000), 0.4, n).astype(np.int64)
    latency[rng.integers(0, n, n // 5000)] += rng.integers(50_000, 300_000, n // 5000)
    held = n // 2
    latency[held:held + 30] += 30_000_000 - np.arange(30) * period  # held 30 ms, then released at once
    rx = send + latency
    user = rx + rng.lognormal(np.log(10_000), 0.3, n).astype(np.int64)
    lost = rng.random(n) < 1e-4
    lost[n // 3:n // 3 + 200] = True
    rx[lost] = MISSING
    user[lost] = MISSING
    sender = {"sched": sched, "wake": wake, "send": send, "tx_sw": tx,
              "tx_hw": np.full(n, MISSING, np.int64), "flags": np.zeros(n, np.int32)}
    receiver = {"rx_sw": rx, "rx_hw": np.full(n, MISSING, np.int64), "rx_user": user,
                "flags": np.where(lost, FLAG_LOST, 0).astype(np.int32)}
    cols, counts = merge(sender, receiver, {}, 7)
    record = RunRecord(
        run_id=new_run_id(), name=NAME, tags=("benchmark",),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds"), status="complete",
        config={"period_ns": period, "count": n, "topology": "synthetic"}, environment={},
        completeness=counts, summary={}, source={"kind": "synthetic", "metric": "one-way latency"},
    )
    return store.save(record, cols).run_id


def measure(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}: {proc.stderr.read().decode() if proc.stderr else ''}")
    return wall, usage.ru_maxrss / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=10_000_000)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/latscope-bench"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--make-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.make_only:
        print(make_run(args.dir, args.packets))
        return 0
    # The run is made in a child: a parent that once held gigabytes would pass
    # its peak RSS on to every child it forks (ru_maxrss survives exec).
    t0 = time.perf_counter()
    made_by = subprocess.run([sys.executable, __file__, "--make-only", "--packets", str(args.packets),
                              "--dir", str(args.dir)], capture_output=True, text=True, check=True)
    run_id = made_by.stdout.split()[-1]
    made = time.perf_counter() - t0
    run_dir = args.dir / run_id
    size = (run_dir / "samples.parquet").stat().st_size
    env = {**os.environ, "LATSCOPE_RESULTS": str(args.dir)}
    latscope = str(BIN / "latscope")
    cases = {
        "baseline: read the Parquet columns of show (pyarrow -> numpy)":
            [sys.executable, "-c", BASELINE, str(run_dir / "samples.parquet"), ",".join(SHOW_COLUMNS)],
        "latscope show RUN": [latscope, "show", run_id],
        "latscope show RUN --json": [latscope, "show", run_id, "--json"],
        "latscope show RUN --histogram --window 1s --worst 20": [
            latscope, "show", run_id, "--histogram", "--window", "1s", "--worst", "20"],
        "latscope show RUN --from 1h --to 2h": [latscope, "show", run_id, "--from", "1h", "--to", "2h"],
    }
    print(f"run {run_id}: {args.packets} packets, samples.parquet {size / 2**20:.1f} MiB "
          f"(made or found in {made:.1f} s), {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print(f"| case | wall s (median of {args.repeat}) | wall s (min) | peak RSS MiB (max) |")
    print("|---|---:|---:|---:|")
    for label, cmd in cases.items():
        results = [measure(cmd, env) for _ in range(args.repeat)]
        walls = [w for w, _ in results]
        print(f"| {label} | {statistics.median(walls):.2f} | {min(walls):.2f} | {max(r for _, r in results):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
