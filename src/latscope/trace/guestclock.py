"""The guest's trace on the host's clock, and how sure that mapping is.

Two steps, as recorded by the run:

1. guest trace clock -> guest CLOCK_REALTIME: add ``to_realtime_ns`` (the
   guest's whole-second TAI offset for the ``tai`` clock; exact);
2. guest CLOCK_REALTIME -> host CLOCK_REALTIME: subtract the offset that the
   clock exchanges over the control channel bound before and after the run
   (latscope.remote.clock.offset_at, linear in between). Its bound is a hard
   causality bound, but under TCG it is hundreds of microseconds wide: wider
   than most stages.

Then a refinement inside that bound. A guest runs only while a vCPU thread
of its QEMU runs on the host: every guest event must fall inside one of the
host trace's run intervals of the vCPU thread of its guest CPU (guest CPU n
is QEMU's ``CPU n/...`` thread). Sliding the guest events over the allowed
range and counting how many land inside those intervals gives a sharp
maximum (tens of thousands of events, thousands of intervals): the
correction with the best fit, and as its own bound the half-width of the
range whose fit is within ``FIT_TOLERANCE`` of the best. It is used only when
the fit is good (``MIN_FIT``) and clearly better than the exchange's own
offset; otherwise the exchange's mapping stands and the breakdown says so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from latscope.remote.clock import OffsetEstimate, offset_at
from latscope.trace.table import EventTable, sort_by_time

MIN_EVENTS = 500
MAX_EVENTS = 60_000
MIN_FIT = 0.85
FIT_TOLERANCE = 0.005
COARSE_NS = 10_000
FINE_NS = 500


@dataclass(frozen=True)
class GuestClock:
    """How guest trace times became host times (ns)."""

    to_realtime_ns: int
    exchange_offset_ns: int          # guest - host at the start of the trace (exchange estimate)
    exchange_uncertainty_ns: int     # its hard bound (the wider of before and after)
    drift_ppm: float                 # from the exchanges before and after
    correction_ns: int               # added to the exchange offset by the refinement (0 when not used)
    uncertainty_ns: int              # the bound of the mapping used
    method: str                      # "vcpu-fit" or "exchange"
    fit: float | None = None         # share of guest events inside vCPU run intervals at the best correction
    fit_at_exchange: float | None = None
    events_fitted: int = 0
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def estimates(vm: dict[str, Any]) -> tuple[OffsetEstimate, OffsetEstimate | None]:
    """The exchange estimates before and after the run from run.json ``vm.clock``."""
    clock = vm.get("clock") or {}
    before = clock.get("before")
    if not before:
        raise ValueError("run.json has no vm.clock.before")
    after = clock.get("after")
    return OffsetEstimate(**before), OffsetEstimate(**after) if after else None


def exchange_times(guest: EventTable, to_realtime_ns: int, before: OffsetEstimate,
                   after: OffsetEstimate | None) -> np.ndarray:
    """Guest trace timestamps on the host clock by the exchange estimates alone."""
    rt = guest.ts + np.int64(to_realtime_ns)
    return rt - offset_at(before, after, rt)


def vcpu_intervals(host_segments: Any, tids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted, merged [start, end) intervals in which any of ``tids`` ran (host segments)."""
    sel = np.isin(host_segments.pid, tids)
    st, en = host_segments.start[sel], host_segments.end[sel]
    if len(st) == 0:
        return st, en
    o = np.argsort(st, kind="stable")
    st, en = st[o], en[o]
    # merge overlaps (several vCPU threads on several CPUs)
    run_end = np.maximum.accumulate(en)
    new = np.concatenate([[True], st[1:] > run_end[:-1]])
    idx = np.flatnonzero(new)
    ends = np.concatenate([run_end[idx[1:] - 1], [run_end[-1]]])
    return st[idx], ends


def _fit(ts: np.ndarray, st: np.ndarray, en: np.ndarray, shift: int) -> float:
    x = ts - shift
    k = np.searchsorted(st, x, side="right") - 1
    ok = (k >= 0) & (x <= en[np.maximum(k, 0)])
    return float(ok.mean())


