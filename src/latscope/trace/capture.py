"""``latscope run --trace``: kernel events recorded in a private tracefs instance during the run.

Nothing happens per packet in the controller: the instance is set up before
the workers start, the kernel fills its per-CPU ring buffers while they run
(the workers write one marker per packet through their own trace_marker
descriptors), and a reader thread (latscope.trace.stream: SCHED_IDLE, off
the probe's CPUs when there is one to spare) drains the buffers' pages into
a compressed file every 200 ms. After the run the pages are decoded
(latscope.trace.binary; nothing is rendered as text) on every CPU the
process may use, merged by time and written a slice at a time
(latscope.trace.ringstore: memory bounded whatever the length of the run):

    trace/ring.zst        the ring-buffer pages as the kernel wrote them (zstd; latscope.trace.stream)
    trace/ring.json       what decoding them needs: page and event formats, pid names, function names
    trace/events.parquet  the decoded events, nanosecond timestamps (latscope.trace.table)

Streaming keeps the buffers small (STREAM_BUFFER_KB per CPU) whatever the
length of the run; without it (``stream=False``) they are sized to hold the
whole run and read once at the end. The kernel's per-CPU counters say
whether events were still lost (overwritten or dropped); that count goes to
run.json (completeness.trace_overruns) and into every breakdown of the run.

Timestamps use the ``tai`` trace clock: CLOCK_TAI differs from the probe's
CLOCK_REALTIME by the whole-second TAI offset, so trace time minus that
offset is probe time, exactly. Kernels without it fall back to ``mono``
with an offset sampled at the start (accurate to a few microseconds).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latscope.errors import ConfigError, FormatError, LatscopeError, TraceError
from latscope.files import atomic_output, open_regular, reason
from latscope.stopping import Stopped, interruptible
from latscope.testhooks import hold
from latscope.trace import binary, ringstore, tracefs
from latscope.trace import events as ev
from latscope.trace import stream as st
from latscope.trace.table import EventTable

TRACE_DIR = "trace"
RING_FILE = "ring.zst"
RING_META = "ring.json"
TABLE_FILE = "events.parquet"
#: Per-CPU buffer while a reader drains it: room for a second of the heaviest bursts seen here
#: (800,000 events a second at 40 bytes), should the reader be held off the CPU that long.
STREAM_BUFFER_KB = 32 << 10
#: Pages decoded at a time when the trace is decoded into memory (load_ring; bounds the decoder's working memory).
DECODE_PAGES = ringstore.DECODE_PAGES
DECODE_THREADS = 4
# Short runs get generous room: a burst of disk or scheduler activity (an fsync loop makes
# well over 50,000 events a second) must not overwrite the start of the run.
MIN_BUFFER_KB = 64 << 10
MAX_BUFFER_KB = 2 << 20  # per CPU
MAX_TOTAL_KB = 8 << 20
#: Overrides the computed per-CPU buffer size, e.g. 512M (for loads that produce events faster).
BUFFER_ENV = "LATSCOPE_TRACE_BUFFER"
#: Instance options set explicitly (defaults could have been changed by whoever made tracefs).
OPTIONS = {"hash-ptr": "0", "overwrite": "1", "irq-info": "1", "context-info": "1", "raw": "0", "hex": "0", "bin": "0",
           "latency-format": "0", "record-tgid": "0", "markers": "1", "print-parent": "1", "sym-offset": "0"}


@dataclass(frozen=True)
class ClockChoice:
    """The trace clock and how to turn its timestamps into the probe's CLOCK_REALTIME."""

    name: str
    to_realtime_ns: int
    exact: bool


def choose_clock(available: str, tai_offset_ns: int) -> ClockChoice:
    """tai when the kernel has it (exact), else mono with a sampled offset."""
    names = [c.strip("[]") for c in available.split()]
    if "tai" in names:
        return ClockChoice("tai", -tai_offset_ns, True)
    if "mono" in names:
        return ClockChoice("mono", _sampled_offset(time.CLOCK_MONOTONIC), False)
    raise TraceError(f"the kernel offers no trace clock latscope can map to wall time (has: {available.strip()})")


