"""Per-host, per-hour p99.9 latency and loss over a latscope dataset, with Dask (docs/dataset.md).

    python examples/dataset_dask.py DIR [--by host,date,hour] [--csv]

DIR was written by `latscope export --dataset DIR` (or `latscope monitor`).
Needs only dask[dataframe] and pyarrow, not latscope: the job reads the
partitioning from DIR/_latscope_dataset.json. Latency is the `latency_ns` of
`latscope sql` (one-way: rx_best - send_ns; round trips: the RTT), p99.9
interpolates linearly like DuckDB's quantile_cont and numpy, loss is lost
packets / packets.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

TIMES = ["send_ns", "tx_sw_ns", "tx_hw_ns", "rx_hw_ns", "rx_sw_ns", "far_rx_ns", "far_tx_ns"]
ARROW_TYPES = {"string": pa.string(), "int32": pa.int32(), "int64": pa.int64()}
OUT_COLUMNS = ["packets", "lost", "loss", "p999_us", "max_us"]


def read_samples(root: str | Path, columns: list[str]):
    """The dataset's samples as a Dask DataFrame, partition columns typed as the schema document says.

    dtype_backend="pyarrow" keeps int64 nanoseconds with nulls exact: numpy's
    int64 has no null, and pandas would turn such a column into float64, which
    cannot hold an epoch time in nanoseconds (2^53 < 1.8e18).
    """
    import dask.dataframe as dd

    doc = json.loads((Path(root) / "_latscope_dataset.json").read_text())
    parts = doc["samples"]["partitioning"]["columns"]
    schema = pa.schema([(c["name"], ARROW_TYPES[c["type"]]) for c in parts])
    return dd.read_parquet(str(Path(root) / doc["samples"]["path"]), columns=columns, dtype_backend="pyarrow",
                           dataset={"partitioning": {"flavor": "hive", "schema": schema}})


def _latency(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """latency_ns (the formula of `latscope sql`) and the lost flag of each packet, with the grouping columns."""
    rx_best = df["rx_hw_ns"].fillna(df["rx_sw_ns"])
    t1 = df["tx_hw_ns"].fillna(df["tx_sw_ns"]).fillna(df["send_ns"])
    rtt = (rx_best - t1) - (df["far_tx_ns"] - df["far_rx_ns"])
    out = df[by].copy()
    out["latency_ns"] = rtt.where(df["far_rx_ns"].notna(), rx_best - df["send_ns"])
    out["lost"] = (df["flags"] & 1) != 0
    return out


def _stats(group: pd.DataFrame) -> pd.Series:
    # Latencies are differences (far below 2^53 ns), so float64 holds them exactly.
    lat = group["latency_ns"].dropna().to_numpy(dtype=np.float64)
    lost = int(group["lost"].sum())
    packets = len(group)
    return pd.Series({"packets": float(packets), "lost": float(lost), "loss": lost / packets if packets else np.nan,
                      "p999_us": np.percentile(lat, 99.9) / 1e3 if len(lat) else np.nan,
                      "max_us": lat.max() / 1e3 if len(lat) else np.nan})


def per_group(root: str | Path, by: list[str] | tuple[str, ...] = ("host", "date", "hour")) -> pd.DataFrame:
    """packets, lost, loss, p99.9 and max latency (µs) per group of ``by``, sorted by it."""
    by = list(by)
    ddf = read_samples(root, [*TIMES, "flags", *by])
    meta = pd.DataFrame({c: pd.Series(dtype=ddf[c].dtype) for c in by})
    meta["latency_ns"] = pd.Series(dtype="int64[pyarrow]")
    meta["lost"] = pd.Series(dtype=bool)
    per_packet = ddf.map_partitions(_latency, by, meta=meta)
    # An exact percentile needs every value of a group in one place: the groups are shuffled together.
    out = per_packet.groupby(by).apply(_stats, meta={c: "f8" for c in OUT_COLUMNS}).compute()
    out = out.reset_index().sort_values(by).reset_index(drop=True)
    out["packets"] = out["packets"].astype("int64")
    out["lost"] = out["lost"].astype("int64")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset")
    ap.add_argument("--by", default="host,date,hour", help="grouping columns (default: host,date,hour)")
    ap.add_argument("--csv", action="store_true", help="print CSV")
    args = ap.parse_args(argv)
    import dask

    dask.config.set(scheduler="threads")
    out = per_group(args.dataset, args.by.split(","))
    if args.csv:
        out.to_csv(sys.stdout, index=False)
    else:
        print(out.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
