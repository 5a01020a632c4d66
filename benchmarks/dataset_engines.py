#!/usr/bin/env python3
"""Benchmark: per-host p99.9 (and loss) over a 100-million-packet dataset with DuckDB, Spark local and Dask.

Issue 12: `latscope sql` must answer it within this machine's memory; Spark and
Dask read the same files unchanged. The fleet is synthetic but shaped like
measurements: --hosts hosts, each with runs of up to 12.5 M packets at 1 kHz
(heavy-tailed, serially correlated latencies, 1 % loss), stored with the real
store and exported with `latscope export --dataset`. Every engine answers the
same query on the same files in a fresh process; wall time and peak RSS
(the larger of ru_maxrss via wait4 and the process tree's total RSS sampled
every 0.2 s, which covers Spark's JVM) are taken from the outside, and the
answers must agree to the nanosecond.

    .venv/bin/python benchmarks/dataset_engines.py [--packets 100000000] [--hosts 4] \\
        [--dir /var/tmp/latscope-dataset-bench] [--keep] [--engines duckdb,dask,spark]

The directory (store and dataset, a few GB) is removed at the end unless --keep.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent
RUN_PACKETS = 12_500_000
HOUR = 3_600_000_000_000
QUERY = ("SELECT host, count(*) AS packets, count(*) FILTER (WHERE lost) AS lost, "
         "count(*) FILTER (WHERE lost) / count(*) AS loss, quantile_cont(latency_ns, 0.999) / 1e3 AS p999_us, "
         "max(latency_ns) / 1e3 AS max_us FROM samples GROUP BY host ORDER BY host")


def generate(store: Path, packets: int, hosts: int) -> None:
    from tests.support import BASE_NS, ar1_lognormal, synthetic_run

    rng = np.random.default_rng(2026)
    per_host = packets // hosts
    for h in range(hosts):
        done, start = 0, BASE_NS + h * 7 * 60_000_000_000  # hosts start 7 minutes apart
        while done < per_host:
            n = min(RUN_PACKETS, per_host - done)
            latency = np.round(ar1_lognormal(rng, n, 0.8, 35_000, 0.5)).astype(np.int64)
            lost = rng.random(n) < 0.01
            t0 = time.monotonic()
            synthetic_run(store, latency, period_ns=1_000_000, lost=lost, base_ns=start,
                          environment={"before": {"kernel": {"hostname": f"host-{h}"}}}, name=f"host-{h}")
            print(f"  host-{h}: run of {n} packets stored in {time.monotonic() - t0:.1f} s", file=sys.stderr)
            done += n
            start += n * 1_000_000 + 60_000_000_000


def _tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and all its descendants now (Spark's JVM is a child of the Python driver)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                parents[int(entry)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/statm") as fh:
                rss[int(entry)] = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == pid and c not in tree]
        tree.update(kids)
        frontier.extend(kids)
    return sum(rss.get(pid, 0) for pid in tree)


def measure(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (GiB) and stdout of a fresh process.

    The peak is the larger of wait4's ru_maxrss (the child and the descendants
    it waited for) and the highest total RSS of its process tree sampled every
    0.2 s: pyspark does not wait for its JVM, so wait4 alone misses it.
    """
    import threading

    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            peak[0] = max(peak[0], _tree_rss(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    # communicate() reaps the child itself; read the pipes first (in threads: both may fill), then wait4.
    assert proc.stdout is not None and proc.stderr is not None
    chunks: dict[str, str] = {}
    readers = [threading.Thread(target=lambda n=n, f=f: chunks.__setitem__(n, f.read()))
               for n, f in (("out", proc.stdout), ("err", proc.stderr))]
    for t in readers:
        t.start()
    for t in readers:
        t.join()
    _pid, status, usage = os.wait4(proc.pid, 0)
    done.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({proc.returncode}):\n{chunks['err'][-3000:]}")
    return wall, max(usage.ru_maxrss * 1024, peak[0]) / 2**30, chunks["out"]


def rows(text: str) -> list[tuple[str, int, int, float]]:
    table = list(csv.DictReader(io.StringIO(text)))
    return [(r["host"], int(r["packets"]), int(r["lost"]), float(r["p999_us"])) for r in table]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=100_000_000)
    ap.add_argument("--hosts", type=int, default=4)
    ap.add_argument("--dir", type=Path, default=Path("/var/tmp/latscope-dataset-bench"))
    ap.add_argument("--keep", action="store_true", help="keep the store and dataset")
    ap.add_argument("--engines", default="duckdb,dask,spark")
    ap.add_argument("--spark-memory", default="8g")
    ap.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    store, dataset = args.dir / "store", args.dir / "dataset"
    try:
        if args.generate_only:
            generate(store, args.packets, args.hosts)
            return 0
        if not (dataset / "_latscope_dataset.json").exists():
            print(f"generating {args.packets} packets on {args.hosts} hosts in {store}", file=sys.stderr)
            t0 = time.monotonic()
            # In a process of its own: a child started later by this (then big) process would count its memory
            # in its own peak RSS (exec inherits the high-water mark of the mm it replaces).
            subprocess.run([sys.executable, __file__, "--generate-only", "--keep", "--packets", str(args.packets),
                            "--hosts", str(args.hosts), "--dir", str(args.dir)], check=True)
            print(f"generated in {time.monotonic() - t0:.0f} s", file=sys.stderr)
            wall, rss, _ = measure([str(BIN / "latscope"), "export", "--dataset", str(dataset), "--results", str(store)])
            files = sum(1 for _ in (dataset / "samples").rglob("*.parquet"))
            size = sum(f.stat().st_size for f in (dataset / "samples").rglob("*.parquet")) / 2**30
            print(f"export: {wall:.1f} s, peak RSS {rss:.2f} GiB, {files} files, {size:.2f} GiB", flush=True)
        commands = {
            "duckdb": [str(BIN / "latscope"), "sql", "--dataset", str(dataset), "--csv", QUERY],
            "dask": [sys.executable, str(ROOT / "examples/dataset_dask.py"), str(dataset), "--by", "host", "--csv"],
            "spark": [sys.executable, str(ROOT / "examples/dataset_spark.py"), str(dataset), "--by", "host", "--csv",
                      "--memory", args.spark_memory],
        }
        answers = {}
        for engine in args.engines.split(","):
            wall, rss, out = measure(commands[engine])
            answers[engine] = rows(out)
            total = sum(r[1] for r in answers[engine])
            print(f"{engine:7s} {wall:7.1f} s  peak RSS {rss:5.2f} GiB  ({total} packets)", flush=True)
            for r in answers[engine]:
                print(f"          {r[0]}: {r[1]} packets, {r[2]} lost, p99.9 {r[3]:.3f} us", flush=True)
        first = next(iter(answers.values()))
        for engine, got in answers.items():
            same = [(h, p, lo) for h, p, lo, _ in got] == [(h, p, lo) for h, p, lo, _ in first] and all(
                abs(a[3] - b[3]) < 1e-3 for a, b in zip(got, first, strict=True))
            print(f"{engine}: {'agrees' if same else 'DISAGREES'} with {next(iter(answers))}")
            if not same:
                return 1
    finally:
        if not args.keep:
            shutil.rmtree(args.dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
