"""samples.parquet: one row per packet, raw int64 nanosecond timestamps, null where absent.

Derived metrics are never stored here; see latscope.analysis.metrics. The
column names, MISSING and the flag bits are latscope.contract's (re-exported).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from latscope.contract import (
    FLAG_DUPLICATE,
    FLAG_LOST,
    FLAG_NAMES,
    FLAG_REORDERED,
    FLAG_SEND_FAILED,
    MISSING,
    SAMPLE_COLUMNS,
    TIME_COLUMNS,
)
from latscope.errors import FormatError
from latscope.files import atomic_output
from latscope.store.versioned import first_line, open_parquet

__all__ = [
    "ARROW_SCHEMA",
    "FLAG_DUPLICATE",
    "FLAG_LOST",
    "FLAG_NAMES",
    "FLAG_REORDERED",
    "FLAG_SEND_FAILED",
    "MISSING",
    "SAMPLES_MAGIC",
    "SAMPLES_SCHEMA_VERSION",
    "SAMPLE_COLUMNS",
    "TIME_COLUMNS",
    "Samples",
    "read_samples",
    "samples_table",
    "write_samples",
]

#: 2 added far_rx_ns and far_tx_ns (round trips); a version 1 file reads as if they were null.
SAMPLES_SCHEMA_VERSION = 2
SAMPLES_MAGIC = b"latscope-samples"

ARROW_SCHEMA = pa.schema(
    [pa.field("seq", pa.int64(), nullable=False), pa.field("stream", pa.int32(), nullable=False)]
    + [pa.field(name, pa.int64()) for name in TIME_COLUMNS]
    + [pa.field("flags", pa.int32(), nullable=False)],
    metadata={b"magic": SAMPLES_MAGIC, b"schema_version": str(SAMPLES_SCHEMA_VERSION).encode()},
)


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
