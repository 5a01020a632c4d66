"""``latscope run --trace``: kernel events recorded in a private tracefs instance during the run.

Nothing happens per packet in the controller: the instance is set up before
the workers start, the kernel fills its buffer while they run (the workers
write one marker per packet through their own trace_marker descriptors), and
only after the run is the buffer read, parsed and stored:

    trace/trace.txt.zst   the instance's ``trace`` file as the kernel printed it (zstd)
    trace/events.parquet  the parsed events, nanosecond timestamps (latscope.trace.table)

The buffer is sized to hold the whole run. The kernel's per-CPU counters say
whether events were still lost (overwritten); that count goes to run.json
(completeness.trace_overruns) and into every breakdown of the run.

Timestamps use the ``tai`` trace clock: CLOCK_TAI differs from the probe's
CLOCK_REALTIME by the whole-second TAI offset, so trace time minus that
offset is probe time, exactly. Kernels without it fall back to ``mono``
with an offset sampled at the start (accurate to a few microseconds).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latscope.errors import ConfigError, LatscopeError, TraceError
from latscope.files import atomic_output
from latscope.stopping import Stopped, interruptible
from latscope.testhooks import hold
from latscope.trace import events as ev
from latscope.trace import tracefs
from latscope.trace.parse_text import parse_kernel_text
from latscope.trace.table import write_table

TRACE_DIR = "trace"
TEXT_FILE = "trace.txt.zst"
TABLE_FILE = "events.parquet"
# Short runs get generous room: a burst of disk or scheduler activity (an fsync loop makes
# well over 50,000 events a second) must not overwrite the start of the run.
MIN_BUFFER_KB = 64 << 10
MAX_BUFFER_KB = 2 << 20  # per CPU
MAX_TOTAL_KB = 8 << 20
#: Overrides the computed per-CPU buffer size, e.g. 512M (for loads that produce events faster).
BUFFER_ENV = "LATSCOPE_TRACE_BUFFER"
#: Instance options set explicitly (defaults could have been changed by whoever made tracefs).
OPTIONS = {"overwrite": "1", "irq-info": "1", "context-info": "1", "raw": "0", "hex": "0", "bin": "0",
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
    #: Told (one line each) what the capture is doing after the run, when reading takes a while.
    notify: Callable[[str], None] | None = None
    instance: tracefs.Instance | None = None
    clock: ClockChoice | None = None
    info: dict[str, Any] = field(default_factory=dict)

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
        inst.write("trace", "")  # empty the new buffer (nothing should be there; be sure)
        inst.write("tracing_on", "1")
        self.info = {
            "instance": inst.name, "tracefs": str(root), "clock": self.clock.name,
            "to_realtime_ns": self.clock.to_realtime_ns, "clock_mapping": "exact" if self.clock.exact else "sampled",
            "buffer_kb": {str(c): kb for c, kb in sizes.items()}, "buffer_alloc_s": round(alloc_s, 3),
            "cpus": len(cpus),
            "events": enabled, "events_missing": missing, "stale_instances_removed": reaped,
            "files": {"text": f"{TRACE_DIR}/{TEXT_FILE}", "table": f"{TRACE_DIR}/{TABLE_FILE}"},
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
            stats = tracefs.cpu_stats(inst)
            overruns = sum(s.lost for s in stats)
            info["per_cpu"] = {str(s.cpu): {"entries": s.entries, "overrun": s.overrun,
                                            "commit_overrun": s.commit_overrun, "dropped": s.dropped,
                                            "oldest_event_ts": s.oldest_event_ts} for s in stats}
            info["overruns"] = overruns
            if self.notify is not None:
                entries = sum(s.entries for s in stats)
                self.notify(f"reading {entries} kernel trace events (about {max(1, entries // 200_000)} s)")
            # Reading a long run's trace takes a while: a stop signal cuts it short; the packets are kept.
            with interruptible():
                hold("trace-read")
                info.update(store_trace(inst, workdir / TRACE_DIR, info))
        except (LatscopeError, OSError) as exc:
            info["error"] = str(exc)
        except Stopped as exc:
            info["error"] = f"stopped by {exc.name} while the trace was read: the run is stored without it"
            shutil.rmtree(workdir / TRACE_DIR, ignore_errors=True)
        return {"record": {"trace": info}, "completeness": {"trace_overruns": overruns}}

    def close(self) -> None:
        if self.instance is not None:
            try:
                self.instance.remove()
            except TraceError:
                pass  # reported by the next run's reap of stale instances


def store_trace(inst: tracefs.Instance, out: Path, info: dict[str, Any]) -> dict[str, Any]:
    """Read the stopped instance (text, then the raw rendering for nanoseconds), write trace/."""
    import pyarrow as pa

    out.mkdir(exist_ok=True)
    timings: dict[str, float] = {}
    t = time.monotonic()
    text = inst.read_bytes("trace")
    timings["read_text_s"] = time.monotonic() - t
    t = time.monotonic()
    inst.write("options/raw", "1")
    try:
        raw = inst.read_bytes("trace")
    finally:
        inst.write("options/raw", "0")
    timings["read_raw_s"] = time.monotonic() - t
    t = time.monotonic()
    with atomic_output(out / TEXT_FILE) as raw_out, pa.CompressedOutputStream(raw_out, "zstd") as fh:
        fh.write(text)
    timings["compress_s"] = time.monotonic() - t
    t = time.monotonic()
    meta: dict[str, Any] = {k: info[k] for k in ("clock", "to_realtime_ns", "clock_mapping", "instance") if k in info}
    meta["overruns"] = info.get("overruns", 0)
    meta["per_cpu"] = info.get("per_cpu", {})
    table = parse_kernel_text(text, raw, meta=meta)
    timings["parse_s"] = time.monotonic() - t
    t = time.monotonic()
    write_table(table, out / TABLE_FILE)
    timings["write_table_s"] = time.monotonic() - t
    parse = table.meta.get("parse", {})
    return {"text_bytes": len(text), "events_parsed": len(table), "unparsed_lines": parse.get("unparsed", 0),
            "ts_source": table.meta.get("ts_source"), "timings": {k: round(v, 3) for k, v in timings.items()}}
