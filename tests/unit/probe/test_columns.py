"""probe.columns: the workers' columns written as .npz without numpy, read back by numpy itself."""

from __future__ import annotations

import io
from array import array

import numpy as np
import pytest

from latscope.probe.columns import column, npy_bytes, write_npz

VALUES = [0, 1, -1, 2**62, -(2**63), 2**63 - 1, 1_700_000_000_123_456_789]


@pytest.mark.parametrize("n", [None, 0, 1, 4, len(VALUES), len(VALUES) + 5])
def test_numpy_loads_what_write_npz_wrote(n: int | None) -> None:
    """Every column comes back as int64 with the first n items (all when n is None or beyond the end)."""
    cols = {"sched": (array("q", VALUES), n), "empty": (array("q"), n), "filled": (column(3, -7), n)}
    buf = io.BytesIO()
    write_npz(buf, cols)
    buf.seek(0)
    with np.load(buf) as npz:
        assert sorted(npz.files) == ["empty", "filled", "sched"]
        for name, (col, _n) in cols.items():
            want = np.array(col.tolist(), np.int64)[: len(col) if n is None else n]
            got = npz[name]
            assert got.dtype == np.int64 and got.shape == want.shape and np.array_equal(got, want), name


def test_npy_header_is_aligned_and_declares_the_shape() -> None:
    """The data starts on a 64-byte boundary (as numpy writes it) and numpy's header reader finds the shape."""
    data = npy_bytes(array("q", VALUES), 5)
    fh = io.BytesIO(data)
    assert np.lib.format.read_magic(fh) == (1, 0)
    shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    assert (shape, fortran, dtype) == ((5,), False, np.dtype("<i8"))
    assert fh.tell() % 64 == 0 and len(data) - fh.tell() == 5 * 8
    assert np.array_equal(np.load(io.BytesIO(data)), np.array(VALUES[:5], np.int64))
