"""Per-host, per-hour p99.9 latency and loss over a latscope dataset, with Apache Spark (docs/dataset.md).

    python examples/dataset_spark.py DIR [--by host,date,hour] [--csv] [--master local[2]]
    spark-submit examples/dataset_spark.py DIR            # on a cluster: DIR on storage every executor reads

DIR was written by `latscope export --dataset DIR` (or `latscope monitor`).
Needs only pyspark (and a Java runtime), not latscope: the schema, partition
columns included, comes from DIR/_latscope_dataset.json. Latency is the
`latency_ns` of `latscope sql` (one-way: rx_best - send_ns; round trips: the
RTT); `percentile` is exact and interpolates linearly like DuckDB's
quantile_cont (`percentile_approx` would not agree); loss is lost packets /
packets.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def schema(root: str | Path):
    """The samples' Spark schema from the schema document, partition columns with their declared types.

    Given explicitly, Spark neither infers the partition types (`date=2026-11-25`
    would become a DateType, `host=1234` an integer) nor reads every footer to
    merge schemas; the int64 nanoseconds stay LongType (no timestamp logic).
    """
    from pyspark.sql import types as T

    doc = json.loads((Path(root) / "_latscope_dataset.json").read_text())
    kinds = {"string": T.StringType(), "int32": T.IntegerType(), "int64": T.LongType()}
    fields = [T.StructField(c["name"], kinds[c["type"]], True) for c in doc["samples"]["columns"]]
    fields += [T.StructField(c["name"], kinds[c["type"]], True) for c in doc["samples"]["partitioning"]["columns"]]
    return T.StructType(fields), str(Path(root) / doc["samples"]["path"])


def read_samples(spark, root: str | Path):
    """The dataset's samples as a DataFrame (hive partitioning: host, date, hour are columns)."""
    struct, path = schema(root)
    return spark.read.schema(struct).option("basePath", path).parquet(path)


def latency_ns():
    """latency_ns of `latscope sql`: the RTT in a round trip's rows (far_rx_ns set), else rx_best - send_ns."""
    from pyspark.sql import functions as F

    rx_best = F.coalesce("rx_hw_ns", "rx_sw_ns")
    t1 = F.coalesce("tx_hw_ns", "tx_sw_ns", "send_ns")
    rtt = (rx_best - t1) - (F.col("far_tx_ns") - F.col("far_rx_ns"))
    return F.when(F.col("far_rx_ns").isNotNull(), rtt).otherwise(rx_best - F.col("send_ns"))


def per_group(spark, root: str | Path, by: list[str] | tuple[str, ...] = ("host", "date", "hour")):
    """packets, lost, loss, p99.9 and max latency (µs) per group of ``by``, sorted by it (a DataFrame)."""
    from pyspark.sql import functions as F

    df = read_samples(spark, root).select(*by, latency_ns().alias("latency_ns"),
                                          ((F.col("flags").bitwiseAND(1)) != 0).cast("long").alias("lost"))
    return (df.groupBy(*by)
            .agg(F.count(F.lit(1)).alias("packets"), F.sum("lost").alias("lost"),
                 (F.sum("lost") / F.count(F.lit(1))).alias("loss"),
                 (F.percentile("latency_ns", F.lit(0.999)) / 1e3).alias("p999_us"),
                 (F.max("latency_ns") / 1e3).alias("max_us"))
            .orderBy(*by))


def session(master: str = "local[2]", memory: str = "4g"):
    """A local SparkSession without the web UI, timestamps in UTC."""
    from pyspark.sql import SparkSession

    return (SparkSession.builder.master(master).appName("latscope-dataset")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.driver.memory", memory)
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.sql.shuffle.partitions", "8")
            .getOrCreate())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset")
    ap.add_argument("--by", default="host,date,hour", help="grouping columns (default: host,date,hour)")
    ap.add_argument("--csv", action="store_true", help="print CSV")
    ap.add_argument("--master", default="local[2]", help="Spark master (default: local[2])")
    ap.add_argument("--memory", default="4g", help="driver memory (default: 4g)")
    args = ap.parse_args(argv)
    spark = session(args.master, args.memory)
    spark.sparkContext.setLogLevel("ERROR")
    try:
        rows = per_group(spark, args.dataset, args.by.split(",")).collect()
    finally:
        spark.stop()
    if not rows:
        return 0
    names = list(rows[0].asDict())
    print(",".join(names) if args.csv else "  ".join(names))
    for row in rows:
        cells = [f"{v:.3f}" if isinstance(v, float) and not args.csv else str(v) for v in row]
        print(",".join(cells) if args.csv else "  ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
