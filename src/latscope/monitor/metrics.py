"""The Prometheus exporter of `latscope monitor`: what an operator alerts on, from prometheus_client.

All figures come from the rows the monitor has handed over to its samples
files (the open interval's file included), so the histogram's count equals
the received rows stored, the lost counter the rows flagged lost, and so on.
A custom collector reads one consistent snapshot under a lock.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client import start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from latscope.monitor.histogram import PROM_BOUNDS_NS

PREFIX = "latscope"


#: name -> help of the counters (each exported as latscope_<name>_total).
COUNTERS = {
    "packets_sent": "Packets sent (send calls that succeeded), stored rows.",
    "packets_received": "Packets received with a latency, stored rows.",
    "packets_lost": "Packets sent and never received (or later than the hand-over allowed), stored rows.",
    "packets_reordered": "Stored rows flagged reordered (arrived after a higher seq).",
    "packets_duplicated": "Stored rows flagged duplicated (the packet arrived more than once).",
    "packets_foreign": "Datagrams at the receiver that were not this stream's (any reason).",
    "packets_late": "Packets refused because they arrived after their slot was handed over (stored as lost).",
    "send_failed": "Sends the kernel refused (ENOBUFS, ...); not counted as sent.",
}

@dataclass
class Snapshot:
    """The exporter's state; the monitor updates it under ``MetricsState.lock``."""

    bucket_counts: np.ndarray = field(default_factory=lambda: np.zeros(len(PROM_BOUNDS_NS) + 1, np.int64))
    latency_sum_ns: int = 0
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    interval: dict[str, float] = field(default_factory=dict)
    clock_synchronised: float = math.nan
    clock_bound_s: float = math.nan
    steal_s: dict[int, float] = field(default_factory=dict)
    limits: dict[str, tuple[float, float, bool]] = field(default_factory=dict)
    files: int = 0
    up_since_s: float = 0.0


INTERVAL_GAUGES = {
    "p50": "Median latency of the last complete interval.",
    "p99": "99th percentile latency of the last complete interval.",
    "p999": "99.9th percentile latency of the last complete interval.",
    "max": "Maximum latency of the last complete interval.",
}


class MetricsState:
    """The snapshot and its lock; ``collect`` is what prometheus_client calls for each scrape."""

    def __init__(self, labels: dict[str, str]) -> None:
        self.lock = threading.Lock()
        self.snap = Snapshot()
        self.labels = labels

    def add_block(self, prom_counts: np.ndarray, latency_sum_ns: int, counts: dict[str, int]) -> None:
        with self.lock:
            self.snap.bucket_counts += prom_counts
            self.snap.latency_sum_ns += latency_sum_ns
            for k, v in counts.items():
                self.snap.counters[k] = self.snap.counters.get(k, 0) + int(v)

    def update(self, **values: Any) -> None:
        with self.lock:
            for k, v in values.items():
                setattr(self.snap, k, v)


class _Collector(Collector):
    def __init__(self, state: MetricsState) -> None:
        self.state = state

    def collect(self) -> Iterator[Any]:
        st = self.state
        keys, vals = list(st.labels), list(st.labels.values())
        with st.lock:
            s = Snapshot(bucket_counts=st.snap.bucket_counts.copy(), latency_sum_ns=st.snap.latency_sum_ns,
                         counters=dict(st.snap.counters), interval=dict(st.snap.interval),
                         clock_synchronised=st.snap.clock_synchronised, clock_bound_s=st.snap.clock_bound_s,
                         steal_s=dict(st.snap.steal_s), limits=dict(st.snap.limits), files=st.snap.files,
                         up_since_s=st.snap.up_since_s)
        h = HistogramMetricFamily(f"{PREFIX}_latency_seconds", "One-way latency (rx_best - send_ns) of stored "
                                  "packets.", labels=keys)
        cum = np.cumsum(s.bucket_counts)
        buckets = [(_bound(b), float(c)) for b, c in zip(PROM_BOUNDS_NS, cum[:-1], strict=True)]
        buckets.append(("+Inf", float(cum[-1])))
        h.add_metric(vals, buckets, s.latency_sum_ns / 1e9)
        yield h
        for name, text in COUNTERS.items():
            c = CounterMetricFamily(f"{PREFIX}_{name}", text, labels=keys)
            c.add_metric(vals, float(s.counters.get(name, 0)))
            yield c
        for name, text in INTERVAL_GAUGES.items():
            g = GaugeMetricFamily(f"{PREFIX}_interval_{name}_seconds", text, labels=keys)
            g.add_metric(vals, s.interval.get(name, math.nan))
            yield g
        g = GaugeMetricFamily(f"{PREFIX}_interval_end_timestamp_seconds",
                              "End of the last complete interval (Unix time).", labels=keys)
        g.add_metric(vals, s.interval.get("end", math.nan))
        yield g
        g = GaugeMetricFamily(f"{PREFIX}_clock_synchronised", "1 when this host's clock synchronisation "
                              "(PTP, chrony or the kernel) vouches for a bound, 0 when not.", labels=keys)
        g.add_metric(vals, s.clock_synchronised)
        yield g
        g = GaugeMetricFamily(f"{PREFIX}_clock_error_bound_seconds", "The clock error bound that "
                              "synchronisation gives (NaN when unknown).", labels=keys)
        g.add_metric(vals, s.clock_bound_s)
        yield g
        c = CounterMetricFamily(f"{PREFIX}_host_steal_seconds", "Time the hypervisor stole from each CPU "
                                "since boot (/proc/stat).", labels=[*keys, "cpu"])
        for cpu, sec in sorted(s.steal_s.items()):
            c.add_metric([*vals, str(cpu)], sec)
        yield c
        g = GaugeMetricFamily(f"{PREFIX}_limit_broken", "1 when the last complete interval broke the limit "
                              "(--max), 0 when it kept it.", labels=[*keys, "limit"])
        v = GaugeMetricFamily(f"{PREFIX}_limit_actual", "The last complete interval's value of the limited "
                              "statistic (seconds, or packets / percent for loss).", labels=[*keys, "limit"])
        for text, (actual, _value, broken) in sorted(s.limits.items()):
            g.add_metric([*vals, text], 1.0 if broken else 0.0)
            v.add_metric([*vals, text], actual)
        yield g
        yield v
        c = CounterMetricFamily(f"{PREFIX}_files_stored", "Samples files committed.", labels=keys)
        c.add_metric(vals, float(s.files))
        yield c
        g = GaugeMetricFamily(f"{PREFIX}_start_timestamp_seconds", "When this monitor started (Unix time).",
                              labels=keys)
        g.add_metric(vals, s.up_since_s)
        yield g


def _bound(ns: int) -> str:
    return repr(ns / 1e9)


def serve(state: MetricsState, port: int, addr: str) -> Any:
    """Serve /metrics on ``addr``:``port`` in a thread; the server (``shutdown()`` ends it)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(state))
    server, _thread = start_http_server(port, addr=addr, registry=registry)
    return server
