#!/usr/bin/env python3
"""Benchmark: a report's two figures of one run, with log axes labelled as plain text or as mathtext.

    .venv/bin/python benchmarks/report_figures.py [--repeat 3]

Each measurement is a fresh process (matplotlib's caches and its mathtext
parser start cold, as in `latscope report`), interleaved: the latency series
with its histogram and the CCDF of 60,000 gamma-distributed values with a
200x outlier every 5,000 packets (both log axes), each rendered to SVG by
``report.figures.svg``. ``mathtext`` puts matplotlib's default log formatter
back in place of ``PlainLogFormatter``. Prints CPU seconds per process.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

CHILD = """
import sys, time
import numpy as np
from latscope.report import figures
if sys.argv[1] == "mathtext":
    from matplotlib.ticker import LogFormatterSciNotation
    figures.PlainLogFormatter = LogFormatterSciNotation
y = np.random.default_rng(1).gamma(4, 20, 60_000)
y[::5000] *= 200
t = np.arange(60_000) / 1000
t0 = time.process_time()
figures.svg(figures.series_with_histogram(t, y, "run"))
figures.svg(figures.ccdf([("a", y), ("b", y * 1.1)]))
print(f"{time.process_time() - t0:.3f}")
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    got: dict[str, list[float]] = {"mathtext": [], "plain": []}
    for _ in range(args.repeat):
        for mode, times in got.items():
            out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True)
            times.append(float(out.stdout))
    for mode, v in got.items():
        print(f"{mode:<9} figures CPU s: min {min(v):.3f}  median {sorted(v)[len(v) // 2]:.3f}  "
              f"max {max(v):.3f}  ({time.strftime('%Y-%m-%d')}, {len(v)} fresh processes)")


if __name__ == "__main__":
    main()
