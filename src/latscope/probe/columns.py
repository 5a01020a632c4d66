"""Preallocated per-packet columns for the hot path, and the file the workers hand them over in.

array.array('q') takes item assignment from Python ints several times faster
than numpy does and converts to numpy without a copy once the run is over.
Filling the arrays at allocation touches every page, so no page fault (and,
with mlockall, no reclaim) lands inside the measurement.

The workers never import numpy (0.1 s of CPU and 20 MB that mlockall would
lock): ``write_npz`` writes their columns as the .npz file ``numpy.load``
reads, with the standard library.
"""

from __future__ import annotations

import struct
import sys
import zipfile
from array import array
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING

from latscope.contract import MISSING

if TYPE_CHECKING:
    import numpy as np


def column(n: int, fill: int = MISSING) -> array:
    """An int64 array of ``n`` items set to ``fill``."""
    return array("q", [fill]) * n


def grow(col: array, n: int, fill: int = MISSING) -> None:
    """Extend ``col`` in place to ``n`` items (outside the steady state only)."""
    if len(col) < n:
        col.extend(array("q", [fill]) * (n - len(col)))


def to_numpy(col: array, n: int | None = None) -> np.ndarray:
    """The first ``n`` items as an int64 numpy array (a copy, so the array may be freed)."""
    import numpy as np

    view = np.frombuffer(col, dtype=np.int64) if len(col) else np.zeros(0, np.int64)
    return view[: len(col) if n is None else n].copy()


#: The .npy format, version 1.0 (numpy's NEP 1): magic, version, header length, header, data.
NPY_MAGIC = b"\x93NUMPY\x01\x00"
_INT64 = ("<" if sys.byteorder == "little" else ">") + "i8"


def npy_bytes(col: array, n: int | None = None) -> bytes:
    """The first ``n`` items of an int64 ``col`` as an .npy file."""
    k = len(col) if n is None else min(n, len(col))
    header = f"{{'descr': '{_INT64}', 'fortran_order': False, 'shape': ({k},), }}"
    # the data starts on a 64-byte boundary; the header ends with a newline
    pad = -(len(NPY_MAGIC) + 2 + len(header) + 1) % 64
    header += " " * pad + "\n"
    return NPY_MAGIC + struct.pack("<H", len(header)) + header.encode("latin-1") + bytes(memoryview(col)[:k])


def write_npz(fh: IO[bytes], columns: Mapping[str, tuple[array, int | None]]) -> None:
    """Columns (name -> (int64 array, items to keep)) as an uncompressed .npz, what numpy.savez writes."""
    with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED) as zf:
        for name, (col, n) in columns.items():
            zf.writestr(f"{name}.npy", npy_bytes(col, n))

