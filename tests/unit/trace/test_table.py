"""events.parquet: round trip, magic and version checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from latscope.errors import FormatError
from latscope.trace.parse_text import parse_kernel_text
from latscope.trace.table import (
    EVENTS_SCHEMA_VERSION,
    empty_table,
    read_table,
    write_table,
)


def test_round_trip_keeps_every_column(tmp_path: Path, text_bytes: bytes, raw_bytes: bytes) -> None:
    """A parsed trace written and read back has the same rows, strings and metadata."""
    t = parse_kernel_text(text_bytes, raw_bytes, meta={"clock": "tai", "to_realtime_ns": -37_000_000_000})
    write_table(t, tmp_path / "events.parquet")
    u = read_table(tmp_path / "events.parquet")
    for col in ("ts", "cpu", "pid", "ctx"):
        assert np.array_equal(getattr(t, col), getattr(u, col)), col
    assert np.array_equal(t.nums, u.nums)
    assert [t.event_names[e] for e in t.event] == [u.event_names[e] for e in u.event]
    assert [t.string(c) for c in t.comm] == [u.string(c) for c in u.comm]
    assert [[t.string(x) for x in r] for r in t.strs] == [[u.string(x) for x in r] for r in u.strs]
    assert u.meta["to_realtime_ns"] == -37_000_000_000 and u.meta["ts_source"] == "raw"


def test_empty_table_round_trip(tmp_path: Path) -> None:
    """An empty trace is a valid, empty file."""
    write_table(empty_table({"x": 1}), tmp_path / "e.parquet")
    assert len(read_table(tmp_path / "e.parquet")) == 0


def test_newer_version_and_foreign_files_are_refused(tmp_path: Path, text_bytes: bytes) -> None:
    """A newer schema_version or a Parquet file that is not a trace table is a FormatError."""
    path = tmp_path / "events.parquet"
    write_table(parse_kernel_text(text_bytes), path)
    table = pq.read_table(path)
    md = dict(table.schema.metadata)
    md[b"schema_version"] = str(EVENTS_SCHEMA_VERSION + 1).encode()
    pq.write_table(table.replace_schema_metadata(md), tmp_path / "newer.parquet")
    with pytest.raises(FormatError, match="newer"):
        read_table(tmp_path / "newer.parquet")
    pq.write_table(table.replace_schema_metadata({}), tmp_path / "foreign.parquet")
    with pytest.raises(FormatError, match="not a latscope trace table"):
        read_table(tmp_path / "foreign.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(FormatError):
        read_table(tmp_path / "junk.parquet")
    assert json.loads(md[b"latscope_meta"])["format"] == "ftrace-text"