def fit_correction(ts_by_cpu: list[np.ndarray], iv_by_cpu: list[tuple[np.ndarray, np.ndarray]],
                   bound_ns: int) -> tuple[int, int, float, float, int]:
    """(correction, its half-width, best fit, fit at 0, events used) over [-bound, +bound].

    ``ts_by_cpu[i]`` are guest event times (host clock by the exchange) that must fall into
    ``iv_by_cpu[i]``; a correction c means the true host time is ts - c.
    """
    pairs = [(t, iv) for t, iv in zip(ts_by_cpu, iv_by_cpu, strict=True) if len(t) and len(iv[0])]
    total = sum(len(t) for t, _ in pairs)
    if total == 0:
        return 0, bound_ns, 0.0, 0.0, 0
    step = max(1, total // MAX_EVENTS)
    pairs = [(t[::step], iv) for t, iv in pairs]
    used = sum(len(t) for t, _ in pairs)

    def score(c: int) -> float:
        return sum(_fit(t, st, en, c) * len(t) for t, (st, en) in pairs) / used

    coarse = np.arange(-bound_ns, bound_ns + 1, max(FINE_NS, min(COARSE_NS, bound_ns // 20 or FINE_NS)))
    sc = np.array([score(int(c)) for c in coarse])
    best = int(coarse[int(sc.argmax())])
    lo, hi = max(-bound_ns, best - 2 * COARSE_NS), min(bound_ns, best + 2 * COARSE_NS)
    fine = np.arange(lo, hi + 1, FINE_NS)
    sf = np.array([score(int(c)) for c in fine])
    top = float(sf.max())
    near = fine[sf >= top - FIT_TOLERANCE]
    centre = int((int(near.min()) + int(near.max())) // 2)
    half = int((int(near.max()) - int(near.min())) // 2 + FINE_NS)
    return centre, half, top, score(0), used


def to_host(guest: EventTable, vm: dict[str, Any], to_realtime_ns: int, host_segments: Any | None,
            vcpu_of_cpu: dict[int, list[int]], host_span: tuple[int, int] | None = None) -> tuple[EventTable, GuestClock]:
    """The guest table with timestamps on the host clock, and how they got there.

    ``host_span`` is where the host trace is complete on every CPU (an overwritten buffer loses
    its oldest events): only guest events inside it are fitted.
    """
    before, after = estimates(vm)
    ts = exchange_times(guest, to_realtime_ns, before, after)
    bound = max(before.uncertainty_ns, after.uncertainty_ns if after else 0)
    drift = 0.0 if after is None or after.at_ns == before.at_ns else \
        (after.offset_ns - before.offset_ns) / (after.at_ns - before.at_ns) * 1e6
    base: dict[str, Any] = {"to_realtime_ns": int(to_realtime_ns), "exchange_offset_ns": int(before.offset_ns),
                "exchange_uncertainty_ns": int(bound), "drift_ppm": round(drift, 3)}
    note = ""
    if host_segments is not None and vcpu_of_cpu and len(guest) >= MIN_EVENTS:
        cpus = sorted(vcpu_of_cpu)
        lo, hi = host_span if host_span else (np.iinfo(np.int64).min, np.iinfo(np.int64).max)
        inside = (ts > lo + bound) & (ts < hi - bound)
        ts_by = [ts[(guest.cpu == c) & inside] for c in cpus]
        iv_by = [vcpu_intervals(host_segments, vcpu_of_cpu[c]) for c in cpus]
        corr, half, fit, fit0, used = fit_correction(ts_by, iv_by, bound)
        if used >= MIN_EVENTS and fit >= MIN_FIT:
            clock = GuestClock(**base, correction_ns=corr, uncertainty_ns=min(half, bound), method="vcpu-fit",
                               fit=round(fit, 4), fit_at_exchange=round(fit0, 4), events_fitted=used)
            return sort_by_time(replace(guest, ts=ts - np.int64(corr))), clock
        note = (f"the guest events fit the vCPU thread's run intervals at best {fit:.0%} (need {MIN_FIT:.0%}): "
                "mapped by the clock exchange alone")
    elif not vcpu_of_cpu:
        note = "no vCPU thread of this QEMU in the host trace: mapped by the clock exchange alone"
    return sort_by_time(replace(guest, ts=ts)), GuestClock(**base, correction_ns=0, uncertainty_ns=int(bound), method="exchange",
                                             note=note)
