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
Each is written a quarter nanosecond late: the importer turns microseconds
into whole nanoseconds by truncating ``value * 1000``, and 932.334 would
become 932333 ns, one before the end of the slice before it (a slice that
overlaps its neighbour is misnested and dropped). ``problems`` checks a
document against the rules of the trace-event format that Perfetto's
importer enforces, in the importer's own integer nanoseconds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from latscope.files import write_atomic
from latscope.store.samples import MISSING
from latscope.trace.breakdown import Breakdown
from latscope.trace.model import running_at

PID_CPUS, PID_IRQS, PID_PACKETS, PID_GUEST = 1, 2, 3, 4
MAX_PACKETS = 500


def document(bd: Breakdown) -> dict[str, Any]:
    """The trace-event JSON document."""
    tl = bd.timeline
    if tl is None:
        return {"traceEvents": []}
    origin = tl.start_ns

    def ts(ns: int) -> float:
        return (int(ns) - origin + 0.25) / 1000.0

    def dur(a: int, b: int) -> float:
        return (int(b) - int(a) + 0.25) / 1000.0

    ev: list[dict[str, Any]] = [
        {"ph": "M", "pid": PID_CPUS, "name": "process_name", "args": {"name": "Host CPUs" if bd.vm else "CPUs"}},
        {"ph": "M", "pid": PID_IRQS, "name": "process_name", "args": {"name": "Interrupts"}},
        {"ph": "M", "pid": PID_PACKETS, "name": "process_name", "args": {"name": "Late packets"}},
    ]
    _cpu_tracks(ev, tl, PID_CPUS, ts, dur, PID_IRQS)
    if bd.guest_timeline is not None:
        ev.append({"ph": "M", "pid": PID_GUEST, "name": "process_name", "args": {"name": "Guest CPUs"}})
        _cpu_tracks(ev, bd.guest_timeline, PID_GUEST, ts, dur)
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
                           "dur": dur(start, end),
                           "args": {"seq": late.seq, "cpu": cpu, "excess_us": round(excess.get(stage, 0) / 1000, 3),
                                    "culprits": culprits.get(stage, []),
                                    "dominant": stage == late.dominant_stage}})
                # a flow ends on the task slice running there; an idle CPU has none to bind to
                if track_tl is not None and 0 <= cpu < track_tl.ncpu and end > start \
                        and running_at(track_tl, cpu, start) > 0:
                    fid = late.seq * 32 + k
                    ev.append({"ph": "s", "pid": PID_PACKETS, "tid": tid, "id": fid, "name": "on CPU",
                               "cat": "packet", "ts": ts(start)})
                    ev.append({"ph": "f", "bp": "e", "pid": PID_GUEST if guest else PID_CPUS, "tid": cpu + 1,
                               "id": fid, "name": "on CPU", "cat": "packet", "ts": ts(start)})
    return {"traceEvents": ev, "displayTimeUnit": "ns",
            "metadata": {"latscope": "breakdown", "run_id": bd.run_id, "origin_ns": origin,
                         "metric": bd.metric, "threshold_us": round(bd.threshold_ns / 1000, 3)
                         if bd.threshold_ns != float("inf") else None}}


def _cpu_tracks(ev: list[dict[str, Any]], tl: Any, pid_cpus: int, ts: Any, dur: Any,
                pid_irqs: int | None = None) -> None:
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
                       "ts": ts(segs.start[k]), "dur": dur(segs.start[k], segs.end[k]),
                       "args": {"pid": pid, "prio": int(segs.prio[k])}})
        if pid_irqs is None:
            continue
        ev.append({"ph": "M", "pid": pid_irqs, "tid": c + 1, "name": "thread_name",
                   "args": {"name": f"CPU {c} interrupts"}})
        iq = tl.irqs
        sl = iq.on(c)
        for k in range(sl.start, sl.stop):
            ev.append({"ph": "X", "pid": pid_irqs, "tid": c + 1, "name": tl.comm_of(int(iq.name[k])),
                       "ts": ts(iq.start[k]), "dur": dur(iq.start[k], iq.end[k])})


def write(bd: Breakdown, path: Path) -> int:
    """Write the document to ``path`` atomically; return the number of trace events."""
    doc = document(bd)
    write_atomic(path, json.dumps(doc, separators=(",", ":")))
    return len(doc["traceEvents"])


