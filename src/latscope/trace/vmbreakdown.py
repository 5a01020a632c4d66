"""``latscope breakdown RUN`` for a run through a QEMU guest: host and guest traces, one path.

The host trace (trace/events.parquet) and the guest's (trace/guest-events.parquet,
latscope.trace.guestcapture) are put on one clock (latscope.trace.guestclock),
each packet is followed across both (latscope.trace.vmpath), and late packets
are explained with the host's view of QEMU's threads and the guest's view of
its own CPU (latscope.trace.vmculprits). The result is the same Breakdown as
on one host, with the VM's stage model and a ``vm`` section: the direction,
QEMU's threads by role, how the guest trace was mapped and how well, and
per QEMU thread how long it kept the vCPU thread off its CPU in late packets.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from latscope.errors import ConfigError, FormatError, TraceError
from latscope.store.samples import MISSING, Samples
from latscope.trace import attribution as attr
from latscope.trace import guestclock, model
from latscope.trace import qemuthreads as qt
from latscope.trace.breakdown import (
    Breakdown,
    Options,
    _packets,
    _threshold,
    _to_probe_clock,
    load_run_table,
    load_trace_file,
    metric_spans,
    span_at,
    trace_info,
)
from latscope.trace.guestcapture import TABLE_FILE, TEXT_FILE
from latscope.trace.stages import trace_pids
from latscope.trace.table import EventTable, read_table
from latscope.trace.vmculprits import VmCulprits
from latscope.trace.vmpath import FORWARD, REVERSE, locate_forward, locate_reverse

MAX_EXPLAINED = 5000


def load_guest_table(run_path: Path, recorded: dict[str, Any] | None) -> tuple[EventTable | None, str | None]:
    """The run's guest trace, or (None, why not)."""
    tdir = run_path / "trace"
    if (tdir / TABLE_FILE).exists():
        try:
            return read_table(tdir / TABLE_FILE), None
        except FormatError:
            if not (tdir / TEXT_FILE).exists():
                raise
    if (tdir / TEXT_FILE).exists():
        table = load_trace_file(tdir / TEXT_FILE)
        return table.with_meta(**{k: v for k, v in (recorded or {}).items() if k in ("to_realtime_ns", "clock")}), None
    if recorded and recorded.get("error"):
        return None, f"the guest trace could not be stored: {recorded['error']}"
    if recorded is None:
        return None, "the run has no guest trace (recorded before latscope traced guests)"
    return None, "the guest trace is missing from the run directory"


def analyse_vm_run(run_path: Path, extra: dict[str, Any], samples: Samples, options: Options = Options(), *,
                   run_id: str | None = None, overruns: int | None = None) -> Breakdown:
    """Break down a run through a guest from its run directory and run.json ``extra``."""
    rec = extra.get("trace") or {}
    host = load_run_table(run_path, rec)
    if "to_realtime_ns" not in host.meta and rec.get("to_realtime_ns") is not None:
        # re-parsed from the stored text: the clock facts are in run.json
        host = host.with_meta(**{k: rec[k] for k in ("to_realtime_ns", "clock", "clock_mapping") if k in rec})
    guest, why = load_guest_table(run_path, extra.get("guest_trace"))
    return analyse_vm(host, guest, samples, extra["vm"], extra.get("guest_trace"), options, run_id=run_id,
                      overruns=overruns, guest_missing=why)


