"""Storing a run's trace: the kernel's text rendering parsed back vs the ring-buffer pages decoded (issue 11).

    sudo .venv/bin/python benchmarks/trace_binary.py [--seconds 60] [--out FILE]

Records one 1 kHz veth run of ``--seconds`` (sender CPU 0, receiver CPU 1)
into a private instance with latscope's default events and a buffer that
holds the whole run, stops tracing, and then stores the same buffer both
ways in this one invocation:

* text (what ``run --trace`` did before): read the ``trace`` file, read it
  again with the ``raw`` option (nanoseconds), compress the text (zstd),
  parse it (latscope.trace.parse_text), write events.parquet;
* binary (what it does now): drain every CPU's ``trace_pipe_raw`` (this
  consumes the buffer, so it comes second; the ``trace`` file does not
  consume) a few hundred pages per CPU in turn, as the streaming reader's
  drains interleave them, into ring.zst; then store it as ``run --trace``
  does (latscope.trace.ringstore: chunks decoded by worker processes,
  merged by time, events.parquet written a slice at a time).

Then it checks that the two tables are the same, row by row and field by
field (pointer fields: the same cells share a value as share an address in
the text, and none is the address), and prints one JSON document with the
timings (wall and the CPU seconds of this process and of the decoding
workers; the machine is shared, so the CPU seconds are the steadier
figure) and the peak RSS of this process and of its largest child (the
run's sender and receiver, or a decoding worker).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def cpu_s() -> tuple[float, float]:
    """CPU seconds (user + system) of this process and of its finished children."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def same_tables(a: Any, b: Any, racing_pids: set[int] | frozenset[int] = frozenset(),
                pointers: dict[str, list[int]] | None = None) -> dict[str, int]:
    """Rows that differ, per column (strings and names compared as text); comms of ``racing_pids``, whose
    entry in the kernel's shared pid -> comm map another tracer changed while the text was rendered, apart.
    ``pointers`` (event -> nums columns): cells ``a`` holds mixed and ``b`` as addresses, compared as a
    bijection (``pointer_pairs`` not a bijection, ``pointer_unmixed``: cells that are the address)."""
    if len(a) != len(b):
        return {"rows": abs(len(a) - len(b))}
    mask = np.zeros(a.nums.shape, bool)
    for name, where in (pointers or {}).items():
        mask[np.ix_(a.rows(name), where)] = True

    def cols(t: Any) -> dict[str, np.ndarray]:
        s = np.array([*t.strings, None], dtype=object)
        e = np.array(t.event_names, dtype=object)
        return {"ts": t.ts, "cpu": t.cpu, "pid": t.pid, "comm": s[t.comm], "event": e[t.event], "ctx": t.ctx,
                "nums": t.nums, "s0": s[t.strs[:, 0]], "s1": s[t.strs[:, 1]]}

    x, y = cols(a), cols(b)
    out = {}
    racing = np.isin(a.pid, np.asarray(sorted(racing_pids), np.int32))
    for k in x:
        diff = x[k] != y[k]
        if k == "nums":
            diff &= ~mask
        diff = diff.any(axis=1) if diff.ndim > 1 else diff
        if k == "comm":
            out["comm_of_racing_pids"] = int((diff & racing).sum())
            diff &= ~racing
        out[k] = int(diff.sum())
    stored, addr = a.nums[mask], b.nums[mask]
    pairs = np.unique(np.stack([stored, addr]), axis=1).shape[1] if len(stored) else 0
    out["pointer_cells"] = int(mask.sum())
    out["pointer_pairs_not_a_bijection"] = int(pairs - len(np.unique(addr))) + int(pairs - len(np.unique(stored)))
    out["pointer_unmixed"] = int(((stored == addr) & (addr != 0)).sum())
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--workers", type=int, help="decoding processes (default: one per CPU, at most 4)")
    args = ap.parse_args()

    import pyarrow as pa

    from latscope.files import atomic_output
    from latscope.probe.config import MeasureConfig
    from latscope.session import measure
    from latscope.store.layout import ResultsStore
    from latscope.trace import binary, capture, ringstore, stream, tracefs
    from latscope.trace import events as ev
    from latscope.trace.parse_text import parse_kernel_text
    from latscope.trace.table import read_table, write_table

    work = Path(tempfile.mkdtemp(prefix="latscope-trace-binary-", dir="/var/tmp"))
    root = tracefs.find_tracefs()
    res_load = Path("/proc/loadavg").read_text().split()[:3]
    inst = tracefs.Instance.create(root, "bench")
    res: dict[str, Any] = {"seconds": args.seconds}
    try:
        inst.write("trace_clock", "tai")
        for opt, value in capture.OPTIONS.items():
            if inst.exists(f"options/{opt}"):
                inst.write(f"options/{opt}", value)
        inst.write("buffer_size_kb", str(512 * 1024))
        specs = [s for s in ev.resolve(None) if inst.exists(f"events/{s.group}/{s.event}/enable")]
        for s in specs:
            inst.write(f"events/{s.group}/{s.event}/enable", "1")
        formats = capture.event_formats(inst, specs)
        page_size = capture.subbuf_bytes(inst)
        inst.write("tracing_on", "1")

        class Marker:
            def start(self, workdir: Path, path: Any) -> dict[str, Any]:
                return {"trace_marker": str(inst.path / "trace_marker")}

            def stop(self, workdir: Path) -> dict[str, Any]:
                return {"record": {}, "completeness": {}}

            def close(self) -> None:
                pass

        measure(MeasureConfig(topology="veth", count=args.seconds * 1000, cpu_send=0, cpu_recv=1),
                ResultsStore(work / "scratch"), captures=(Marker(),))
        inst.write("tracing_on", "0")
        stats = tracefs.cpu_stats(inst)
        res["entries"] = sum(s.entries for s in stats)
        res["overruns"] = sum(s.lost for s in stats)

        # -- text: what run --trace did before ------------------------------------
        before = tracefs.saved_cmdlines(root)
        t0, c0 = time.perf_counter(), time.process_time()
        tt: dict[str, float] = {}
        t = time.perf_counter()
        text = inst.read_bytes("trace")
        tt["read_text_s"] = time.perf_counter() - t
        t = time.perf_counter()
        inst.write("options/raw", "1")
        raw = inst.read_bytes("trace")
        inst.write("options/raw", "0")
        tt["read_raw_s"] = time.perf_counter() - t
        cmdlines = tracefs.saved_cmdlines(root)   # the map the text was rendered with
        t = time.perf_counter()
        with atomic_output(work / "trace.txt.zst") as fh, pa.CompressedOutputStream(fh, "zstd") as z:
            z.write(text)
        tt["compress_s"] = time.perf_counter() - t
        t = time.perf_counter()
        text_table = parse_kernel_text(text, raw)
        tt["parse_s"] = time.perf_counter() - t
        t = time.perf_counter()
        write_table(text_table, work / "text-events.parquet")
        tt["write_table_s"] = time.perf_counter() - t
        tt["total_s"] = time.perf_counter() - t0
        tt["total_cpu_s"] = time.process_time() - c0
        res["text"] = {**{k: round(v, 3) for k, v in tt.items()}, "text_bytes": len(text),
                       "events": len(text_table)}
        del text, raw

        # -- binary: what run --trace does now -----------------------------------
        t0, (c0, k0) = time.perf_counter(), cpu_s()
        tb: dict[str, float] = {}
        t = time.perf_counter()
        pipes = stream.CpuPipes(inst.path, inst.cpus(), page_size)
        sink = stream.PageSink(work / capture.RING_FILE, page_size)
        pages = 0
        more = True
        while more:   # the streaming reader's drains interleave the CPUs' pages in the file
            more = False
            for c in list(pipes.fds):
                for page in pipes.drain(c, limit=512):
                    sink.write(c, page)
                    pages += 1
                    more = True
        sink.close()
        pipes.close()
        tb["drain_and_compress_s"] = time.perf_counter() - t
        ring = binary.RingMeta(page_size, inst.read("events/header_page"), formats, cmdlines)
        mix = binary.AddressMix()
        t, (c1, k1) = time.perf_counter(), cpu_s()
        meta = ringstore.store_ring(work / capture.RING_FILE, ring, work / "events.parquet", index=sink.index,
                                    kallsyms=binary.Kallsyms.load(), addresses=mix, workers=args.workers)
        (c2, k2) = cpu_s()
        tb["store_s"] = time.perf_counter() - t
        tb["store_cpu_s"] = c2 - c1 + k2 - k1
        tb["store_cpu_workers_s"] = k2 - k1
        tb["total_s"] = time.perf_counter() - t0
        tb["total_cpu_s"] = c2 - c0 + k2 - k0
        res["binary"] = {**{k: round(v, 3) for k, v in tb.items()}, "pages": pages, "store": meta["store"],
                         "ring_bytes": (work / capture.RING_FILE).stat().st_size, "events": meta["parse"]["events"],
                         "events_parquet_bytes": (work / "events.parquet").stat().st_size}
        # the text showed these comms; the binary table without the trace's own names must equal it
        plain = ringstore.decode_all(work / capture.RING_FILE, ring, comm_fallback=False, addresses=mix)
        racing = {p for p in set(before) | set(cmdlines) if before.get(p) != cmdlines.get(p)}
        res["differences"] = same_tables(plain, text_table, racing, binary.pointer_columns(ring.parsed()[1]))
        stored = read_table(work / "events.parquet")
        res["stored_vs_at_once"] = same_tables(stored, ringstore.decode_all(
            work / capture.RING_FILE, ring, kallsyms=binary.Kallsyms.load(), addresses=mix))
    finally:
        inst.remove()
    import resource

    res["peak_rss_mib"] = {"self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
                           "largest_child": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024}
    res["loadavg_before"] = res_load
    res["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
    doc = json.dumps(res, indent=1)
    if args.out:
        args.out.write_text(doc + "\n")
    print(doc)
    import shutil

    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
