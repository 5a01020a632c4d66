"""Vectorised byte scanning: the primitives the trace parsers are built from.

A trace of a one-minute run has about two million lines. Turning each line
into Python objects costs microseconds per line; these helpers instead treat
the text as numpy byte arrays and work on columns of it: where lines start,
the bytes at a given offset in every line, the number written between two
offsets. Python-level work is left to the few lines that do not fit.

Text is processed in chunks of a few megabytes (``chunks``): comparisons over
a chunk that fits the CPU cache run several times faster than over the whole
file. Each chunk carries ``PAD`` zero bytes at its end so a fixed-width
window read near the last line never leaves the array.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.lib.stride_tricks import as_strided

NL = 10
SPACE = 32
PAD = 256
CHUNK_BYTES = 4 << 20

#: byte -> hex digit value, 255 for "not a hex digit".
_HEX = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX[_c] = _i + 10


def chunks(data: bytes | memoryview, size: int = CHUNK_BYTES) -> Iterator[tuple[int, np.ndarray]]:
    """(offset, padded byte array) of consecutive pieces of ``data``, each ending after a newline."""
    arr = np.frombuffer(data, dtype=np.uint8)
    n = len(arr)
    off = 0
    while off < n:
        end = min(n, off + size)
        if end < n:
            back = max(off, end - 65536)
            nl = np.flatnonzero(arr[back:end] == NL)
            if len(nl):
                end = back + int(nl[-1]) + 1
            else:  # a line longer than 64 KiB: extend to its end
                ahead = np.flatnonzero(arr[end:] == NL)
                end = end + int(ahead[0]) + 1 if len(ahead) else n
        piece = np.zeros(end - off + PAD, dtype=np.uint8)
        piece[:end - off] = arr[off:end]
        yield off, piece
        off = end


def padded(data: bytes) -> np.ndarray:
    """``data`` as a byte array with the zero padding the helpers expect."""
    out = np.zeros(len(data) + PAD, dtype=np.uint8)
    out[:len(data)] = np.frombuffer(data, dtype=np.uint8)
    return out


def line_bounds(buf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive, without newline or CR) of every line of a padded chunk."""
    body = buf[:len(buf) - PAD]
    nl = np.flatnonzero(body == NL)
    if len(body) and body[-1] != NL:
        nl = np.append(nl, len(body))
    starts = np.empty(len(nl), dtype=np.int64)
    if len(nl):
        starts[0] = 0
        starts[1:] = nl[:-1] + 1
    ends = nl.astype(np.int64)
    if len(ends):
        cr = (ends > starts) & (buf[np.maximum(ends - 1, 0)] == 13)
        ends = np.where(cr, ends - 1, ends)
    return starts, ends


def window(buf: np.ndarray, pos: np.ndarray, width: int) -> np.ndarray:
    """(n, width) bytes starting at each ``pos`` (a copy; bytes past a line end are the next line's)."""
    if len(pos) == 0:
        return np.zeros((0, width), dtype=np.uint8)
    view = as_strided(buf, shape=(len(buf) - width + 1, width), strides=(buf.strides[0], buf.strides[0]),
                      writeable=False)
    return view[np.clip(pos, 0, len(buf) - width)]


