"""The standard summary of a run, recomputed from its samples whenever asked."""

from __future__ import annotations

from typing import Any

import numpy as np

from latscope.analysis import chunked, metrics, roundtrip
from latscope.analysis.stats import describe
from latscope.store.samples import FLAG_LOST, FLAG_REORDERED, FLAG_SEND_FAILED, MISSING, Samples

#: Metrics in every summary, with the JSON key they appear under.
SUMMARY_METRICS = {
    "latency": "latency_us",
    "delta": "delta_us",
    "wakeup_latency": "wakeup_latency_us",
    "arrival_latency": "arrival_latency_us",
    "sender_latency": "sender_latency_us",
    "path_delay": "path_delay_us",
    "e2e": "e2e_us",
}

WORST_COUNT = 5


def packet_counts(samples: Samples, recorded: dict[str, int] | None = None) -> dict[str, int]:
    """sent/received/lost/duplicated/reordered/foreign.

    Sent, received, lost and reordered come from the samples; duplicated and
    foreign cannot (duplicates are folded into one row, foreign packets have no
    row) and are taken from the counts recorded at capture time.
    """
    recorded = recorded or {}
    flags = samples["flags"]
    rx = metrics.rx_best(samples)
    received = int(np.count_nonzero(rx != MISSING))
    failed = int(np.count_nonzero(flags & FLAG_SEND_FAILED))
    return {
        "sent": len(flags) - failed,
        "received": received,
        "lost": int(np.count_nonzero(flags & FLAG_LOST)),
        "duplicated": int(recorded.get("duplicated", 0)),
        "reordered": int(np.count_nonzero(flags & FLAG_REORDERED)),
        "foreign": int(recorded.get("foreign", 0)),
    }


def summarise(samples: Samples, recorded: dict[str, int] | None = None, worst: int = WORST_COUNT) -> dict[str, Any]:
    """The summary document (JSON-ready, microseconds) of a run's samples."""
    doc, _ = summarise_columns(samples, recorded, worst)
    return doc


#: The order metrics are computed in: neighbours share columns, so a lazy
#: column source can drop each column as soon as no later metric needs it.
_COMPUTE_ORDER = ("latency", "delta", "path_delay", "arrival_latency", "e2e", "wakeup_latency", "sender_latency")


def summarise_columns(
    samples: Any,
    recorded: dict[str, int] | None = None,
    worst: int = WORST_COUNT,
    names: tuple[str, ...] | None = None,
    keep: tuple[str, ...] = (),
    percentiles: dict[str, dict[str, float]] | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The summary of ``names`` (default: every summary metric) and the arrays named in ``keep``.

    ``keep`` names metrics, or ``"lost"`` for the boolean mask of lost rows.
    ``samples`` is a Samples, or a LazyColumns (analysis.columns): then each
    row group is read once and every metric is computed from it before the
    next, at most four metric arrays are held at once, and a 10-million-packet
    run stays well under a gigabyte. The numbers are the same either way.
    ``percentiles`` may give, per metric, the percentiles to compute instead
    of stats.PERCENTILES (a text summary does not print all of them).
    """
    wanted = [n for n in _COMPUTE_ORDER if names is None or n in names or n == "latency"]
    doc: dict[str, Any] = {}
    stats: dict[str, dict[str, Any]] = {}
    kept: dict[str, np.ndarray] = {}
    for first in range(0, len(wanted), _PER_PASS):
        result = chunked.scan(samples, wanted[first:first + _PER_PASS], recorded, packet_counts)
        if not doc:
            doc = {"packets": result.counts, "duration_ns": result.duration_ns}
            if "lost" in keep:
                kept["lost"] = result.lost
        values = result.values
        del result
        if "wakeup_latency" in values:
            doc["schedule"] = missed_periods(values["wakeup_latency"], doc)
        for name in list(values):
            held = name in keep or name == "latency"
            # A metric array nobody keeps is ours to reorder while taking percentiles.
            pcts = (percentiles or {}).get(name)
            stats[name] = describe(values[name], pcts, scratch=not held).as_us()
            if held:
                kept[name] = values[name]
            del values[name]
    doc.update({SUMMARY_METRICS[n]: stats[n] for n in SUMMARY_METRICS if n in stats})
    rt_doc = roundtrip.summary(samples)
    if rt_doc is not None:
        doc["round_trip"] = rt_doc
    doc["worst"] = worst_packets(samples, kept["latency"], worst) if worst > 0 else []
    if "latency" not in keep:
        del kept["latency"]
    return doc, kept


def missed_periods(wakeup_ns: np.ndarray, doc: dict[str, Any]) -> dict[str, Any]:
    """Packets whose sender woke a whole period or more after the schedule: the stream lost its rate there.

    The period is the span of the schedule over its intervals (the schedule is strictly
    periodic), so imported runs without a stored period get one too.
    """
    sent = int(doc["packets"].get("sent") or 0)
    span = int(doc.get("duration_ns") or 0)
    finite = wakeup_ns[np.isfinite(wakeup_ns)] if wakeup_ns.dtype.kind == "f" else wakeup_ns
    if sent < 2 or span <= 0 or not len(finite):
        return {"scheduled": sent, "missed_periods": 0, "period_ns": None}
    period = span / (sent - 1)
    return {"scheduled": sent, "missed_periods": int(np.count_nonzero(finite >= period)),
            "period_ns": round(period)}


#: Metrics computed per pass over the file: each holds one 8-byte array per packet.
_PER_PASS = 4


def worst_packets(samples: Samples, latency_ns: np.ndarray, n: int) -> list[dict[str, Any]]:
    """The ``n`` packets with the highest latency: seq, latency and time into the run."""
    ok = np.flatnonzero(~np.isnan(latency_ns))
    if len(ok) == 0 or n <= 0:
        return []
    k = min(n, len(ok))
    top = ok[np.argpartition(latency_ns[ok], -k)[-k:]]
    top = top[np.argsort(latency_ns[top])[::-1]]
    sched = samples["sched_ns"]
    t0 = sched[sched != MISSING].min() if np.any(sched != MISSING) else MISSING
    out = []
    for i in top:
        at = None if sched[i] == MISSING or t0 == MISSING else round((int(sched[i]) - int(t0)) / 1e9, 6)
        out.append({"seq": int(samples["seq"][i]), "latency_us": round(float(latency_ns[i]) / 1000, 3), "at_s": at})
    return out
