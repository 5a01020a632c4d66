"""The per-packet data contract every layer shares (DESIGN.md, docs/format.md).

Column names, the sentinel for a timestamp that does not exist, the flag
bits, and the percentiles of a stored summary. It lives below the store so
that the probe's hot path can use it without importing pyarrow (the store's
Parquet code) and the store can use it without importing the analysis.
"""

from __future__ import annotations

#: Timestamp columns, in the order of the data contract (DESIGN.md).
TIME_COLUMNS = (
    "sched_ns",
    "wake_ns",
    "send_ns",
    "tx_sw_ns",
    "tx_hw_ns",
    "rx_hw_ns",
    "rx_sw_ns",
    "rx_user_ns",
    # Round trips (run --mode rtt): the far end's kernel RX (t2) and TX (t3) times of the packet, on the
    # far end's clock; null in one-way runs. rx_*_ns of such a run are the sender's receipt of the echo (t4).
    "far_rx_ns",
    "far_tx_ns",
)
SAMPLE_COLUMNS = ("seq", "stream", *TIME_COLUMNS, "flags")

#: Sentinel the probe uses in its preallocated arrays for "no timestamp" (int64 minimum); null on disk.
MISSING = -(1 << 63)

# Bits of the flags column. Loss, duplication and reordering are facts the
# receiver observed; they are stored because they cannot be re-derived from a
# single row once duplicates have been folded into it.
FLAG_LOST = 1 << 0
FLAG_DUPLICATE = 1 << 1
FLAG_REORDERED = 1 << 2
FLAG_SEND_FAILED = 1 << 3

FLAG_NAMES = {
    FLAG_LOST: "lost",
    FLAG_DUPLICATE: "duplicate",
    FLAG_REORDERED: "reordered",
    FLAG_SEND_FAILED: "send_failed",
}

#: Percentiles of a stored summary (run.json "summary"): key -> percentile.
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9, "p9999": 99.99, "p99999": 99.999}
