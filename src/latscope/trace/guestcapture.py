"""``run --trace`` on a VM: the guest's kernel events, recorded in the guest and stored with the host's.

A Capture (latscope.session) next to the host's TraceCapture. Before the
workers start it asks the guest's agent for a private tracefs instance
(latscope.remote.guesttrace) and hands the guest's workers that instance's
trace_marker (``guest_trace_marker``: the host's marker file is not
reachable from the guest). After the run it stops the instance, has the
trace sent back over the control channel, and stores it next to the host's:

    trace/guest.txt.zst           the guest instance's ``trace`` file (zstd)
    trace/guest-events.parquet    the parsed events (latscope.trace.table), on the guest's trace clock

Guest trace time becomes host time in two steps, both recorded: the guest's
trace clock (``tai``) to the guest's CLOCK_REALTIME (``to_realtime_ns``, the
guest's whole-second TAI offset), then guest CLOCK_REALTIME to the host's
with the offset estimated over the control channel before and after the run
(run.json ``vm.clock``; latscope.trace.guestclock does the mapping).

It also samples QEMU's threads when recording starts and ends: a QEMU
thread-pool ``worker`` may live only part of the run, and the breakdown must
know every thread of this QEMU by its id (another QEMU on the host has
threads with the same names).
"""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latscope.errors import LatscopeError
from latscope.trace import events as ev

TEXT_FILE = "guest.txt.zst"
TABLE_FILE = "guest-events.parquet"
#: The guest records what the host does, less what a guest kernel cannot have.
GUEST_EVENTS = tuple(e for e in ev.DEFAULT_EVENTS if not e.startswith("kvm:"))
MIN_BUFFER_KB = 16 << 10
MAX_BUFFER_KB = 128 << 10
#: Background events a second in the guest (its disk writer, timers); the host's figure is per host CPU.
GUEST_BACKGROUND_PER_S = 40_000
READ_TIMEOUT_S = 900.0


def guest_buffer_kb(count: int, duration_ns: int) -> int:
    """One CPU's buffer in the guest: every packet's events and heavy background, within guest memory."""
    seconds = duration_ns / 1e9 + 5
    want = (count * ev.EVENTS_PER_PACKET + GUEST_BACKGROUND_PER_S * seconds) * ev.BYTES_PER_EVENT * 1.25 / 1024
    return int(max(MIN_BUFFER_KB, min(MAX_BUFFER_KB, want)))


@dataclass
class GuestTraceCapture:
    """Records the guest's kernel events during a VM run (does nothing on other topologies)."""

    count: int
    duration_ns: int
    event_changes: str | None = None
    notify: Callable[[str], None] | None = None
    guest: Any = None
    info: dict[str, Any] = field(default_factory=dict)
    threads_start: dict[int, str] = field(default_factory=dict)
    started: bool = False

    def start(self, workdir: Path, path: Any) -> dict[str, Any]:
        guest = getattr(path, "guest", None)
        if guest is None:
            return {}
        wanted = [e.text for e in ev.resolve(self.event_changes, base=GUEST_EVENTS)]
        self.threads_start = dict(guest.qemu.threads())
        self.guest = guest
        try:
            ans = guest.link.request("trace_start", timeout_s=180, events=wanted,
                                     buffer_kb=guest_buffer_kb(self.count, self.duration_ns)).header
        except LatscopeError as exc:
            # the run goes on with the host's trace; the breakdown folds the guest's stages
            self.info = {"error": f"the guest trace could not be started: {exc}"}
            self.started = False
            return {}
        self.started = True
        self.info = {k: ans.get(k) for k in ("instance", "tracefs", "clock", "to_realtime_ns", "clock_mapping",
                                            "buffer_kb", "buffer_alloc_s", "cpus", "events", "events_missing",
                                            "kernel")}
        self.info["files"] = {"text": f"trace/{TEXT_FILE}", "table": f"trace/{TABLE_FILE}"}
        return {"guest_trace_marker": ans["marker"]}

    def stop(self, workdir: Path) -> dict[str, Any]:
        """Stop the guest's recording and store its trace; problems are recorded, never fatal to the run."""
        if self.guest is None:
            return {"record": {}, "completeness": {}}
        info = dict(self.info)
        overruns = 0
        link = self.guest.link
        try:
            if not self.started:
                raise LatscopeError(info.pop("error"))
            stats = link.request("trace_stop", timeout_s=60).header
            overruns = int(stats.get("overruns") or 0)
            info["per_cpu"], info["overruns"] = stats.get("per_cpu"), overruns
            if self.notify is not None:
                self.notify(f"reading {stats.get('entries')} guest trace events over the control channel")
            info.update(self._fetch(link, workdir / "trace", info))
        except (LatscopeError, OSError, zlib.error) as exc:
            info["error"] = str(exc)
        threads = {**self.threads_start, **self.guest.qemu.threads()}
        info["qemu_threads"] = [{"tid": tid, "name": name} for tid, name in sorted(threads.items())]
        return {"record": {"guest_trace": info}, "completeness": {"guest_trace_overruns": overruns}}

    def _fetch(self, link: Any, out: Path, info: dict[str, Any]) -> dict[str, Any]:
        import pyarrow as pa

        from latscope.trace.parse_text import parse_kernel_text
        from latscope.trace.table import write_table

        timings: dict[str, float] = {}
        parts: dict[str, bytes] = {}
        for part in ("text", "raw"):
            t = time.monotonic()
            frame = link.request("trace_read", timeout_s=READ_TIMEOUT_S, part=part, level=1)
            parts[part] = zlib.decompress(frame.payload)
            timings[f"{part}_guest_read_s"] = float(frame.header.get("read_s") or 0)
            timings[f"{part}_guest_compress_s"] = float(frame.header.get("compress_s") or 0)
            timings[f"{part}_transfer_s"] = round(time.monotonic() - t, 3)
            timings[f"{part}_bytes_sent"] = len(frame.payload)
        out.mkdir(exist_ok=True)
        tmp = out / f".{TEXT_FILE}.tmp"
        with pa.CompressedOutputStream(str(tmp), "zstd") as fh:
            fh.write(parts["text"])
        os.replace(tmp, out / TEXT_FILE)
        t = time.monotonic()
        meta: dict[str, Any] = {k: info[k] for k in ("clock", "to_realtime_ns", "clock_mapping", "instance")
                                if k in info}
        meta.update(overruns=info.get("overruns", 0), per_cpu=info.get("per_cpu") or {}, side="guest")
        table = parse_kernel_text(parts["text"], parts["raw"], meta=meta)
        write_table(table, out / TABLE_FILE)
        timings["parse_s"] = round(time.monotonic() - t, 3)
        parse = table.meta.get("parse", {})
        return {"text_bytes": len(parts["text"]), "events_parsed": len(table),
                "unparsed_lines": parse.get("unparsed", 0), "ts_source": table.meta.get("ts_source"),
                "timings": timings}

    def close(self) -> None:
        guest, self.guest = self.guest, None
        if guest is None or guest.link.closed or not self.started:
            return
        try:
            guest.link.request("trace_remove", timeout_s=30)
        except LatscopeError:
            pass  # the guest powers off at the end of the topology anyway, and its tracefs with it
