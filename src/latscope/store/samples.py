"""samples.parquet: one row per packet, raw int64 nanosecond timestamps, null where absent.

Derived metrics are never stored here; see latscope.analysis.metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from latscope.errors import FormatError
from latscope.files import atomic_output
from latscope.store.versioned import first_line, open_parquet

SAMPLES_SCHEMA_VERSION = 1
SAMPLES_MAGIC = b"latscope-samples"

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
)
SAMPLE_COLUMNS = ("seq", "stream", *TIME_COLUMNS, "flags")

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

ARROW_SCHEMA = pa.schema(
    [pa.field("seq", pa.int64(), nullable=False), pa.field("stream", pa.int32(), nullable=False)]
    + [pa.field(name, pa.int64()) for name in TIME_COLUMNS]
    + [pa.field("flags", pa.int32(), nullable=False)],
    metadata={b"magic": SAMPLES_MAGIC, b"schema_version": str(SAMPLES_SCHEMA_VERSION).encode()},
)

#: Sentinel the probe uses in its preallocated arrays for "no timestamp".
MISSING = np.iinfo(np.int64).min


@dataclass(frozen=True)
class Samples:
    """Columns of a run as numpy arrays; timestamps are int64 with ``MISSING`` for null."""

    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.columns["seq"]) if "seq" in self.columns else 0

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self.columns[name]
        except KeyError:
            raise KeyError(f"column {name!r} was not loaded") from None

    def has(self, name: str) -> bool:
        """True when the column was loaded and holds at least one timestamp."""
        col = self.columns.get(name)
        return col is not None and bool(np.any(col != MISSING))

    def valid(self, name: str) -> np.ndarray:
        """Boolean mask of rows where ``name`` holds a value."""
        return self[name] != MISSING


def samples_table(columns: dict[str, np.ndarray]) -> pa.Table:
    """Build the Arrow table of the data contract from int64 arrays using ``MISSING`` for null."""
    n = len(columns["seq"])
    arrays = []
    for field in ARROW_SCHEMA:
        values = columns.get(field.name)
        if values is None:
            if not field.nullable:
                raise FormatError(f"samples: required column {field.name!r} is missing")
            arrays.append(pa.nulls(n, type=field.type))
            continue
        values = np.asarray(values)
        if len(values) != n:
            raise FormatError(f"samples: column {field.name!r} has {len(values)} rows, expected {n}")
        if field.name in TIME_COLUMNS:
            values = values.astype(np.int64, copy=False)
            mask = values == MISSING
            arrays.append(pa.array(values, type=pa.int64(), mask=mask if mask.any() else None))
        else:
            arrays.append(pa.array(values.astype(field.type.to_pandas_dtype(), copy=False), type=field.type))
    return pa.Table.from_arrays(arrays, schema=ARROW_SCHEMA)


def write_samples(path: Path, columns: dict[str, np.ndarray]) -> None:
    """Write samples.parquet at ``path`` (the caller makes the run directory atomic); StoreError if it cannot."""
    table = samples_table(columns)
    with atomic_output(path) as fh:
        pq.write_table(table, fh, compression="zstd")


def read_samples(path: Path, columns: tuple[str, ...] | list[str] | None = None) -> Samples:
    """Read samples.parquet, checking magic and version; nulls become ``MISSING``."""
    wanted = list(columns) if columns is not None else list(SAMPLE_COLUMNS)
    unknown = [c for c in wanted if c not in SAMPLE_COLUMNS]
    if unknown:
        raise FormatError(f"{path}: unknown samples column(s) {', '.join(unknown)}")
    pf = open_parquet(path, str(path), "samples file", SAMPLES_MAGIC, SAMPLES_SCHEMA_VERSION)
    present = set(pf.schema_arrow.names)
    try:
        table = pf.read(columns=[c for c in wanted if c in present])
    except (pa.ArrowException, OSError) as exc:
        raise FormatError(f"{path}: corrupt samples file ({first_line(exc)})") from None
    finally:
        pf.close()
    n = table.num_rows
    out: dict[str, np.ndarray] = {}
    for name in wanted:
        if name not in present:
            out[name] = np.full(n, MISSING, dtype=np.int64) if name in TIME_COLUMNS else np.zeros(n, np.int64)
            continue
        col = table.column(name)
        if name in TIME_COLUMNS:
            out[name] = pc.fill_null(col, MISSING).to_numpy().astype(np.int64, copy=False)
        else:
            out[name] = col.to_numpy()
    return Samples(out)