def analyse_vm(host: EventTable, guest: EventTable | None, samples: Samples, vm: dict[str, Any],
               guest_rec: dict[str, Any] | None, options: Options = Options(), *, run_id: str | None = None,
               overruns: int | None = None, guest_missing: str | None = None) -> Breakdown:
    """The breakdown of a VM run (``vm`` is run.json ``vm``, ``guest_rec`` its ``guest_trace``)."""
    if options.metric == "trace":
        raise ConfigError("--metric trace needs one trace; a VM run is judged on e2e or latency")
    if samples is None or len(samples) == 0:
        raise TraceError("a VM run's breakdown needs the run's samples")
    if len(host) == 0:
        raise TraceError("the host trace is empty: no events were recorded (was tracing on during the run?)")
    warnings: list[str] = list(host.meta.get("warnings", []))
    host, mapping = _to_probe_clock(host, samples, warnings)
    htl = model.build(host)
    threads = qt.from_run(vm, guest_rec, host)
    direction = vm.get("direction") or "forward"
    gtl, clock = None, None
    if guest is not None and len(guest):
        to_rt = int(guest.meta.get("to_realtime_ns", (guest_rec or {}).get("to_realtime_ns", 0)) or 0)
        try:
            g_on_host, clock = guestclock.to_host(guest, vm, to_rt, htl.segments, threads.vcpu_of_guest_cpu(),
                                                  complete_span(htl))
        except ValueError as exc:
            raise TraceError(f"cannot put the guest trace on the host clock: {exc}") from None
        gtl = model.build(g_on_host)
        if clock.note:
            warnings.append(clock.note)
    else:
        warnings.append((guest_missing or "the guest trace is empty") + ": the guest's stages fold into the "
                        "last one (" + ("guest user space" if direction == "forward" else "QEMU picks packet up") + ")")
    h_s, h_r = trace_pids(htl)
    g_s, g_r = trace_pids(gtl) if gtl is not None else (-1, -1)
    if direction == "reverse":
        sender, receiver = g_s, h_r
        host_pids, guest_pids = {"receiver": receiver}, {"sender": sender}
    else:
        sender, receiver = h_s, g_r
        host_pids, guest_pids = {"sender": sender}, {"receiver": receiver}
    sender = options.sender_pid if options.sender_pid is not None else sender
    receiver = options.receiver_pid if options.receiver_pid is not None else receiver
    if (direction == "forward" and sender < 0) or (direction == "reverse" and receiver < 0):
        raise TraceError("the host trace has no latscope markers of this run's host half")
    seq, probe, values, metric = _packets(htl, samples, options.metric, warnings)
    shift = clock.correction_ns if clock is not None else 0
    if clock is not None and shift:
        probe, values = _refine_probe(probe, values, shift, direction)
        warnings.append(f"the guest clock mapping was refined by {shift / 1000:+.1f} us within the exchange's "
                        f"+-{clock.exchange_uncertainty_ns / 1000:.0f} us (vCPU fit): this breakdown's latencies "
                        f"differ from the run's summary by {(-shift if direction != 'reverse' else shift) / 1000:+.1f} us")
    if direction == "reverse":
        vp = locate_reverse(htl, gtl, seq, probe, sender, receiver, threads, _guest_dev(vm),
                            list((vm.get("network") or {}).get("devices") or ()))
        traced = (vp.packets.rows[:, 11] >= 0) & ((vp.packets.rows[:, 2] >= 0) | (gtl is None))
    else:
        vp = locate_forward(htl, gtl, seq, probe, sender, receiver, threads)
        traced = (vp.packets.rows[:, 2] >= 0) & (vp.packets.rows[:, 14 if gtl is not None else 7] >= 0)
    warnings += list(vp.notes)
    pk = vp.packets
    durations = pk.durations()
    spans = metric_spans(probe)
    if spans is not None:
        durations = attr.clip_to_spans(pk.times, durations, spans)
    valid = ~np.isnan(values)
    threshold, source = _threshold(values[valid], options.threshold_ns)
    late = valid & (values > threshold)
    normal = valid & ~late & traced
    present = pk.times[:, 1:] != MISSING
    base = attr.baselines(durations, normal, present, pk.model.names, clipped=spans is not None)
    late_idx = np.flatnonzero(late & traced)
    late_idx = late_idx[np.argsort(-values[late_idx], kind="stable")]
    if len(late_idx) > MAX_EXPLAINED:
        warnings.append(f"{len(late_idx)} late packets: the {MAX_EXPLAINED} worst are broken down")
        late_idx = late_idx[:MAX_EXPLAINED]
    ctx = VmCulprits(htl, gtl, vp, threads, host_pids, guest_pids)
    explained = [attr.explain(htl, pk, int(i), float(values[i]), durations, base, ctx,
                              span=span_at(spans, int(i))) for i in late_idx]
    untraced = int((late & ~traced).sum())
    if untraced:
        warnings.append(f"{untraced} late packets are not (fully) in the traces and are not broken down")
    info = trace_info(host, htl, mapping, overruns, warnings, "the host trace")
    vm_info = {
        "direction": direction, "stage_model": pk.model.key, "accel": vm.get("accel"),
        "variant": (vm.get("network") or {}).get("variant"),
        "threads": [{"tid": tid, "name": name, "role": role, "label": threads.label(tid)}
                    for tid, (name, role) in sorted(threads.by_tid.items())],
        "guest_trace": None, "clock": clock.to_json() if clock else None,
        "vcpu_preemption": vcpu_summary(explained),
    }
    if gtl is not None and guest is not None:
        guest_trace = trace_info(guest, gtl, clock.method if clock else "exchange",
                                 (guest_rec or {}).get("overruns"), warnings, "the guest trace")
        guest_trace["sender_pid" if direction == "reverse" else "receiver_pid"] = \
            sender if direction == "reverse" else receiver
        vm_info["guest_trace"] = guest_trace
    return Breakdown(
        metric=metric, threshold_ns=float(threshold), threshold_source=source, packets=int(valid.sum()),
        traced=int(traced.sum()), late_count=int(late.sum()), late_untraced=untraced, late=tuple(explained),
        baselines=tuple(base), culprits=tuple(attr.rank(explained)),
        dominant=dict(Counter(p.dominant_stage for p in explained).most_common()),
        collateral=int(sum(p.collateral_of is not None for p in explained)),
        sender_pid=sender, receiver_pid=receiver, trace=info, warnings=tuple(warnings), run_id=run_id,
        timeline=htl, packets_detail=pk, model=REVERSE if direction == "reverse" else FORWARD, vm=vm_info,
        guest_timeline=gtl,
    )


