"""Preallocated per-packet columns for the hot path.

array.array('q') takes item assignment from Python ints several times faster
than numpy does and converts to numpy without a copy once the run is over.
Filling the arrays at allocation touches every page, so no page fault (and,
with mlockall, no reclaim) lands inside the measurement.
"""

from __future__ import annotations

from array import array

import numpy as np

from latscope.contract import MISSING


def column(n: int, fill: int = MISSING) -> array:
    """An int64 array of ``n`` items set to ``fill``."""
    return array("q", [fill]) * n


def grow(col: array, n: int, fill: int = MISSING) -> None:
    """Extend ``col`` in place to ``n`` items (outside the steady state only)."""
    if len(col) < n:
        col.extend(array("q", [fill]) * (n - len(col)))


def to_numpy(col: array, n: int | None = None) -> np.ndarray:
    """The first ``n`` items as an int64 numpy array (a copy, so the array may be freed)."""
    view = np.frombuffer(col, dtype=np.int64) if len(col) else np.zeros(0, np.int64)
    return view[: len(col) if n is None else n].copy()
