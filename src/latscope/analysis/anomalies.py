"""Anomaly detectors: what in a run is not plain noise, when it happened, and what it usually means.

Every detector compares the data with the run's own typical behaviour, so the
same thresholds work for a 5 µs loopback path and a 500 µs VM path:

- the baseline is the median of consecutive blocks of about a second of
  packets (it follows slow drift, so drift is not mistaken for spikes);
- the noise scale is p99 - p50 of the latency around that baseline;
- a packet is *elevated* when it exceeds the baseline by ``spike_k`` times
  that scale (and at least ``floor_ns``). For clean heavy-tailed data (even
  log-normal with sigma 0.5) the largest of 10 million packets stays below 7
  scales, so the default 10 does not fire on noise.

Formulas and thresholds are written down in docs/anomalies.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from latscope.store.samples import MISSING


@dataclass(frozen=True)
class Thresholds:
    """Detector settings; the defaults are documented in docs/anomalies.md."""

    spike_k: float = 8.0  # elevated: baseline + spike_k * (p99 - p50)
    floor_ns: float = 1_000.0  # ... and at least this far above the baseline
    gap: int = 2  # elevated packets at most this many packets apart form one event
    block_s: float = 1.0  # baseline block length (in packets: block_s / period)
    drift_floor_ns: float = 2_000.0  # smallest drift or wander worth reporting
    drift_noise_k: float = 10.0  # ... and at least this many times the block-median noise
    loss_burst_min: int = 3  # shortest run of lost packets called a burst
    loss_burst_chance: float = 0.01  # ... and random loss would make it this unlikely
    max_events: int = 5000  # events beyond this are counted, not listed


@dataclass(frozen=True)
class Anomaly:
    """One finding: what kind, where in time (s into the run), which packets, and what it means."""

    kind: str
    start_s: float
    end_s: float
    explanation: str
    packets: int = 0
    seq_first: int | None = None
    seq_last: int | None = None
    peak_us: float | None = None
    period_s: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "kind": self.kind,
            "start_s": round(self.start_s, 6),
            "end_s": round(self.end_s, 6),
            "packets": self.packets,
            "seq_first": self.seq_first,
            "seq_last": self.seq_last,
            "peak_us": self.peak_us,
            "period_s": self.period_s,
            "explanation": self.explanation,
        }
        doc.update(self.detail)
        return doc


@dataclass(frozen=True)
class RunSeries:
    """The per-packet inputs of the detectors, aligned by row."""

    offset_ns: np.ndarray  # time into the run (sender schedule), MISSING where unknown
    seq: np.ndarray
    latency_ns: np.ndarray  # NaN where not received
    lost: np.ndarray  # bool
    period_ns: int | None = None
    same_clock: bool | None = None  # both ends timestamped by one clock (loopback, veth)


#: Events starting this early into a run are blamed on warm-up first: the
#: first second, or the first 2 % of a shorter run.
WARMUP_S = 1.0
WARMUP_SHARE = 0.02
#: Periodicity is sought among the strongest events only.
PERIODIC_EVENTS = 400

KINDS = ("negative_latency", "drift", "oscillation", "periodic_spikes", "held_burst",
         "latency_burst", "spike", "loss_burst")


def find_anomalies(run: RunSeries, th: Thresholds = Thresholds()) -> list[Anomaly]:
    """Every anomaly in ``run``, ordered by kind (as in KINDS) then time."""
    ok = np.isfinite(run.latency_ns) & (run.offset_ns != MISSING)
    found: list[Anomaly] = []
    if np.count_nonzero(ok) >= 8:
        # Without losses (the usual case) the received packets are all rows:
        # views instead of three more copies of a 10-million-row run.
        if ok.all():
            rows, x, t = np.arange(len(ok)), run.latency_ns, run.offset_ns
        else:
            rows = np.flatnonzero(ok)
            x, t = run.latency_ns[rows], run.offset_ns[rows]
        del ok
        block = _block_len(run, len(rows), th)
        med, centres = _block_medians(x, t, block)
        found += _negative(run, rows, x, t)
        found += _drift(run, med, centres, _median_noise(x, block), th)
        events = _events(run, rows, x, t, med, block, th)
        found += _periodic(run, events, th)
        found += events
    found += _loss_bursts(run, th)
    order = {k: i for i, k in enumerate(KINDS)}
    return sorted(found, key=lambda a: (order.get(a.kind, 99), a.start_s))


# -- baseline ------------------------------------------------------------


def _block_len(run: RunSeries, n: int, th: Thresholds) -> int:
    """Packets per baseline block: about ``block_s`` of traffic, 50 at least, n/8 at most."""
    per_block = th.block_s * 1e9 / run.period_ns if run.period_ns else 1000
    return int(max(min(per_block, n // 8), min(50, n)))


def _block_medians(x: np.ndarray, t: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Median latency and mid time (s) of consecutive blocks of ``block`` received packets."""
    full = len(x) // block
    med = list(np.median(x[:full * block].reshape(full, block), axis=1)) if full else []
    mid = list(t[block // 2:full * block:block] / 1e9) if full else []
    if len(x) - full * block >= max(block // 4, 1):
        med.append(float(np.median(x[full * block:])))
        mid.append(float(t[(full * block + len(x)) // 2] / 1e9))
    return np.asarray(med, dtype=np.float64), np.asarray(mid, dtype=np.float64)


def _median_noise(x: np.ndarray, block: int) -> float:
    """Standard error of a block median, from the two halves of each block.

    The halves of one block see the same slow signal (drift, a slow wave), so
    their difference holds only the noise, autocorrelation included:
    var(half1 - half2) = 2 var(half) = 4 var(block median).
    """
    half = block // 2
    full = len(x) // (2 * half) if half else 0
    if full < 4:
        return 0.0
    # At most ~2000 evenly spread blocks: the noise level is a property of the run, not of each block.
    pairs = np.median(x[:full * 2 * half].reshape(full, 2, half)[::max(1, full // 2000)], axis=2)
    d = pairs[:, 0] - pairs[:, 1]
    return 1.4826 * float(np.median(np.abs(d - np.median(d)))) / 2.0


def _residuals(x: np.ndarray, med: np.ndarray, block: int) -> np.ndarray:
    """Latency minus its block's median (the short last block uses the last median)."""
    resid = np.empty_like(x)
    full = min(len(x) // block, len(med))
    np.subtract(x[:full * block].reshape(full, block), med[:full, None],
                out=resid[:full * block].reshape(full, block))
    resid[full * block:] = x[full * block:] - med[-1]
    return resid


# -- spikes and bursts -----------------------------------------------------


def _events(run: RunSeries, rows: np.ndarray, x: np.ndarray, t: np.ndarray, med: np.ndarray, block: int,
            th: Thresholds) -> list[Anomaly]:
    resid = _residuals(x, med, block)
    # The scale needs two percentiles, not every packet: a million evenly spaced ones pin them down.
    p50, p99 = np.percentile(resid[::max(1, len(resid) // 1_000_000)], (50.0, 99.0))
    limit = max(th.spike_k * (p99 - p50), th.floor_ns)
    hit = np.flatnonzero(resid > p50 + limit)
    del resid
    if len(hit) == 0:
        return []
    cut = np.flatnonzero(np.diff(rows[hit]) > th.gap) + 1
    groups = np.split(hit, cut)
    typical = float(np.median(med))
    span_s = float(t[-1] - t[0]) / 1e9
    out: list[Anomaly] = []
    for g in sorted(groups, key=lambda g: -float(x[g].max()))[:th.max_events]:
        out.append(_classify(run, rows, x, t, g, typical, span_s, limit))
    if len(groups) > th.max_events:
        out.append(Anomaly("spike", float(t[hit[0]]) / 1e9, float(t[hit[-1]]) / 1e9,
                           f"{len(groups) - th.max_events} more elevated events not listed "
                           f"(the {th.max_events} largest are)", packets=len(groups) - th.max_events))
    return out


def _classify(run: RunSeries, rows: np.ndarray, x: np.ndarray, t: np.ndarray, g: np.ndarray, typical: float,
              span_s: float, limit: float) -> Anomaly:
    """One event: a held-then-released burst, a sustained burst, or an isolated spike."""
    lat, ts = x[g], t[g].astype(np.float64)
    start, end = ts[0] / 1e9, ts[-1] / 1e9
    peak = float(lat.max())
    seqs = run.seq[rows[g]]
    common: dict[str, Any] = {"packets": len(g), "seq_first": int(seqs[0]), "seq_last": int(seqs[-1]), "peak_us": round(peak / 1000, 3)}
    warm = "" if start > min(WARMUP_S, WARMUP_SHARE * span_s) else (
        " It happened at the very start of the run, which points at warm-up (cold caches, first page "
        "faults, neighbour resolution) rather than the path; --skip-warmup leaves it out.")
    if len(g) >= 3 and ts[-1] > ts[0]:
        arrival = ts + lat
        slope = float(np.polyfit(ts - ts[0], lat, 1)[0])
        if (arrival.max() - arrival.min()) <= 0.3 * (ts[-1] - ts[0]) and -1.25 <= slope <= -0.75:
            return Anomaly(
                "held_burst", start, end,
                f"{len(g)} packets sent over {(ts[-1] - ts[0]) / 1e6:.3f} ms (seq {seqs[0]}-{seqs[-1]}) arrived "
                f"together; their latency fell linearly from {lat[0] / 1000:.3f} to {lat[-1] / 1000:.3f} us, "
                f"one period per packet. Something held the path (a descheduled vCPU or receive thread, "
                f"softirq starvation, a paused VM, a blocked queue) and then delivered everything at once.{warm}",
                detail={"slope": round(slope, 3), "held_us": round(peak / 1000, 3)}, **common)
        if len(g) >= 4:
            return Anomaly(
                "latency_burst", start, end,
                f"{len(g)} packets within {(ts[-1] - ts[0]) / 1e6:.3f} ms (seq {seqs[0]}-{seqs[-1]}) were "
                f"elevated, up to {peak / 1000:.3f} us against a typical {typical / 1000:.3f} us: the path was "
                f"slower for a while (contention, a load burst, a busy CPU) rather than for one packet.{warm}",
                **common)
    word = "packet" if len(g) == 1 else f"{len(g)} neighbouring packets"
    what = f"{word} (seq {seqs[0]}{'' if len(g) == 1 else f'-{seqs[-1]}'}) took {peak / 1000:.3f} us, " \
           f"{peak / typical:.1f}x the typical {typical / 1000:.3f} us, while the packets around it were normal."
    why = warm or (" A one-off interruption (an interrupt, a preemption, an SMI or a hypervisor exit); "
                   "`latscope run --trace` names it.")
    return Anomaly("spike", start, end, what + why, **common)


def _tolerance(period: np.ndarray, tick: float) -> np.ndarray:
    """How far a recurrence may stray from the period: a few packets, or 0.2 % of the period."""
    return np.maximum(3 * tick, 0.002 * period)


def _periodic(run: RunSeries, events: list[Anomaly], th: Thresholds) -> list[Anomaly]:
    """Events that recur with one period (score: events with a partner one period later)."""
    strongest = sorted((e for e in events if e.packets), key=lambda e: -(e.peak_us or 0.0))[:PERIODIC_EVENTS]
    times = np.sort(np.array([e.start_s for e in strongest], dtype=np.float64))
    if len(times) < 4:
        return []
    tick = (run.period_ns or 1_000_000) / 1e9
    span = float(times[-1] - times[0])
    diffs = np.concatenate([times[k:] - times[:-k] for k in range(1, min(6, len(times)))])
    diffs = np.unique(np.round(diffs[diffs > 4 * tick] / tick) * tick)
    if len(diffs) == 0:
        return []
    # All candidate periods at once: rows are periods, columns events.
    tol = _tolerance(diffs, tick)[:, None]
    ahead = times[None, :] + diffs[:, None]
    after = np.searchsorted(times, ahead + tol, side="right") > np.searchsorted(times, ahead - tol)
    back = times[None, :] - diffs[:, None]
    before = np.searchsorted(times, back + tol, side="right") > np.searchsorted(times, back - tol)
    scores = np.count_nonzero(after, axis=1)  # events with a partner one period later
    fits = np.count_nonzero(after | before, axis=1)  # events with a partner either side
    # Multiples of the period score almost as well; the smallest period that
    # does is the fundamental one (diffs are sorted).
    pick = int(np.flatnonzero(scores >= 0.8 * scores.max())[0])
    score, period = int(scores[pick]), float(diffs[pick])
    # Random events also find partners: about N * (N / span) * 2 tol of them for
    # any one period (Poisson). The pattern counts only if that many would
    # happen by chance with probability < 1 %, after trying every candidate
    # period (Bonferroni), and if it shows at least four occurrences.
    chance = len(times) * len(times) * 2 * float(_tolerance(np.array([period]), tick)[0]) / max(span, tick)
    if score < 3 or span < 3 * period or _poisson_sf(score - 1, chance) * len(diffs) >= 0.01:
        return []
    return [Anomaly(
        "periodic_spikes", float(times[0]), float(times[-1]),
        f"latency events recur every ~{_fmt_s(period)} ({int(fits[pick])} of {len(times)} events fit this "
        f"period): look for something periodic on the path (a timer or cron job, a monitoring agent, "
        f"vmstat/RCU housekeeping, a watchdog, SMIs, a guest's or host's periodic work).",
        packets=int(fits[pick]), period_s=round(period, 6), detail={"events": len(times)})]


def _poisson_sf(k: int, mu: float) -> float:
    """P(X > k) for X ~ Poisson(mu) (scipy.stats would cost half a second to import in `show`)."""
    if mu <= 0:
        return 0.0
    term = math.exp(-mu)
    cdf = term
    for i in range(1, k + 1):
        term *= mu / i
        cdf += term
    return max(0.0, 1.0 - cdf)


# -- slow changes ----------------------------------------------------------


def _drift(run: RunSeries, med: np.ndarray, centres: np.ndarray, noise: float, th: Thresholds) -> list[Anomaly]:
    """A steady trend (drift) or a slow wave (oscillation) of the block medians."""
    if len(med) < 10:
        return []
    floor = max(th.drift_floor_ns, th.drift_noise_k * noise)
    slope, icept = np.polyfit(centres - centres[0], med, 1)
    fit = icept + slope * (centres - centres[0])
    resid = med - fit
    total_var = float(np.var(med))
    r2 = 1.0 - float(np.var(resid)) / total_var if total_var > 0 else 0.0
    change = float(slope * (centres[-1] - centres[0]))
    start, end = float(centres[0]), float(centres[-1])
    out: list[Anomaly] = []
    cause = _clock_cause(run)
    if abs(change) >= floor and r2 >= 0.5:
        rate = slope * 60
        out.append(Anomaly(
            "drift", start, end,
            f"the typical latency moved steadily by {change / 1000:+.3f} us over {end - start:.1f} s "
            f"({rate / 1000:+.3f} us per minute, from {fit[0] / 1000:.3f} to {fit[-1] / 1000:.3f} us). {cause}",
            peak_us=round(change / 1000, 3), detail={"r2": round(r2, 3), "us_per_min": round(rate / 1000, 3)}))
    swing = float(np.percentile(resid, 97.5) - np.percentile(resid, 2.5))
    if swing >= floor and len(resid) >= 10 and _lag1(resid) >= 0.5:
        period = _dominant_period(resid, centres)
        every = f", period ~{_fmt_s(period)}" if period else ""
        out.append(Anomaly(
            "oscillation", start, end,
            f"the typical latency wanders slowly by about {swing / 1000:.3f} us peak to peak{every}. {cause}",
            peak_us=round(swing / 1000, 3), period_s=None if period is None else round(period, 3)))
    return out


def _clock_cause(run: RunSeries) -> str:
    if run.same_clock:
        return ("Both ends are timestamped by the same clock here, so this is a real change of the path "
                "(growing queues, changing load, CPU frequency or thermal state), not a clock problem.")
    return ("One-way latency between two clocks moves like this when they are not synchronised or their "
            "servo (ptp4l, phc2sys, chrony) is still converging or oscillating; a real path change rarely "
            "moves so smoothly. Check the synchronisation offset logs.")


def _lag1(v: np.ndarray) -> float:
    v = v - v.mean()
    den = float(np.dot(v, v))
    return float(np.dot(v[1:], v[:-1])) / den if den > 0 else 0.0


def _dominant_period(resid: np.ndarray, centres: np.ndarray) -> float | None:
    """The period of the strongest slow wave, if the run holds at least two of it."""
    step = float(np.median(np.diff(centres)))
    if step <= 0:
        return None
    power = np.abs(np.fft.rfft(resid - resid.mean())) ** 2
    freqs = np.fft.rfftfreq(len(resid), d=step)
    if len(power) < 3:
        return None
    k = int(np.argmax(power[1:])) + 1
    period = 1.0 / freqs[k]
    return period if period * 2 <= step * len(resid) else None


def _negative(run: RunSeries, rows: np.ndarray, x: np.ndarray, t: np.ndarray) -> list[Anomaly]:
    neg = np.flatnonzero(x < 0)
    if len(neg) == 0:
        return []
    why = ("The timestamps come from one host here, so a hardware clock (PHC) that is not synchronised with "
           "the system clock is the likely cause." if run.same_clock else
           "The receiver's clock is behind the sender's: the two clocks are not synchronised (check ptp4l and "
           "phc2sys, and that both hosts follow the same grandmaster); absolute one-way values cannot be trusted, "
           "only differences between runs with the same clocks.")
    return [Anomaly(
        "negative_latency", float(t[neg[0]]) / 1e9, float(t[neg[-1]]) / 1e9,
        f"{len(neg)} packets arrived before they were sent according to their timestamps (down to "
        f"{float(x[neg].min()) / 1000:.3f} us). {why}",
        packets=len(neg), seq_first=int(run.seq[rows[neg[0]]]), seq_last=int(run.seq[rows[neg[-1]]]),
        peak_us=round(float(x[neg].min()) / 1000, 3))]


# -- loss ----------------------------------------------------------------


def _loss_bursts(run: RunSeries, th: Thresholds) -> list[Anomaly]:
    """Runs of consecutive lost packets too long to be independent random losses."""
    lost = np.asarray(run.lost, dtype=bool)
    n, nlost = len(lost), int(np.count_nonzero(lost))
    if nlost < th.loss_burst_min or nlost == n:
        return []
    edges = np.diff(np.concatenate(([0], lost.view(np.int8), [0])))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    length = stops - starts
    rate = nlost / n
    # With independent losses at this rate, a run of L starts at a given packet with
    # probability ~rate**L; keep the runs that n tries would produce less than 1 % of the time.
    chance = n * rate ** length.astype(np.float64)
    burst = np.flatnonzero((length >= th.loss_burst_min) & (chance < th.loss_burst_chance))
    out = []
    period = run.period_ns or 0
    for i in burst[np.argsort(-length[burst])][:th.max_events]:
        a, b = int(starts[i]), int(stops[i]) - 1
        ta = run.offset_ns[a] if run.offset_ns[a] != MISSING else 0
        tb = run.offset_ns[b] if run.offset_ns[b] != MISSING else ta
        ms = (int(tb) - int(ta) + period) / 1e6
        out.append(Anomaly(
            "loss_burst", ta / 1e9, tb / 1e9,
            f"{length[i]} consecutive packets (seq {run.seq[a]}-{run.seq[b]}, {ms:.3f} ms) were lost while "
            f"the overall loss rate is {100 * rate:.3g}%: the path dropped everything for a while (a link "
            f"going down, a full queue, a paused VM, a receiver that stopped reading), not random drops.",
            packets=int(length[i]), seq_first=int(run.seq[a]), seq_last=int(run.seq[b])))
    return out


def _fmt_s(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.3g} s"
    return f"{seconds * 1000:.3g} ms"
