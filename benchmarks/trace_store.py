"""Store a traced run's pages again, as ``run --trace`` does after the run: time, CPU and memory (issue 11).

    .venv/bin/python benchmarks/trace_store.py RUN_DIR [--workers N] [--chunk-pages N]

Reads RUN_DIR/trace/ring.zst and ring.json and writes the events table to a
temporary file (the run is not changed), through latscope.trace.ringstore
(worker processes decode chunks; this process merges them by time and
writes events.parquet a slice at a time). The page file is first read once
to count each CPU's pages (``run --trace`` counts them while writing it, so
that pass is timed apart). Prints one JSON document: events, wall seconds,
CPU seconds of this process and of the workers, the peak RSS of this
process and of the largest worker, the load average.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--workers", type=int)
    ap.add_argument("--chunk-pages", type=int)

    args = ap.parse_args()
    from latscope.trace import binary, ringstore
    from latscope.trace import stream as st

    tdir = args.run / "trace"
    ring = binary.RingMeta.from_json(json.loads((tdir / "ring.json").read_bytes()))
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    t, c = time.monotonic(), time.process_time()
    index = st.ring_index(tdir / "ring.zst")
    res: dict[str, object] = {"index_pass_s": round(time.monotonic() - t, 3),
                              "index_pass_cpu_s": round(time.process_time() - c, 3)}
    with tempfile.TemporaryDirectory(prefix="latscope-trace-store-", dir="/var/tmp") as tmp:
        out = Path(tmp) / "events.parquet"
        k0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t, c = time.monotonic(), time.process_time()
        kw = {"chunk_pages": args.chunk_pages} if args.chunk_pages else {}
        meta = ringstore.store_ring(tdir / "ring.zst", ring, out, kallsyms=binary.Kallsyms.load(), index=index,
                                    workers=args.workers, **kw)
        wall, cpu = time.monotonic() - t, time.process_time() - c
        k1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        res.update({
            "events": meta["parse"]["events"], "pages": meta["parse"]["pages"], "wall_s": round(wall, 3),
            "cpu_s": round(cpu, 3),
            "workers_cpu_s": round(k1.ru_utime + k1.ru_stime - k0.ru_utime - k0.ru_stime, 3),
            "us_cpu_per_event": round((cpu + k1.ru_utime + k1.ru_stime - k0.ru_utime - k0.ru_stime)
                                      / max(1, meta["parse"]["events"]) * 1e6, 3),
            "events_parquet_bytes": out.stat().st_size, "store": meta["store"],
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
            "peak_rss_worker_mib": k1.ru_maxrss // 1024,
            "loadavg_before": load_before, "loadavg_after": Path("/proc/loadavg").read_text().split()[:3]})
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
