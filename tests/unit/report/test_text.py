"""The text summary: the run's lines in the sample apps' order; `show`'s deep line in its place."""

from __future__ import annotations

import numpy as np

from latscope.analysis.summary import summarise
from latscope.report.text import summary_text
from latscope.store.samples import Samples
from tests.support import synthetic_columns


def _summary() -> dict:
    latency = np.arange(1, 100_001, dtype=np.int64) * 10  # 10 ns .. 1 ms: every percentile is known
    return summarise(Samples(synthetic_columns(latency)), {"sent": 100_000, "received": 100_000})


def test_deep_adds_p99999_after_the_percentiles() -> None:
    """deep=True puts the p99.999 line right after the p50..p99.99 line, with the summary's value."""
    summary = _summary()
    plain = summary_text(summary, "r1").split("\n")
    deep = summary_text(summary, "r1", deep=True).split("\n")
    at = next(i for i, line in enumerate(plain) if line.startswith("  latency p50/"))
    assert deep[:at + 1] == plain[:at + 1] and deep[at + 2:] == plain[at + 1:]
    assert deep[at + 1] == f"  latency p99.999 (usec): {summary['latency_us']['p99999']:.3f}"
    assert not any("p99.999 " in line for line in plain)