def complete_span(tl: model.Timeline) -> tuple[int, int]:
    """From the latest first event to the earliest last event over the CPUs that have events."""
    firsts = [int(tl.table.ts[r[0]]) for r in tl.cpu_rows if len(r)]
    lasts = [int(tl.table.ts[r[-1]]) for r in tl.cpu_rows if len(r)]
    return (max(firsts), min(lasts)) if firsts else (0, 0)


def _refine_probe(probe: dict[str, np.ndarray], values: np.ndarray, shift: int,
                  direction: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The probe's guest-side times moved like the guest trace (true host time = mapped time - shift)."""
    cols = ("sched_ns", "wake_ns", "span_start") if direction == "reverse" else ("rx_user_ns", "span_end")
    out = dict(probe)
    for c in (c for c in cols if c in probe):
        col = np.asarray(probe[c]).astype(np.int64, copy=True)
        col[col != MISSING] -= shift
        out[c] = col
    return out, values + shift if direction == "reverse" else values - shift


def vcpu_summary(late: list[attr.LatePacket]) -> list[dict[str, Any]]:
    """Per thing that kept a vCPU thread off its CPU in late packets: packets, total and worst (ns)."""
    acc: dict[tuple[str, str], list[int]] = defaultdict(list)
    pids: dict[tuple[str, str], set[int]] = defaultdict(set)
    for p in late:
        per: dict[tuple[str, str], int] = defaultdict(int)
        for c in p.culprits:
            if c.where == "host" and c.kind != "vcpu" and c.victim.startswith("vCPU thread"):
                per[(c.kind, c.name)] += c.ns
                if c.pid > 0:
                    pids[(c.kind, c.name)].add(c.pid)
        for key, ns in per.items():
            acc[key].append(ns)
    rows = [{"kind": k, "name": n, "pids": sorted(pids[(k, n)]), "packets": len(v), "total_ns": int(sum(v)),
             "max_ns": int(max(v))} for (k, n), v in acc.items()]
    return sorted(rows, key=lambda r: -r["total_ns"])


def _guest_dev(vm: dict[str, Any]) -> str | None:
    """The host device QEMU's network backend is attached to (the tap or the macvtap)."""
    for dev in (vm.get("network") or {}).get("devices") or ():
        if str(dev).endswith(("tap", "mv")):
            return str(dev)
    return None
