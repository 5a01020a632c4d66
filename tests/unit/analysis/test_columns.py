"""The column reader returns what the store's reader returns, for any rows, without loading everything."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from latscope.analysis.columns import ColumnReader, LazyColumns
from latscope.errors import FormatError
from latscope.store.samples import MISSING, SAMPLE_COLUMNS, read_samples
from tests.support import samples_file, synthetic_columns


@pytest.fixture
def path(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    lost = rng.random(3000) < 0.05
    return samples_file(tmp_path / "samples.parquet", synthetic_columns(rng.integers(1000, 9000, 3000), lost=lost),
                        row_group_size=700)


def test_every_column_equals_the_store_reader(path: Path) -> None:
    """Whole columns, slices across row groups and scattered rows all match read_samples."""
    ref = read_samples(path)
    reader = ColumnReader(path)
    idx = np.array([5, 699, 700, 2999, 1234])
    for name in SAMPLE_COLUMNS:
        assert np.array_equal(reader.read(name), ref[name]), name
        assert np.array_equal(reader.read(name, slice(650, 2100)), ref[name][650:2100]), name
        assert np.array_equal(reader.read(name, idx), ref[name][idx]), name


def test_all_null_column_costs_no_memory(path: Path) -> None:
    """A column null in every row comes back as a zero-stride view of MISSING."""
    col = ColumnReader(path).read("rx_hw_ns")
    assert col.strides == (0,) and col[0] == MISSING and len(col) == 3000


def test_chunks_follow_row_groups(path: Path) -> None:
    """Chunks of a sliced selection start at row-group edges and cover it exactly once."""
    lazy = LazyColumns(ColumnReader(path), slice(500, 2500))
    spans = [(a, b) for a, b, _ in lazy.chunks()]
    assert spans[0][0] == 0 and spans[-1][1] == 2000
    assert [a for a, _ in spans[1:]] == [b for _, b in spans[:-1]]
    assert (200, 900) in spans  # file rows 700..1400: one whole row group


def test_cache_and_release(path: Path) -> None:
    """Indexing caches a column; keep_only drops the rest; read() never caches."""
    lazy = LazyColumns(ColumnReader(path))
    lazy["send_ns"]
    lazy.read("seq")
    assert set(lazy._cache) == {"send_ns"}
    lazy.keep_only(())
    assert not lazy._cache


def test_corrupt_file_is_a_format_error(tmp_path: Path) -> None:
    """A truncated samples.parquet is a FormatError (exit 2 in the CLI), not a pyarrow traceback."""
    bad = tmp_path / "samples.parquet"
    bad.write_bytes(b"PAR1" + b"\0" * 100)
    with pytest.raises(FormatError):
        ColumnReader(bad)
