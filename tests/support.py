"""Helpers for tests: synthetic runs in a real results store, built from known arrays."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np

from latscope.analysis.summary import summarise
from latscope.probe.merge import merge
from latscope.store.layout import ResultsStore, StoredRun, new_run_id
from latscope.store.runfile import RunRecord
from latscope.store.samples import MISSING, Samples

BASE_NS = 1_795_000_000_000_000_000


def synthetic_columns(latency_ns: np.ndarray, period_ns: int = 1_000_000, *, lost: np.ndarray | None = None,
                      wakeup_ns: np.ndarray | None = None, base_ns: int = BASE_NS) -> dict[str, np.ndarray]:
    """Sample columns with the given per-packet latency (ns); ``lost`` is a boolean mask of lost packets."""
    n = len(latency_ns)
    sched = base_ns + np.arange(n, dtype=np.int64) * period_ns
    wake = sched + (np.asarray(wakeup_ns, dtype=np.int64) if wakeup_ns is not None else 2_000)
    send = wake + 500
    tx = send + 3_000
    rx = send + np.asarray(latency_ns, dtype=np.int64)
    user = rx + 10_000
    sender = {"sched": sched, "wake": wake, "send": send, "tx_sw": tx,
              "tx_hw": np.full(n, MISSING, np.int64), "flags": np.zeros(n, np.int32)}
    rx_sw, rx_user = rx.copy(), user.copy()
    if lost is not None:
        rx_sw[lost] = MISSING
        rx_user[lost] = MISSING
    receiver = {"rx_sw": rx_sw, "rx_hw": np.full(n, MISSING, np.int64), "rx_user": rx_user,
                "flags": np.zeros(n, np.int32)}
    cols, _ = merge(sender, receiver, {}, 7)
    return cols


def synthetic_run(root: Path, latency_ns: np.ndarray, *, name: str = "", tags: tuple[str, ...] = (),
                  period_ns: int = 1_000_000, lost: np.ndarray | None = None,
                  environment: dict | None = None, config: dict | None = None,
                  extra: dict | None = None, wakeup_ns: np.ndarray | None = None) -> StoredRun:
    """Store a run whose latencies are exactly ``latency_ns`` and return it.

    ``config`` entries are added to the run's config (e.g. a topology),
    ``extra`` becomes extra run.json keys.
    """
    cols = synthetic_columns(latency_ns, period_ns, lost=lost, wakeup_ns=wakeup_ns)
    samples = Samples(cols)
    counts = {"sent": len(latency_ns), "received": int(np.count_nonzero(cols["rx_user_ns"] != MISSING))}
    summary = summarise(samples, counts)
    record = RunRecord(
        run_id=new_run_id(), name=name, tags=tags,
        created=_dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds"), status="complete",
        config={"period_ns": period_ns, "count": len(latency_ns), "topology": "synthetic", **(config or {})},
        environment=environment or {}, completeness=counts, summary=summary,
        source={"kind": "synthetic", "metric": "one-way latency"}, extra=extra or {},
    )
    return ResultsStore(root).save(record, cols)


def samples_file(path: Path, columns: dict[str, np.ndarray], row_group_size: int) -> Path:
    """Write a samples.parquet with small row groups, so chunked readers see many chunks."""
    import pyarrow.parquet as pq

    from latscope.store.samples import samples_table

    pq.write_table(samples_table(columns), path, row_group_size=row_group_size)
    return path


def ar1_lognormal(rng: np.random.Generator, n: int, rho: float, median_ns: float, sigma: float) -> np.ndarray:
    """Serially correlated, heavy-tailed latencies: exp of a Gaussian AR(1) with lag-1 correlation ``rho``."""
    from scipy.signal import lfilter

    z = lfilter([np.sqrt(1.0 - rho * rho)], [1.0, -rho], rng.standard_normal(n))
    return median_ns * np.exp(sigma * z)
