#!/usr/bin/env python3
"""Benchmark: what the campaign runner costs per run, against the runs' own time.

    sudo .venv/bin/python benchmarks/campaign_overhead.py [--runs 8] [--count 2000] [--dir /tmp/latscope-bench-campaign]

Makes a campaign of ``--runs`` runs (one factor with two levels, veth
namespaces, ``--count`` packets at 1 ms) in a fresh results root, then reads
its state file and the stored runs, and splits the wall time of
`latscope campaign run` into:

* stream: the runs' measured time (count x period: what the user asked for);
* `latscope run` process: each run process from start to exit (its own set-up
  and teardown: interpreter, namespaces, workers, storing), the baseline a
  hand-written loop of `latscope run` commands would also pay;
* runner: everything else: the campaign's checks of every cell before the
  first run, and between runs (state writes, progress, spawning).

The baseline in the same invocation: the same runs made by a shell-free loop of
`latscope run` processes (subprocess.run one after another) without a campaign.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent / "latscope"


def parse_time(text: str) -> float:
    return _dt.datetime.fromisoformat(text).timestamp()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/latscope-bench-campaign"))
    a = ap.parse_args()
    if a.runs % 2:
        ap.error("--runs must be even (two levels)")
    shutil.rmtree(a.dir, ignore_errors=True)
    a.dir.mkdir(parents=True)
    camp = a.dir / "bench.toml"
    camp.write_text(f'name = "bench"\nrepeats = {a.runs // 2}\n[base]\ntopology = "veth"\ncount = {a.count}\n'
                    '[factors]\nsize = { small = {}, big = { size = 512 } }\n')
    results = a.dir / "results"
    t0 = time.monotonic()
    subprocess.run([str(BIN), "campaign", "run", str(camp), "--results", str(results)], check=True,
                   stderr=subprocess.DEVNULL)
    campaign_wall = time.monotonic() - t0
    state = json.loads((results / ".campaigns" / "bench" / "state.json").read_text())
    attempts = [e["attempts"][-1] for e in state["runs"].values()]
    process = [parse_time(x["ended"]) - parse_time(x["started"]) for x in attempts]
    stream = a.count * 1e-3
    runner = campaign_wall - sum(process)

    base_results = a.dir / "baseline"
    t0 = time.monotonic()
    for i in range(a.runs):
        extra = ["--size", "512"] if i % 2 else []
        subprocess.run([str(BIN), "run", "--topology", "veth", "--count", str(a.count), "--quiet", "--json",
                        "--results", str(base_results), *extra], check=True, stdout=subprocess.DEVNULL)
    loop_wall = time.monotonic() - t0

    print(f"{a.runs} runs of {a.count} packets at 1 ms (stream {stream:.1f} s each) on veth")
    print(f"campaign run:   {campaign_wall:7.1f} s wall")
    print(f"  run processes {sum(process):7.1f} s  (median {statistics.median(process):.2f} s per run: "
          f"stream {stream:.2f} s + set-up/teardown {statistics.median(process) - stream:.2f} s)")
    print(f"  runner        {runner:7.1f} s  ({runner / a.runs:.2f} s per run: checks, state, spawning)")
    print(f"baseline loop:  {loop_wall:7.1f} s wall ({loop_wall / a.runs:.2f} s per run)")
    print(f"campaign - loop: {(campaign_wall - loop_wall) / a.runs:+.2f} s per run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
