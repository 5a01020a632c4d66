"""The guest's half of `run --trace` on a VM, served by the agent: a private tracefs instance in the guest.

The host asks for it with four requests (latscope.trace.guestcapture is the
other end):

    trace_start   make the instance, set its clock and buffer, enable the events; answer with
                  the trace_marker path the guest's workers write to and the clock's offset
    trace_stop    stop recording; answer with the per-CPU counters (entries, overruns)
    trace_read    the instance's ``trace`` file (``part=text``) or its raw rendering (``part=raw``,
                  nanosecond timestamps), zlib-compressed, as the answer's payload
    trace_remove  remove the instance (also done when the guest powers off)

Like the agent, this imports only the standard library (and tracefs access,
which needs nothing more): under an emulated CPU imports cost seconds. The
text is compressed in the guest because the virtio-serial port is slower than
a fast compression level even on an emulated CPU.
"""

from __future__ import annotations

import os
import time
import zlib
from pathlib import Path
from typing import Any

from latscope.errors import TraceError
from latscope.trace import tracefs

OPS = ("trace_start", "trace_stop", "trace_read", "trace_remove")
#: Instance options set explicitly, as on the host (latscope.trace.capture.OPTIONS).
OPTIONS = {"overwrite": "1", "irq-info": "1", "context-info": "1", "raw": "0", "hex": "0", "bin": "0",
           "latency-format": "0", "record-tgid": "0", "markers": "1", "print-parent": "1", "sym-offset": "0"}
DEFAULT_BUFFER_KB = 32 << 10
MAX_BUFFER_KB = 256 << 10
CLOCK_TAI = 11


def _to_realtime(available: str) -> tuple[str, int, bool]:
    """(trace clock, ns to add for CLOCK_REALTIME, exact?): tai when the kernel has it, else mono."""
    names = [c.strip("[]") for c in available.split()]
    if "tai" in names:
        a = time.clock_gettime_ns(time.CLOCK_REALTIME)
        b = time.clock_gettime_ns(CLOCK_TAI)
        return "tai", -(round((b - a) / 1e9) * 1_000_000_000), True
    if "mono" not in names:
        raise TraceError(f"the guest kernel offers no usable trace clock (has: {available.strip()})")
    best: tuple[int, int] | None = None
    for _ in range(16):
        a = time.clock_gettime_ns(time.CLOCK_REALTIME)
        b = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        c = time.clock_gettime_ns(time.CLOCK_REALTIME)
        if best is None or c - a < best[0]:
            best = (c - a, (a + c) // 2 - b)
    assert best is not None
    return "mono", best[1], False


class GuestTracer:
    """The instance and what the host asked of it."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root
        self.instance: tracefs.Instance | None = None

    def handle(self, op: str, req: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        """Serve one request: (answer fields, payload)."""
        if op == "trace_start":
            return self.start(req), b""
        if op == "trace_stop":
            return self.stop(), b""
        if op == "trace_read":
            return self.read(str(req.get("part", "text")), int(req.get("level", 1)))
        if op == "trace_remove":
            self.remove()
            return {}, b""
        raise TraceError(f"unknown trace request {op!r}")

    def start(self, req: dict[str, Any]) -> dict[str, Any]:
        self.remove()
        root = tracefs.find_tracefs(self.root)
        reaped = tracefs.reap_stale(root)
        self.instance = inst = tracefs.Instance.create(root, "guest")
        inst.write("tracing_on", "0")
        clock, to_rt, exact = _to_realtime(inst.read("trace_clock"))
        inst.write("trace_clock", clock)
        for opt, value in OPTIONS.items():
            if inst.exists(f"options/{opt}"):
                inst.write(f"options/{opt}", value)
        kb = max(1024, min(MAX_BUFFER_KB, int(req.get("buffer_kb") or DEFAULT_BUFFER_KB)))
        t0 = time.monotonic()
        inst.write("buffer_size_kb", str(kb))
        alloc_s = time.monotonic() - t0
        enabled, missing = [], []
        for text in req.get("events") or ():
            group, _, event = str(text).partition(":")
            rel = f"events/{group}/enable" if not event else f"events/{group}/{event}/enable"
            if inst.exists(rel):
                inst.write(rel, "1")
                enabled.append(text)
            else:
                missing.append(text)
        if not enabled:
            raise TraceError("none of the requested trace events exists in the guest kernel")
        inst.write("trace", "")
        inst.write("tracing_on", "1")
        return {"instance": inst.name, "tracefs": str(root), "marker": str(inst.path / "trace_marker"),
                "clock": clock, "to_realtime_ns": to_rt, "clock_mapping": "exact" if exact else "sampled",
                "buffer_kb": kb, "buffer_alloc_s": round(alloc_s, 3), "cpus": len(inst.cpus()),
                "events": enabled, "events_missing": missing, "stale_instances_removed": reaped,
                "kernel": os.uname().release}

    def stop(self) -> dict[str, Any]:
        inst = self._need()
        inst.write("tracing_on", "0")
        stats = tracefs.cpu_stats(inst)
        return {"per_cpu": {str(s.cpu): {"entries": s.entries, "overrun": s.overrun,
                                         "commit_overrun": s.commit_overrun, "dropped": s.dropped,
                                         "oldest_event_ts": s.oldest_event_ts} for s in stats},
                "overruns": sum(s.lost for s in stats), "entries": sum(s.entries for s in stats)}

    def read(self, part: str, level: int) -> tuple[dict[str, Any], bytes]:
        """The trace as text (or the raw rendering), zlib at ``level``; how long reading and packing took."""
        inst = self._need()
        if part not in ("text", "raw"):
            raise TraceError(f"trace_read: part must be text or raw, not {part!r}")
        t0 = time.monotonic()
        if part == "raw":
            inst.write("options/raw", "1")
        try:
            data = inst.read_bytes("trace")
        finally:
            if part == "raw":
                inst.write("options/raw", "0")
        t1 = time.monotonic()
        packed = zlib.compress(data, max(0, min(9, level)))
        return ({"part": part, "encoding": "zlib", "bytes_plain": len(data), "read_s": round(t1 - t0, 3),
                 "compress_s": round(time.monotonic() - t1, 3)}, packed)

    def remove(self) -> None:
        if self.instance is not None:
            try:
                self.instance.remove()
            finally:
                self.instance = None

    def _need(self) -> tracefs.Instance:
        if self.instance is None:
            raise TraceError("no guest trace was started")
        return self.instance
