"""The standard summary of a run, recomputed from its samples whenever asked."""

from __future__ import annotations

from typing import Any

import numpy as np

from latscope.analysis import metrics
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
        "sent": int(len(flags)) - failed,
        "received": received,
        "lost": int(np.count_nonzero(flags & FLAG_LOST)),
        "duplicated": int(recorded.get("duplicated", 0)),
        "reordered": int(np.count_nonzero(flags & FLAG_REORDERED)),
        "foreign": int(recorded.get("foreign", 0)),
    }


def summarise(samples: Samples, recorded: dict[str, int] | None = None, worst: int = WORST_COUNT) -> dict[str, Any]:
    """The summary document (JSON-ready, microseconds) of a run's samples."""
    doc: dict[str, Any] = {"packets": packet_counts(samples, recorded)}
    sched = samples["sched_ns"]
    valid_sched = sched[sched != MISSING]
    doc["duration_ns"] = int(valid_sched.max() - valid_sched.min()) if len(valid_sched) > 1 else 0
    lat = None
    for name, key in SUMMARY_METRICS.items():
        values = metrics.METRICS[name][0](samples)
        if name == "latency":
            lat = values
        doc[key] = describe(values).as_us()
    doc["worst"] = worst_packets(samples, lat if lat is not None else metrics.latency(samples), worst)
    return doc


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
