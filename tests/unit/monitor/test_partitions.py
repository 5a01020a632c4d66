"""The monitor's partitioned layout: where files go, the last stored seq, whole files only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from latscope.errors import FormatError, StoreError
from latscope.store.partitions import (
    MONITOR_SCHEMA,
    SamplesWriter,
    last_stored,
    reap_temporaries,
    samples_path,
)
from latscope.store.samples import MISSING, read_samples

START = 1_796_151_000_000_000_000  # 2026-12-01T18:50:00Z


def rows(first: int, n: int) -> dict[str, np.ndarray]:
    seq = np.arange(first, first + n, dtype=np.int64)
    cols = {name: seq * 1000 + START for name in ("sched_ns", "wake_ns", "send_ns", "rx_sw_ns", "rx_user_ns")}
    cols.update(seq=seq, stream=np.full(n, 3, np.int32), flags=np.zeros(n, np.int32),
                rx_hw_ns=np.full(n, MISSING, np.int64))
    return cols


def write(root: Path, first: int, n: int, chunks: int = 3) -> Path:
    path = samples_path(root, "h/1", START, 3, first)
    w = SamplesWriter(path, "run-x")
    for part in np.array_split(np.arange(n), chunks):
        if len(part):
            w.add(rows(first + int(part[0]), len(part)))
    assert not path.exists(), "the file appears only when committed"
    w.commit()
    return path


def test_path_is_hive_partitioned_by_host_date_hour(tmp_path: Path) -> None:
    """host (made safe), UTC date and hour of the interval start, stream and first seq."""
    assert samples_path(tmp_path, "h/1", START, 3, 42) == \
        tmp_path / "samples/host=h_1/date=2026-12-01/hour=18/3-42.parquet"


def test_a_committed_file_reads_as_samples_plus_run_id_and_gives_the_last_seq(tmp_path: Path) -> None:
    """The file is a samples.parquet (same magic and version) with run_id; last_stored finds its last seq."""
    write(tmp_path, 0, 100)
    p2 = write(tmp_path, 100, 250)
    t = pq.read_table(p2)
    assert t.schema.remove_metadata() == MONITOR_SCHEMA.remove_metadata()
    assert set(t.column("run_id").to_pylist()) == {"run-x"}
    assert list(read_samples(p2)["seq"]) == list(range(100, 350))
    tail = last_stored(tmp_path, "h/1", 3)
    assert tail is not None and (tail.path, tail.first_seq, tail.last_seq) == (p2, 100, 349)
    assert last_stored(tmp_path, "h/1", 4) is None
    assert last_stored(tmp_path, "other", 3) is None


def test_rows_that_do_not_follow_on_are_refused_and_an_abort_leaves_nothing(tmp_path: Path) -> None:
    """A gap inside a file is a StoreError; abort removes the temporary file."""
    path = samples_path(tmp_path, "h", START, 3, 0)
    w = SamplesWriter(path, "r")
    w.add(rows(0, 10))
    with pytest.raises(StoreError, match="do not follow"):
        w.add(rows(11, 5))
    w.abort()
    assert list(path.parent.iterdir()) == []


def test_a_file_whose_seqs_are_not_contiguous_is_reported(tmp_path: Path) -> None:
    """A file named 3-0 holding seqs 0..9 and 20..29 (not latscope's) is a FormatError, not a restart point."""
    path = samples_path(tmp_path, "h", START, 3, 0)
    w = SamplesWriter(path, "r")
    w.add(rows(0, 10))
    w.last_seq = 19  # as if rows 10..19 had been written
    w.add(rows(20, 10))
    w.commit()
    with pytest.raises(FormatError, match="not one contiguous interval"):
        last_stored(tmp_path, "h", 3)


def test_temporaries_of_a_killed_monitor_are_reaped(tmp_path: Path) -> None:
    """Only latscope's own .NAME.<12 hex>.tmp files are removed."""
    p = write(tmp_path, 0, 10)
    tmp = p.parent / ".3-10.parquet.0123456789ab.tmp"
    other = p.parent / ".notes.tmp"
    tmp.write_bytes(b"half")
    other.write_bytes(b"mine")
    assert reap_temporaries(tmp_path, "h/1") == [tmp]
    assert not tmp.exists() and other.exists() and p.exists()