def first_of(mat: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Column of the first True per row of ``mask``, -1 where none."""
    first = mask.argmax(axis=1)
    return np.where(mask[np.arange(len(mask)), first], first, -1)


def digits(buf: np.ndarray, start: np.ndarray, end: np.ndarray, max_width: int = 19,
           signed: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Decimal number written exactly in buf[start:end) per row; (value, ok).

    Horner's rule over the widest field, then one division: a row with fewer
    digits than the widest accumulates trailing zeros, removed at the end.
    Up to 19 digits (uint64 holds 10**19 times a digit).
    """
    n = len(start)
    length = end - start
    width = int(min(max_width, 19, max(1, int(length.max(initial=1)))))
    mat = window(buf, start, width)
    neg = np.zeros(n, dtype=bool)
    if signed and n:
        neg = (mat[:, 0] == ord("-")) & (length > 1)
        mat = mat.copy()
        mat[neg, 0] = 48
    d = mat.astype(np.int16) - 48
    inside = np.arange(width)[None, :] < length[:, None]
    ok = np.all(((d >= 0) & (d <= 9)) | ~inside, axis=1) & (length >= 1) & (length <= width)
    d = np.where(inside, d, 0).astype(np.uint64)
    val: np.ndarray = np.zeros(n, dtype=np.uint64)
    ten = np.uint64(10)
    with np.errstate(over="ignore"):
        for k in range(width):
            val = val * ten + d[:, k]
    val = val // _POW10[np.clip(width - length, 0, 19)]
    out = val.astype(np.int64)
    return np.where(neg, -out, out), ok


_POW10 = np.array([10 ** k for k in range(20)], dtype=np.uint64)


def number(buf: np.ndarray, start: np.ndarray, limit: np.ndarray, width: int = 20,
           base: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The number at each start (decimal with optional sign, or hex with optional 0x) up to a space,
    comma, parenthesis or the line end; one gathered window per row. Returns (value, end, ok)."""
    mat = window(buf, start, width)
    col = np.arange(width)[None, :]
    stop = (mat == SPACE) | (mat == NL) | (mat == ord(",")) | (mat == ord(")")) | (mat == 0) \
        | (col >= (limit - start)[:, None])
    length = first_of(mat, stop)
    length = np.where(length >= 0, length, width)
    n = len(start)
    skip = np.zeros(n, dtype=np.int64)
    neg = np.zeros(n, dtype=bool)
    if base == 10:
        neg = mat[:, 0] == ord("-")
        skip = neg.astype(np.int64)
        d = (mat.astype(np.int16) - 48)
        valid = (d >= 0) & (d <= 9)
    else:
        has0x = (mat[:, 0] == ord("0")) & (mat[:, 1] == ord("x"))
        skip = np.where(has0x, 2, 0)
        d = _HEX[mat].astype(np.int16)
        valid = d != 255
    inside = (col >= skip[:, None]) & (col < length[:, None])
    ok = np.all(valid | ~inside, axis=1) & (length > skip) & (length - skip <= (19 if base == 10 else 16))
    d = np.where(inside, d, 0).astype(np.uint64)
    val = np.zeros(n, dtype=np.uint64)
    b = np.uint64(base)
    with np.errstate(over="ignore"):
        for k in range(int(length.max(initial=0))):
            live = k < length
            val = np.where(live & (k >= skip), val * b + d[:, k], val)
    out = val.view(np.int64) if base == 16 else val.astype(np.int64)
    return np.where(neg, -out, out), start + length, ok


def fixed_digits(buf: np.ndarray, start: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A number of exactly ``width`` digits at each start (a fixed column); (value, ok). width <= 18."""
    d = window(buf, start, width) - np.uint8(48)  # non-digits wrap above 9
    ok = np.all(d <= 9, axis=1)
    val = d.astype(np.int64) @ (10 ** np.arange(width - 1, -1, -1, dtype=np.int64))
    return val, ok


def leading_digits(buf: np.ndarray, start: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The digits at the start of a ``width``-column field, up to the first non-digit; (value, ok)."""
    d = window(buf, start, width).astype(np.int64) - 48
    isd = (d >= 0) & (d <= 9)
    going = isd[:, 0].copy()
    ok = going.copy()
    val = np.where(going, d[:, 0], 0)
    for k in range(1, width):
        going &= isd[:, k]
        val = np.where(going, val * 10 + d[:, k], val)
    return val, ok


def hexnum(buf: np.ndarray, start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hex number in buf[start:end) (optional 0x) as the int64 bit pattern; (value, ok)."""
    n = len(start)
    start = start.copy()
    if n:
        pre = window(buf, start, 2)
        has0x = (pre[:, 0] == ord("0")) & ((pre[:, 1] == ord("x")) | (pre[:, 1] == ord("X"))) & (end - start > 2)
        start[has0x] += 2
    length = end - start
    width = int(max(1, min(16, int(length.max(initial=1)))))
    mat = window(buf, start, width)
    val = np.zeros(n, dtype=np.uint64)
    ok = (length >= 1) & (length <= 16)
    for k in range(width):
        inside = k < length
        d = _HEX[mat[:, k]]
        ok &= ~inside | (d != 255)
        val = np.where(inside, (val << np.uint64(4)) | d.astype(np.uint64), val)
    return val.view(np.int64), ok


def find_bytes(buf: np.ndarray, start: np.ndarray, width: int, targets: bytes,
               limit: np.ndarray | None = None) -> np.ndarray:
    """Absolute offset of the first byte in ``targets`` within ``width`` bytes of start; -1 if none.

    A newline always stops the search (it is never found past the line end);
    with ``limit`` nothing at or after it counts either.
    """
    mat = window(buf, start, width)
    hit = np.zeros(mat.shape, dtype=bool)
    for t in targets:
        hit |= mat == t
    stop = first_of(mat, mat == NL)
    col = first_of(mat, hit)
    found = (col >= 0) & ((stop < 0) | (col < stop))
    out = np.where(found, start + col, -1)
    if limit is not None:
        out = np.where(out < limit, out, -1)
    return out


def find_key(buf: np.ndarray, start: np.ndarray, key: bytes, width: int, limit: np.ndarray) -> np.ndarray:
    """Absolute offset of the first ``key`` starting within ``width`` bytes of start (before limit); -1."""
    k = len(key)
    mat = window(buf, start, width + k)
    span = width + 1
    hit = np.ones((len(start), span), dtype=bool)
    for j, c in enumerate(key):
        hit &= mat[:, j:j + span] == c
    col = first_of(mat, hit)
    out = np.where(col >= 0, start + col, -1)
    return np.where((out >= 0) & (out + k <= limit), out, -1)


def key_at(buf: np.ndarray, pos: np.ndarray, key: bytes) -> np.ndarray:
    """True where ``key`` is written exactly at ``pos``."""
    mat = window(buf, pos, len(key))
    return np.all(mat == np.frombuffer(key, np.uint8)[None, :], axis=1)


def distinct(mat: np.ndarray) -> tuple[np.ndarray, list[bytes]]:
    """Group the rows of a byte matrix: (index of each row's group, the distinct rows as bytes).

    Hash-based grouping in C (Arrow's dictionary encoding of fixed-width
    binary): about 15 ns a row, whatever the number of groups.
    """
    n, width = mat.shape
    if n == 0:
        return np.zeros(0, np.int64), []
    mat = np.ascontiguousarray(mat)
    arr = pa.FixedSizeBinaryArray.from_buffers(pa.binary(max(width, 1)), n, [None, pa.py_buffer(mat)])
    encoded = pc.dictionary_encode(arr)
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), encoded.dictionary.to_pylist()


def intern_spans(buf: np.ndarray, start: np.ndarray, end: np.ndarray, strings: dict[str, int],
                 max_width: int = 64, strip: bool = False) -> np.ndarray:
    """Id of the text buf[start:end) of each row in ``strings`` (str -> id, extended in place).

    Rows are grouped by their bytes in C first (Arrow's hash-based dictionary
    encoding of fixed-width binary), so Python decodes each distinct string
    once, not once per line. Spans longer than ``max_width`` are cut there;
    ``strip`` drops surrounding spaces (a right-aligned comm column).
    """
    n = len(start)
    if n == 0:
        return np.zeros(0, dtype=np.int32)
    length = np.clip(end - start, 0, max_width)
    width = max(1, int(length.max()))
    mat = window(buf, start, width)
    if int(length.min()) != width:
        mat = np.where(np.arange(width)[None, :] < length[:, None], mat, 0).astype(np.uint8)
    mat = np.ascontiguousarray(mat)
    arr = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n, [None, pa.py_buffer(mat)])
    encoded = pc.dictionary_encode(arr)
    ids = np.empty(len(encoded.dictionary), dtype=np.int32)
    for j, raw in enumerate(encoded.dictionary.to_pylist()):
        text = raw.rstrip(b"\0").decode("utf-8", "replace")
        ids[j] = strings.setdefault(text.strip() if strip else text, len(strings))
    return ids[encoded.indices.to_numpy(zero_copy_only=False)]


def text_of(buf: np.ndarray, start: int, end: int) -> str:
    """One span as str."""
    return bytes(buf[start:end]).decode("utf-8", "replace")


def gather_lines(buf: np.ndarray, start: np.ndarray, end: np.ndarray) -> str:
    """The spans buf[start:end) joined by newlines, as one str (for a regex over a subset of lines)."""
    if len(start) == 0:
        return ""
    lens = np.maximum(end - start, 0) + 1
    total = int(lens.sum())
    stops = np.cumsum(lens)
    idx = np.arange(total, dtype=np.int64) - np.repeat(stops - lens - start, lens)
    out = buf[np.clip(idx, 0, len(buf) - 1)]
    out[stops - 1] = NL
    return out.tobytes().decode("utf-8", "replace")
