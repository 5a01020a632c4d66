"""A breakdown as a Chrome/Perfetto trace-event JSON file (opens in ui.perfetto.dev).

Tracks:

* "CPUs": one thread per CPU with the tasks that ran on it (idle left out);
* "Interrupts": one thread per CPU with hard interrupts and softirqs;
* "Late packets": one thread per broken-down late packet, its stages as
  consecutive slices (arguments: excess over the median, culprits), and a
  flow arrow from each stage to the task running on the stage's CPU when
  the stage started, so following a packet across CPUs is one click each.

Times are microseconds from the first event (Perfetto's JSON importer takes
microseconds; absolute epoch times would lose the nanoseconds in a double).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from latscope.files import write_atomic
from latscope.store.samples import MISSING
from latscope.trace.breakdown import Breakdown

PID_CPUS, PID_IRQS, PID_PACKETS, PID_GUEST = 1, 2, 3, 4
MAX_PACKETS = 500


def document(bd: Breakdown) -> dict[str, Any]:
    """The trace-event JSON document."""
    tl = bd.timeline
    if tl is None:
        return {"traceEvents": []}
    origin = tl.start_ns

    def ts(ns: int) -> float:
        return round((int(ns) - origin) / 1000.0, 3)

    ev: list[dict[str, Any]] = [
        {"ph": "M", "pid": PID_CPUS, "name": "process_name", "args": {"name": "Host CPUs" if bd.vm else "CPUs"}},
        {"ph": "M", "pid": PID_IRQS, "name": "process_name", "args": {"name": "Interrupts"}},
        {"ph": "M", "pid": PID_PACKETS, "name": "process_name", "args": {"name": "Late packets"}},
    ]
    _cpu_tracks(ev, tl, PID_CPUS, ts, PID_IRQS)
    if bd.guest_timeline is not None:
        ev.append({"ph": "M", "pid": PID_GUEST, "name": "process_name", "args": {"name": "Guest CPUs"}})
        _cpu_tracks(ev, bd.guest_timeline, PID_GUEST, ts)
    pk = bd.packets_detail
    model = bd.model
    if pk is not None:
        index = {int(s): i for i, s in enumerate(pk.seq)}
        for n, late in enumerate(bd.late[:MAX_PACKETS]):
            i = index.get(late.seq)
            if i is None:
                continue
            tid = 1000 + n
            ev.append({"ph": "M", "pid": PID_PACKETS, "tid": tid, "name": "thread_name",
                       "args": {"name": f"seq {late.seq} ({late.value_ns / 1000:.1f} us)"}})
            times, cpus = pk.times[i], pk.cpus[i]
            culprits: dict[str, list[str]] = {}
            for c in late.culprits:
                for s in c.stage.split(","):
                    culprits.setdefault(s, []).append(f"{c.name} {c.ns / 1000:.3f} us")
            excess = {s.name: s.excess_ns for s in late.stages}
            last = int(times[0]) if times[0] != MISSING else None
            for k in range(1, model.ncheck):
                if times[k] == MISSING or last is None:
                    continue
                stage = model.names[k - 1]
                guest = model.domains[k - 1] == "guest"
                track_tl = bd.guest_timeline if guest else tl
                start, end, cpu = last, int(times[k]), int(cpus[k])
                last = end
                ev.append({"ph": "X", "pid": PID_PACKETS, "tid": tid, "name": model.title(stage), "ts": ts(start),
                           "dur": round((end - start) / 1000.0, 3),
                           "args": {"seq": late.seq, "cpu": cpu, "excess_us": round(excess.get(stage, 0) / 1000, 3),
                                    "culprits": culprits.get(stage, []),
                                    "dominant": stage == late.dominant_stage}})
                if track_tl is not None and 0 <= cpu < track_tl.ncpu and end > start:
                    fid = late.seq * 32 + k
                    ev.append({"ph": "s", "pid": PID_PACKETS, "tid": tid, "id": fid, "name": "on CPU",
                               "cat": "packet", "ts": ts(start)})
                    ev.append({"ph": "f", "bp": "e", "pid": PID_GUEST if guest else PID_CPUS, "tid": cpu + 1,
                               "id": fid, "name": "on CPU", "cat": "packet", "ts": ts(start)})
    return {"traceEvents": ev, "displayTimeUnit": "ns",
            "metadata": {"latscope": "breakdown", "run_id": bd.run_id, "origin_ns": origin,
                         "metric": bd.metric, "threshold_us": round(bd.threshold_ns / 1000, 3)
                         if bd.threshold_ns != float("inf") else None}}


def _cpu_tracks(ev: list[dict[str, Any]], tl: Any, pid_cpus: int, ts: Any, pid_irqs: int | None = None) -> None:
    """One track per CPU with the tasks that ran (and, with ``pid_irqs``, one with the interrupts)."""
    segs = tl.segments
    for c in range(tl.ncpu):
        ev.append({"ph": "M", "pid": pid_cpus, "tid": c + 1, "name": "thread_name", "args": {"name": f"CPU {c}"}})
        sl = segs.on(c)
        for k in range(sl.start, sl.stop):
            pid = int(segs.pid[k])
            if pid == 0 or segs.end[k] <= segs.start[k]:
                continue
            ev.append({"ph": "X", "pid": pid_cpus, "tid": c + 1, "name": f"{tl.comm_of(int(segs.comm[k]))} {pid}",
                       "ts": ts(segs.start[k]), "dur": round((int(segs.end[k]) - int(segs.start[k])) / 1000.0, 3),
                       "args": {"pid": pid, "prio": int(segs.prio[k])}})
        if pid_irqs is None:
            continue
        ev.append({"ph": "M", "pid": pid_irqs, "tid": c + 1, "name": "thread_name",
                   "args": {"name": f"CPU {c} interrupts"}})
        iq = tl.irqs
        sl = iq.on(c)
        for k in range(sl.start, sl.stop):
            ev.append({"ph": "X", "pid": pid_irqs, "tid": c + 1, "name": tl.comm_of(int(iq.name[k])),
                       "ts": ts(iq.start[k]), "dur": round((int(iq.end[k]) - int(iq.start[k])) / 1000.0, 3)})


def write(bd: Breakdown, path: Path) -> int:
    """Write the document to ``path`` atomically; return the number of trace events."""
    doc = document(bd)
    write_atomic(path, json.dumps(doc, separators=(",", ":")))
    return len(doc["traceEvents"])
