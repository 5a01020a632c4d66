"""Trace parsing and breakdown speed (issue 3, item 7).

    sudo .venv/bin/python benchmarks/trace_parse.py capture [--seconds 60] [--dir DIR]
    .venv/bin/python benchmarks/trace_parse.py measure [--repeat 3] [--dir DIR]
    .venv/bin/python benchmarks/trace_parse.py parse TEXT RAW OUT      (one case of measure, on its own)

``capture`` (root, tracefs, trace-cmd) records two one-minute 1 kHz veth runs:

* ``DIR/results``: ``latscope run --trace`` (sender CPU 0, receiver CPU 1),
  the run whose breakdown is timed;
* ``DIR/trace.txt``, ``trace.raw``, ``trace.dat``, ``trace.report``: a run
  traced into a private instance with latscope's default events, read as
  the kernel's text and its raw rendering, and extracted with
  ``trace-cmd extract`` (in a private mount namespace where the top-level
  tracefs files it writes are scratch files) and rendered with
  ``trace-cmd report``: the same events in both text formats.

``measure`` times, on those files, in one invocation (best and median of
``--repeat``, wall and process CPU seconds):

* baselines: ``wc -l``; Python iterating over the lines; a straightforward
  Python parser (one regular expression per line, fields converted per line);
* ``trace-cmd report`` rendering trace.dat to text (its lines per second);
* latscope's parsers in process on data in memory: kernel text, kernel text + raw nanoseconds (what
  ``run --trace`` does), trace-cmd report;
* like for like with ``trace-cmd report``, a fresh process reading files: ``trace_parse.py parse``
  reads trace.txt and trace.raw, parses them as ``run --trace`` does and writes events.parquet;
* ``latscope breakdown RUN --json`` of the traced one-minute run (end to end,
  a fresh process) and the analysis alone.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

DEFAULT_DIR = Path("/var/tmp/latscope-trace-bench")
LATSCOPE = str(Path(sys.executable).parent / "latscope")

MASK = r"""
set -euo pipefail
T=/sys/kernel/tracing; d=$(mktemp -d)
echo 1 > $d/on; echo nop > $d/tracer; : > $d/empty; echo 0 > $d/zero
mount --bind $d/on $T/tracing_on; mount --bind $d/tracer $T/current_tracer
mount --bind $d/empty $T/trace; mount --bind $d/zero $T/events/enable
for f in $T/events/*/filter; do mount --bind $d/empty "$f"; done
trace-cmd extract -B "$1" -o "$2" >/dev/null 2>&1
"""


def capture(out: Path, seconds: int) -> None:
    from latscope.probe.config import MeasureConfig
    from latscope.session import measure
    from latscope.store.layout import ResultsStore
    from latscope.trace import events as ev
    from latscope.trace import tracefs

    out.mkdir(parents=True, exist_ok=True)
    count = seconds * 1000
    r = subprocess.run([LATSCOPE, "run", "--trace", "--count", str(count), "--cpu-send", "0", "--cpu-recv", "1",
                        "-q", "--json", "--results", str(out / "results"), "--name", "bench"],
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(r.stderr)
    doc = json.loads(r.stdout)
    (out / "run.json").write_text(json.dumps({"run_id": doc["run_id"], "trace": doc.get("trace")}, indent=1))

    inst = tracefs.Instance.create(tracefs.find_tracefs(), "bench")
    try:
        inst.write("trace_clock", "tai")
        inst.write("buffer_size_kb", str(512 * 1024))
        for spec in ev.resolve(None):
            rel = f"events/{spec.group}/{spec.event}/enable"
            if inst.exists(rel):
                inst.write(rel, "1")
        inst.write("tracing_on", "1")

        class Marker:
            def start(self, workdir, path):
                return {"trace_marker": str(inst.path / "trace_marker")}

            def stop(self, workdir):
                return {"record": {}, "completeness": {}}

            def close(self):
                pass

        measure(MeasureConfig(topology="veth", count=count, cpu_send=0, cpu_recv=1), ResultsStore(out / "scratch"),
                captures=(Marker(),))
        inst.write("tracing_on", "0")
        (out / "trace.txt").write_bytes(inst.read_bytes("trace"))
        inst.write("options/raw", "1")
        (out / "trace.raw").write_bytes(inst.read_bytes("trace"))
        inst.write("options/raw", "0")
        subprocess.run(["unshare", "-m", "--propagation", "private", "bash", "-c", MASK, "mask", inst.name,
                        str(out / "trace.dat")], check=True)
    finally:
        inst.remove()
    with open(out / "trace.report", "wb") as fh:
        subprocess.run(["trace-cmd", "report", "-i", str(out / "trace.dat")], stdout=fh, stderr=subprocess.DEVNULL,
                       check=True)


def timed(fn: Callable[[], object], repeat: int) -> tuple[list[float], list[float]]:
    walls, cpus = [], []
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return walls, cpus


def child(argv: list[str], repeat: int, stdout=subprocess.DEVNULL) -> tuple[list[float], list[float]]:
    """Wall and CPU (user+sys, from wait4) seconds of a child process."""
    walls, cpus = [], []
    for _ in range(repeat):
        w = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.DEVNULL)
        _pid, status, usage = os.wait4(proc.pid, 0)
        walls.append(time.perf_counter() - w)
        cpus.append(usage.ru_utime + usage.ru_stime)
        if status != 0:
            raise SystemExit(f"{argv[0]} failed ({status})")
    return walls, cpus


def count_lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for _ in fh)


NAIVE = re.compile(r"^\s*(.*?)-(\d+)\s+\[(\d+)\]\s+(\S+)\s+(\d+)\.(\d+): (\w+)(?:: |\(| -> )(.*)$")


def naive_parse(path: Path) -> int:
    """What one would write first: a regular expression per line, numbers converted per line."""
    n = 0
    rows = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            m = NAIVE.match(line)
            if m:
                rows.append((int(m.group(2)), int(m.group(3)), int(m.group(5)) * 1_000_000 + int(m.group(6)),
                             m.group(7), m.group(8)))
                n += 1
    return n


def measure(d: Path, repeat: int) -> dict:
    from latscope.store.layout import ResultsStore
    from latscope.trace.breakdown import Options, analyse, load_run_table
    from latscope.trace.parse_text import parse_kernel_text
    from latscope.trace.parse_tracecmd import parse_tracecmd_report

    text = (d / "trace.txt").read_bytes()
    raw = (d / "trace.raw").read_bytes()
    report = (d / "trace.report").read_bytes()
    n_text = text.count(b"\n")
    n_report = report.count(b"\n")
    rows: list[dict] = []

    def add(case: str, lines: int, t: tuple[list[float], list[float]]) -> None:
        walls, cpus = t
        med = statistics.median(walls)
        rows.append({"case": case, "lines": lines, "wall_min_s": min(walls), "wall_median_s": med,
                     "cpu_min_s": min(cpus), "lines_per_s_best": lines / min(walls) if lines else None,
                     "lines_per_s_median": lines / med if lines else None})
        print(f"{case:58s} {min(walls):8.3f} {med:8.3f} {min(cpus):8.3f}"
              + (f" {lines / min(walls) / 1e6:8.2f} (best) {lines / med / 1e6:8.2f} (median) M lines/s"
                 if lines else ""), flush=True)

    load_before = os.getloadavg()
    print(f"trace.txt: {n_text} lines, {len(text) / 2**20:.1f} MiB; trace.report: {n_report} lines; "
          f"load average {load_before[0]:.2f}")
    print(f"{'case':58s} {'wall min':>8s} {'median':>8s} {'cpu min':>8s}")
    add("baseline: wc -l trace.txt", n_text, child(["wc", "-l", str(d / "trace.txt")], repeat))
    add("baseline: Python, iterate over the lines",
        n_text, timed(lambda: count_lines(d / "trace.txt"), repeat))
    add("baseline: Python, one regex per line (naive parser)", n_text, timed(lambda: naive_parse(d / "trace.txt"),
                                                                              max(1, repeat // 2)))
    add("trace-cmd report -i trace.dat > /dev/null", n_report,
        child(["trace-cmd", "report", "-i", str(d / "trace.dat")], repeat))
    add("latscope: kernel text", n_text, timed(lambda: parse_kernel_text(text), repeat))
    add("latscope: kernel text + raw nanoseconds", n_text, timed(lambda: parse_kernel_text(text, raw), repeat))
    add("latscope: trace-cmd report text", n_report, timed(lambda: parse_tracecmd_report(report), repeat))
    scratch = d / "events.parquet"
    add("latscope, fresh process: trace.txt + trace.raw -> events.parquet", n_text,
        child([sys.executable, __file__, "parse", str(d / "trace.txt"), str(d / "trace.raw"), str(scratch)], repeat))
    scratch.unlink(missing_ok=True)
    run_id = json.loads((d / "run.json").read_text())["run_id"]
    results = d / "results"
    run = ResultsStore(results).resolve(run_id)
    events = len(load_run_table(run.path))
    add(f"latscope breakdown RUN --json (60 s run, {events} events, fresh process)", 0,
        child([LATSCOPE, "breakdown", run_id, "--json", "--results", str(results)], repeat))
    add("latscope: read events.parquet + analyse (in process)", 0,
        timed(lambda: analyse(load_run_table(run.path), run.samples(), Options()), repeat))
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    return {"lines_text": n_text, "lines_report": n_report, "events_run": events, "rows": rows,
            "load_average": [load_before[0], os.getloadavg()[0]],
            "capture": json.loads((d / "run.json").read_text()).get("trace")}


def parse_files(text: Path, raw: Path, out: Path) -> None:
    """What ``run --trace`` does after reading the instance: parse text + raw, write events.parquet."""
    from latscope.trace.parse_text import parse_kernel_text
    from latscope.trace.table import write_table

    write_table(parse_kernel_text(text.read_bytes(), raw.read_bytes()), out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("capture")
    c.add_argument("--seconds", type=int, default=60)
    c.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    m = sub.add_parser("measure")
    m.add_argument("--repeat", type=int, default=3)
    m.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    p = sub.add_parser("parse", help="parse TEXT + RAW into OUT (events.parquet): the fresh-process case")
    p.add_argument("text", type=Path)
    p.add_argument("raw", type=Path)
    p.add_argument("out", type=Path)
    args = ap.parse_args()
    if args.cmd == "parse":
        parse_files(args.text, args.raw, args.out)
    elif args.cmd == "capture":
        if os.geteuid() != 0:
            raise SystemExit("capture needs root")
        capture(args.dir, args.seconds)
    else:
        doc = measure(args.dir, args.repeat)
        (args.dir / "measure.json").write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
