"""Where a windowed `latscope breakdown` of a stored run spends its time, phase by phase.

    .venv/bin/python benchmarks/breakdown_phases.py --results /tmp/bd15 RUN

Runs the steps of latscope.trace.breakdown.analyse_run's windowed path one
after the other in this process (scan, row selection, decode, timeline,
analysis) and prints CPU and wall seconds and the peak RSS after each, and
how many rows each selection kept. The breakdown itself is that of
`latscope breakdown RUN --json` (default options); it is not printed.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np

from latscope.store.layout import ResultsStore
from latscope.trace import window
from latscope.trace.breakdown import Options, _metric_values, _threshold, analyse, load_run_steal


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--results", required=True)
    args = ap.parse_args()
    run = ResultsStore(Path(args.results)).resolve(args.run)
    mark = [time.process_time(), time.monotonic()]

    def lap(name: str) -> None:
        now = [time.process_time(), time.monotonic()]
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        print(f"{name:12s} cpu {now[0] - mark[0]:7.1f} s  wall {now[1] - mark[1]:7.1f} s  peak RSS {rss:5.2f} GB",
              flush=True)
        mark[:] = now

    samples = run.samples()
    lap("samples")
    sc = window.scan(run.path / "trace" / "events.parquet")
    lap("scan")
    sender, receiver = sc.marker_pids()
    off = int(sc.meta["to_realtime_ns"])
    values = _metric_values(samples, "e2e")
    valid = ~np.isnan(values)
    threshold, _source = _threshold(values[valid], None)
    late = np.flatnonzero(valid & (values > threshold))
    bounds = window.packet_windows(samples, late, -off)
    assert bounds is not None
    path = sc.path_rows(sender, receiver)
    lap("path rows")
    win = sc.window_rows(*bounds)
    lap("window rows")
    print(f"events {len(sc)}  path rows {int(path.sum())}  window rows {int(win.sum())}  "
          f"read {int((path | win).sum())}  late (by the samples) {len(late)}")
    table = sc.read(path | win)
    lap("decode")
    del sc, path, win
    bd = analyse(table, samples, Options(), run_id=run.run_id, steal=load_run_steal(run.path))
    lap("analyse")
    print(f"late {bd.late_count}  explained {len(bd.late)}")


if __name__ == "__main__":
    main()