#: Phases of the trace-event format (Google's "Trace Event Format" document) that latscope may write.
PHASES = {"B", "E", "X", "i", "I", "C", "b", "n", "e", "s", "t", "f", "M"}
METADATA = {"process_name", "process_labels", "process_sort_index", "thread_name", "thread_sort_index"}


def import_ns(value: float) -> int:
    """A microsecond time as Perfetto's JSON importer turns it into nanoseconds: truncated."""
    return int(float(value) * 1000.0)


def problems(doc: Any) -> list[str]:
    """What Perfetto's JSON importer would reject or drop in ``doc`` (empty: nothing).

    The trace-event format: an object with a ``traceEvents`` list; every
    event a known phase with integer pid/tid, a finite non-negative ``ts``
    (not for metadata), complete events (X) a non-negative ``dur``; metadata
    events one of the known names with ``args.name``; flow events (s, t, f)
    an id, and each bound to a slice on its own thread (s: the slice
    enclosing it; f with ``bp: e`` likewise), else Perfetto drops the flow.
    And what the importer adds: slices of one thread must nest (a slice
    starting inside another ends inside it), in integer nanoseconds.
    """
    import math
    from collections import defaultdict

    out: list[str] = []
    if not isinstance(doc, dict) or not isinstance(doc.get("traceEvents"), list):
        return ["not an object with a traceEvents list"]
    if doc.get("displayTimeUnit") not in (None, "ms", "ns"):
        out.append(f"displayTimeUnit {doc['displayTimeUnit']!r} is neither ms nor ns")
    slices: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    flows: list[tuple[int, dict[str, Any]]] = []
    for i, e in enumerate(doc["traceEvents"]):
        where = f"event {i}"
        if not isinstance(e, dict) or e.get("ph") not in PHASES:
            out.append(f"{where}: unknown phase {e.get('ph') if isinstance(e, dict) else e!r}")
            continue
        if not isinstance(e.get("pid"), int) or ("tid" in e and not isinstance(e["tid"], int)):
            out.append(f"{where}: pid/tid must be integers")
            continue
        if e["ph"] == "M":
            if e.get("name") not in METADATA:
                out.append(f"{where}: unknown metadata {e.get('name')!r}")
            elif e["name"].endswith("_name") and not isinstance((e.get("args") or {}).get("name"), str):
                out.append(f"{where}: {e['name']} without args.name")
            continue
        t = e.get("ts")
        if not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
            out.append(f"{where}: ts {t!r} is not a finite non-negative number")
            continue
        if e["ph"] == "X":
            d = e.get("dur")
            if not isinstance(d, (int, float)) or not math.isfinite(d) or d < 0:
                out.append(f"{where}: complete event with dur {d!r}")
                continue
            a = import_ns(t)
            slices[(e["pid"], e.get("tid", 0))].append((a, a + import_ns(d)))
        elif e["ph"] in ("s", "t", "f"):
            if "id" not in e:
                out.append(f"{where}: flow event without an id")
            else:
                flows.append((i, e))
    for (pid, tid), items in slices.items():
        items.sort(key=lambda x: (x[0], -x[1]))
        open_ends: list[int] = []
        for a, b in items:
            while open_ends and open_ends[-1] <= a:
                open_ends.pop()
            if open_ends and b > open_ends[-1]:
                out.append(f"pid {pid} tid {tid}: slice [{a}, {b}] ns overlaps the end of the slice it starts "
                           f"in ({open_ends[-1]} ns): not nested")
            open_ends.append(b)
    starts = {k: np.array([a for a, _b in v], np.int64) for k, v in slices.items()}
    ends = {k: np.array([b for _a, b in v], np.int64) for k, v in slices.items()}
    for i, e in flows:
        if e["ph"] == "f" and e.get("bp") != "e":
            continue  # binds to the next slice: any will do
        key = (e["pid"], e.get("tid", 0))
        t = import_ns(e["ts"])
        st, en = starts.get(key), ends.get(key)
        if st is None or en is None or not ((st <= t) & (en >= t)).any():
            out.append(f"event {i}: flow {e['ph']} id {e['id']} at {t} ns has no slice of pid {key[0]} tid {key[1]} "
                       "around it: Perfetto drops it")
    return out