def _sampled_offset(clock_id: int) -> int:
    """CLOCK_REALTIME - clock, from the tightest of a few back-to-back readings."""
    best = None
    for _ in range(16):
        a = time.clock_gettime_ns(time.CLOCK_REALTIME)
        b = time.clock_gettime_ns(clock_id)
        c = time.clock_gettime_ns(time.CLOCK_REALTIME)
        if best is None or c - a < best[0]:
            best = (c - a, (a + c) // 2 - b)
    assert best is not None
    return best[1]


def buffer_kb(count: int, duration_ns: int, cpus: list[int], probe_cpus: set[int] | None,
              mem_available_kb: int | None) -> dict[int, int]:
    """Per-CPU buffer sizes (KiB) for a run.

    Every CPU gets room for heavy background activity (interference is what a
    trace is for, and a disk writer alone produces tens of thousands of
    events a second); the CPUs the sender and receiver run on (all CPUs when
    they are not pinned) also get room for every packet's events, since both
    halves may share one CPU. The total is capped at a quarter of free memory.
    """
    seconds = duration_ns / 1e9 + 5
    background = ev.BACKGROUND_EVENTS_PER_S_PER_CPU * ev.BYTES_PER_EVENT * seconds
    packets = count * ev.EVENTS_PER_PACKET * ev.BYTES_PER_EVENT
    want = {c: (background + (packets if probe_cpus is None or c in probe_cpus else 0)) * 1.25 / 1024
            for c in cpus}
    total = sum(want.values())
    cap = MAX_TOTAL_KB if not mem_available_kb else min(MAX_TOTAL_KB, mem_available_kb // 4)
    scale = min(1.0, cap / total) if total else 1.0
    return {c: max(MIN_BUFFER_KB, min(MAX_BUFFER_KB, int(kb * scale))) for c, kb in want.items()}


def parse_size_kb(text: str) -> int:
    """"512M", "2G", "65536K" or a number of KiB."""
    t = text.strip().upper().rstrip("B")
    mult = {"K": 1, "M": 1024, "G": 1 << 20}.get(t[-1:], None)
    try:
        return int(float(t[:-1]) * mult) if mult else int(t)
    except ValueError:
        raise ConfigError(f"{BUFFER_ENV}={text!r}: expected a size such as 512M") from None


def mem_available_kb(proc: Path = Path("/proc")) -> int | None:
    try:
        for line in (proc / "meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


@dataclass
class TraceCapture:
    """A Capture (latscope.session) that records kernel events into ``trace/`` of the run."""

    count: int
    duration_ns: int
    event_changes: str | None = None
    probe_cpus: tuple[int, ...] | None = None
    buffer_kb: int | None = None
    root: Path | None = None
    #: Drain the buffers during the run (small buffers, any length); False: size them for the whole run.
    stream: bool = True
    #: Told (one line each) what the capture is doing after the run, when reading takes a while.
    notify: Callable[[str], None] | None = None
    instance: tracefs.Instance | None = None
    clock: ClockChoice | None = None
    info: dict[str, Any] = field(default_factory=dict)
    page_size: int = 4096
    formats: dict[int, tuple[str, str]] = field(default_factory=dict)
    pipes: st.CpuPipes | None = None
    sink: st.PageSink | None = None
    reader: st.Reader | None = None

    def start(self, workdir: Path, path: Any) -> dict[str, Any]:
        from latscope.timebase import tai_offset_ns

        wanted = ev.resolve(self.event_changes)
        root = tracefs.find_tracefs(self.root)
        reaped = tracefs.reap_stale(root)
        self.instance = inst = tracefs.Instance.create(root, "run")
        cpus = inst.cpus() or list(range(os.cpu_count() or 1))
        if self.buffer_kb is None and os.environ.get(BUFFER_ENV):
            self.buffer_kb = parse_size_kb(os.environ[BUFFER_ENV])
        if self.buffer_kb is not None:
            sizes = {c: self.buffer_kb for c in cpus}
        elif self.stream:
            sizes = {c: STREAM_BUFFER_KB for c in cpus}
        else:
            sizes = buffer_kb(self.count, self.duration_ns, cpus, set(self.probe_cpus) if self.probe_cpus else None,
                              mem_available_kb())
        inst.write("tracing_on", "0")
        self.clock = choose_clock(inst.read("trace_clock"), tai_offset_ns())
        inst.write("trace_clock", self.clock.name)
        for opt, value in OPTIONS.items():
            if inst.exists(f"options/{opt}"):
                inst.write(f"options/{opt}", value)
        t0 = time.monotonic()
        for c, kb in sizes.items():
            inst.write(f"per_cpu/cpu{c}/buffer_size_kb", str(kb))
        alloc_s = time.monotonic() - t0
        enabled, missing = [], []
        for spec in wanted:
            rel = f"events/{spec.group}/enable" if spec.event is None else f"events/{spec.group}/{spec.event}/enable"
            if inst.exists(rel):
                inst.write(rel, "1")
                enabled.append(spec.text)
            else:
                missing.append(spec.text)
        if not enabled:
            raise TraceError("none of the requested trace events exists on this kernel")
        self.formats = event_formats(inst, [s for s in wanted if s.text in enabled])
        self.page_size = subbuf_bytes(inst)
        inst.write("trace", "")  # empty the new buffer (nothing should be there; be sure)
        out = workdir / TRACE_DIR
        out.mkdir(exist_ok=True)
        self.pipes = st.CpuPipes(inst.path, cpus, self.page_size)
        self.sink = st.PageSink(out / RING_FILE, self.page_size)
        inst.write("tracing_on", "1")
        if self.stream:
            self.reader = st.Reader(self.pipes, self.sink, avoid_cpus=set(self.probe_cpus or ()) or set(cpus),
                                    buffer_pages=min(sizes.values()) * 1024 // self.page_size)
            self.reader.start()
        self.info = {
            "instance": inst.name, "tracefs": str(root), "clock": self.clock.name,
            "to_realtime_ns": self.clock.to_realtime_ns, "clock_mapping": "exact" if self.clock.exact else "sampled",
            "buffer_kb": {str(c): kb for c, kb in sizes.items()}, "buffer_alloc_s": round(alloc_s, 3),
            "cpus": len(cpus), "page_size": self.page_size,
            "streamed": self.stream,
            "events": enabled, "events_missing": missing, "stale_instances_removed": reaped,
            "files": {"pages": f"{TRACE_DIR}/{RING_FILE}", "ring": f"{TRACE_DIR}/{RING_META}",
                      "table": f"{TRACE_DIR}/{TABLE_FILE}"},
        }
        return {"trace_marker": str(inst.path / "trace_marker")}

    def stop(self, workdir: Path) -> dict[str, Any]:
        """Stop recording, store the trace; trace problems are recorded, never fatal to the run."""
        inst = self.instance
        if inst is None:
            return {"record": {}, "completeness": {}}
        info = dict(self.info)
        overruns = 0
        try:
            inst.write("tracing_on", "0")
            if self.reader is not None:
                self.reader.finish()
                info["reader"] = self.reader.stats.as_json(self.page_size)
                if self.reader.error is not None:
                    raise TraceError(f"the trace reader failed during the run: {self.reader.error}")
            stats = tracefs.cpu_stats(inst)
            overruns = sum(s.lost for s in stats)
            info["per_cpu"] = {str(s.cpu): {"entries": s.entries, "overrun": s.overrun,
                                            "commit_overrun": s.commit_overrun, "dropped": s.dropped,
                                            "oldest_event_ts": s.oldest_event_ts} for s in stats}
            info["overruns"] = overruns
            if self.notify is not None:
                entries = sum(s.entries for s in stats)
                if entries > 2_000_000:
                    self.notify(f"reading {entries} kernel trace events")
            # Reading a long run's trace takes a while: a stop signal cuts it short; the packets are kept.
            with interruptible():
                hold("trace-read")
                t = time.monotonic()
                left = self._drain_rest()
                info["read_after_run_s"] = round(time.monotonic() - t, 3)
                info["pages_after_run"] = left
                cmdlines = tracefs.saved_cmdlines(inst.root)
                ring = binary.RingMeta(self.page_size, inst.read("events/header_page"), self.formats, cmdlines)
                index = self.sink.index if self.sink is not None else None
                info.update(store_trace(workdir / TRACE_DIR, ring, info, notify=self.notify, index=index))
        except (LatscopeError, OSError) as exc:
            info["error"] = str(exc)
        except Stopped as exc:
            info["error"] = f"stopped by {exc.name} while the trace was read: the run is stored without it"
            self._close_files()
            shutil.rmtree(workdir / TRACE_DIR, ignore_errors=True)
        finally:
            self._close_files()
        return {"record": {"trace": info}, "completeness": {"trace_overruns": overruns}, "config": {"trace": True}}

    def _drain_rest(self) -> int:
        """Everything still in the buffers into the page file, then close it."""
        n = 0
        if self.pipes is not None and self.sink is not None:
            for cpu in list(self.pipes.fds):
                for page in self.pipes.drain(cpu):
                    self.sink.write(cpu, page)
                    n += 1
        self._close_files()
        return n

    def _close_files(self) -> None:
        if self.reader is not None and self.reader.is_alive():
            self.reader.finish()
        if self.sink is not None:
            self.sink.close()
        if self.pipes is not None:
            self.pipes.close()

    def close(self) -> None:
        try:
            self._close_files()
        except (LatscopeError, OSError):
            pass  # the page file is discarded with the run's staging directory
        finally:
            if self.instance is not None:
                try:
                    self.instance.remove()
                except TraceError:
                    pass  # reported by the next run's reap of stale instances


def subbuf_bytes(inst: tracefs.Instance) -> int:
    """Bytes per ring-buffer page (sub-buffer) of the instance: 4 KiB unless changed."""
    if inst.exists("buffer_subbuf_size_kb"):
        try:
            return int(inst.read("buffer_subbuf_size_kb").strip()) * 1024
        except ValueError:
            pass
    return 4096


def event_formats(inst: tracefs.Instance, specs: list[ev.EventSpec]) -> dict[int, tuple[str, str]]:
    """id -> (system, format file) of the enabled events and of trace_marker writes (ftrace/print)."""
    dirs = [inst.path / "events" / "ftrace" / "print"]
    for spec in specs:
        base = inst.path / "events" / spec.group
        dirs.extend(sorted(p for p in base.iterdir() if p.is_dir()) if spec.event is None else [base / spec.event])
    out: dict[int, tuple[str, str]] = {}
    for d in dirs:
        try:
            text = (d / "format").read_text()
        except OSError:
            continue
        m = re.search(r"^ID:\s*(\d+)", text, re.MULTILINE)
        if m:
            out[int(m.group(1))] = (d.parent.name, text)
    return out


def store_trace(out: Path, ring: binary.RingMeta, info: dict[str, Any],
                notify: Callable[[str], None] | None = None, index: st.RingIndex | None = None,
                workers: int | None = None) -> dict[str, Any]:
    """Decode ``out/ring.zst`` with ``ring`` into events.parquet (latscope.trace.ringstore); write ring.json
    (with the function names). ``index``: the file's pages per CPU, when the writer kept count (PageSink.index)."""
    timings: dict[str, float] = {}
    t = time.monotonic()
    meta: dict[str, Any] = {k: info[k] for k in ("clock", "to_realtime_ns", "clock_mapping", "instance") if k in info}
    meta["overruns"] = info.get("overruns", 0)
    meta["per_cpu"] = info.get("per_cpu", {})
    tmeta = ringstore.store_ring(out / RING_FILE, ring, out / TABLE_FILE, meta=meta, kallsyms=binary.Kallsyms.load(),
                                 index=index, workers=workers)
    timings["decode_and_write_s"] = time.monotonic() - t
    t = time.monotonic()
    with atomic_output(out / RING_META) as fh:
        fh.write(json.dumps({"schema_version": RING_META_VERSION, **ring.as_json()}, indent=1).encode())
    timings["ring_json_s"] = time.monotonic() - t
    parse = tmeta.get("parse", {})
    return {"ring_bytes": (out / RING_FILE).stat().st_size, "events_decoded": parse.get("events", 0),
            "pages": parse.get("pages", 0), "lost_events": parse.get("lost_events_total", 0),
            "ts_source": tmeta.get("ts_source"), "store": tmeta.get("store", {}),
            "timings": {k: round(v, 3) for k, v in timings.items()}}


RING_META_VERSION = 1


def decode_ring(path: Path, ring: binary.RingMeta, *, kallsyms: binary.Kallsyms | None = None,
                meta: dict[str, Any] | None = None, chunk_pages: int = DECODE_PAGES,
                comm_fallback: bool = True) -> EventTable:
    """The EventTable of a page file, decoded ``chunk_pages`` pages at a time, in time order.

    Chunks are decoded on up to DECODE_THREADS threads (numpy does most of
    the work outside the GIL); at most twice that many chunks are in memory.
    """
    from concurrent.futures import Future, ThreadPoolExecutor

    mix = binary.AddressMix()   # one key for every chunk: equal addresses stay equal across chunks
    if kallsyms is not None:
        _ = kallsyms.addrs  # read once, before the threads need it
    parts: list[EventTable] = []
    threads = max(1, min(DECODE_THREADS, len(os.sched_getaffinity(0))))
    with ThreadPoolExecutor(threads) as pool:
        pending: list[Future[EventTable]] = []
        for pages, cpus in st.read_ring(path, chunk_pages):
            pending.append(pool.submit(binary.decode_table, pages, cpus, ring, kallsyms=kallsyms, meta=meta,
                                       comm_fallback=comm_fallback, sort=False, addresses=mix))
            while len(pending) >= 2 * threads:
                parts.append(pending.pop(0).result())
        parts.extend(f.result() for f in pending)
    return binary.concat(parts, meta)


def load_ring(tdir: Path) -> EventTable:
    """A run's trace decoded again from trace/ring.zst and trace/ring.json."""
    # Files of the store are read only when regular (a FIFO would hang the read).
    for name in (RING_META, RING_FILE):
        try:
            fh, _size = open_regular(tdir / name)
        except OSError as exc:
            raise FormatError(f"{tdir / name}: cannot read ({reason(exc)})") from None
        fh.close()
    try:
        doc = json.loads((tdir / RING_META).read_bytes())
    except (OSError, ValueError) as exc:
        raise FormatError(f"{tdir / RING_META}: cannot read ({exc})") from None
    if not isinstance(doc, dict) or int(doc.get("schema_version", 0)) > RING_META_VERSION:
        raise FormatError(f"{tdir / RING_META}: not a ring-buffer description this latscope reads")
    return decode_ring(tdir / RING_FILE, binary.RingMeta.from_json(doc), meta={"source": str(tdir / RING_FILE)})
