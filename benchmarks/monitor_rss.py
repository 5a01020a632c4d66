"""Memory and CPU of `latscope monitor` over a bounded run: RSS (and PSS) of the controller and its workers.

    .venv/bin/python benchmarks/monitor_rss.py --period 1ms --seconds 600 --interval 60s

Starts the monitor on veth into a temporary directory, samples every --every seconds the RSS and PSS
(/proc/PID/smaps_rollup) and CPU time (utime+stime) of the controller and each worker, stops it with
SIGTERM, and prints one JSON document: the samples, the peaks, CPU seconds per process and the rows
stored. PSS splits the shared-memory rings between the processes that map them; RSS counts them in each.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def mem_kib(pid: int) -> tuple[int, int]:
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--period", default="1ms")
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--interval", default="60s")
    ap.add_argument("--every", type=float, default=10.0)
    args = ap.parse_args()
    out = Path(tempfile.mkdtemp(prefix="latscope-monitor-bench-"))
    proc = subprocess.Popen([str(BIN / "latscope"), "monitor", str(out), "--period", args.period,
                             "--interval", args.interval], stderr=subprocess.PIPE, text=True)
    samples = []
    cpu: dict[int, float] = {}
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < args.seconds and proc.poll() is None:
            time.sleep(args.every)
            pids = [proc.pid, *children(proc.pid)]
            row = {"t_s": round(time.monotonic() - t0, 1)}
            for pid in pids:
                rss, pss = mem_kib(pid)
                role = "controller" if pid == proc.pid else f"worker-{pid}"
                row[f"{role}_rss_kib"], row[f"{role}_pss_kib"] = rss, pss
                cpu[pid] = cpu_s(pid)
            row["total_rss_kib"] = sum(v for k, v in row.items() if k.endswith("_rss_kib"))
            row["total_pss_kib"] = sum(v for k, v in row.items() if k.endswith("_pss_kib"))
            samples.append(row)
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    elapsed = time.monotonic() - t0
    import pyarrow.parquet as pq

    files = sorted(out.glob("samples/host=*/date=*/hour=*/*.parquet"))
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    size = sum(f.stat().st_size for f in files)
    doc = {
        "period": args.period, "seconds": round(elapsed, 1), "exit": proc.returncode, "files": len(files),
        "rows": rows, "bytes_on_disk": size,
        "peak_total_rss_kib": max((s["total_rss_kib"] for s in samples), default=0),
        "peak_total_pss_kib": max((s["total_pss_kib"] for s in samples), default=0),
        "first_total_pss_kib": samples[0]["total_pss_kib"] if samples else 0,
        "last_total_pss_kib": samples[-1]["total_pss_kib"] if samples else 0,
        "cpu_s_by_pid_at_last_sample": {str(k): round(v, 2) for k, v in cpu.items()},
        "cpu_s_total": round(sum(cpu.values()), 2),
        "samples": samples, "stderr_tail": err.splitlines()[-3:],
    }
    print(json.dumps(doc, indent=1))
    shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
