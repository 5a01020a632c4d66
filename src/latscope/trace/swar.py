"""Eight bytes at a time: word tricks for the hottest parts of the trace parsers.

numpy is slow at "the first byte in each row that is X" (a reduction along
short rows costs 15-30 ns a row) but fast at arithmetic on one uint64 per row
(about 1 ns). Loading eight bytes of a line as one little-endian word and
using the classic SIMD-within-a-register tricks finds a separator or reads a
number with a handful of word operations per line:

* a byte equal to ``c``: XOR with ``c`` repeated, then "which bytes are
  zero" (``(v - 0x01..) & ~v & 0x80..``, exact for the lowest zero byte,
  which is the only one used);
* the index of the lowest flagged byte: count the bits below the lowest set
  bit (``bitwise_count((m & -m) - 1) // 8``);
* up to eight decimal digits: three multiply-shift steps that combine
  neighbouring digits pairwise (1+1 -> 2, 2+2 -> 4, 4+4 -> 8).
"""

from __future__ import annotations

import numpy as np

_U = np.uint64
ONES = _U(0x0101010101010101)
HIGHS = _U(0x8080808080808080)
LOWS7 = _U(0x7F7F7F7F7F7F7F7F)
NIBBLE_HI = _U(0xF0F0F0F0F0F0F0F0)
NIBBLE_LO = _U(0x0F0F0F0F0F0F0F0F)
ASCII0 = _U(0x3030303030303030)
SIX = _U(0x0606060606060606)
NONE = 8  # "no such byte in this word"


def words(buf: np.ndarray) -> np.ndarray:
    """An unaligned uint64 view of a padded byte array: element i is bytes i..i+7 (little-endian)."""
    return np.ndarray(shape=(len(buf) - 7,), dtype=np.uint64, buffer=buf, offset=0, strides=(1,))


def load(w: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """The eight bytes at each position, as words."""
    return w[pos]


def zero_bytes(v: np.ndarray) -> np.ndarray:
    """High bit set in the lowest zero byte (and maybe above it, which callers ignore)."""
    return (v - ONES) & ~v & HIGHS


def eq_bytes(v: np.ndarray, c: int) -> np.ndarray:
    """Flags of the bytes equal to ``c`` (exact for the lowest one)."""
    return zero_bytes(v ^ _U(c * 0x0101010101010101))


def nonzero_bytes(x: np.ndarray) -> np.ndarray:
    """High bit set in every nonzero byte, exactly (no carries between bytes)."""
    return (((x & LOWS7) + LOWS7) | x) & HIGHS


def non_digit_bytes(v: np.ndarray) -> np.ndarray:
    """Flags of bytes that are not ASCII digits (exact up to and including the lowest one)."""
    hi_wrong = (v & NIBBLE_HI) ^ ASCII0
    lo_wrong = ((v + SIX) & NIBBLE_HI) ^ ASCII0  # a low nibble above 9 carries into the high nibble
    return nonzero_bytes(hi_wrong | lo_wrong)


def first_flag(m: np.ndarray) -> np.ndarray:
    """Index 0..7 of the lowest flagged byte, NONE (8) where no byte is flagged."""
    low = m & (~m + _U(1))
    idx = (np.bitwise_count(low - _U(1)) >> 3).astype(np.int64)
    return np.where(m != 0, idx, NONE)


def find_first(w: np.ndarray, pos: np.ndarray, targets: bytes, nwords: int) -> np.ndarray:
    """Offset from pos of the first byte in ``targets`` within 8*nwords bytes; -1 if none."""
    out = np.full(len(pos), -1, dtype=np.int64)
    todo = np.arange(len(pos))
    for k in range(nwords):
        if len(todo) == 0:
            break
        v = w[pos[todo] + 8 * k]
        m = eq_bytes(v, targets[0])
        for c in targets[1:]:
            m |= eq_bytes(v, c)
        f = first_flag(m)
        hit = f < NONE
        out[todo[hit]] = 8 * k + f[hit]
        todo = todo[~hit]
    return out


def digit_run(w: np.ndarray, pos: np.ndarray, nwords: int = 3) -> np.ndarray:
    """Number of consecutive ASCII digits from pos (at most 8*nwords)."""
    out = np.full(len(pos), 8 * nwords, dtype=np.int64)
    todo = np.arange(len(pos))
    for k in range(nwords):
        if len(todo) == 0:
            break
        f = first_flag(non_digit_bytes(w[pos[todo] + 8 * k]))
        hit = f < NONE
        out[todo[hit]] = 8 * k + f[hit]
        todo = todo[~hit]
    return out


def parse8(v: np.ndarray, n: np.ndarray | int) -> np.ndarray:
    """Value of the first ``n`` (0..8) ASCII digits of each word (the caller checked they are digits)."""
    n = np.asarray(n, dtype=np.int64)
    shift = (np.clip(8 - n, 0, 7) * 8).astype(np.uint64)
    # Move the n digits to the top bytes; the emptied low bytes read as leading zeros.
    x = np.where(n > 0, v << shift, _U(0))
    x = x & NIBBLE_LO
    x = (x * _U(10) + (x >> _U(8))) & _U(0x00FF00FF00FF00FF)
    x = (x * _U(100) + (x >> _U(16))) & _U(0x0000FFFF0000FFFF)
    x = (x * _U(10000) + (x >> _U(32))) & _U(0x00000000FFFFFFFF)
    return x.astype(np.int64)


_POW10 = np.array([10 ** k for k in range(19)], dtype=np.int64)  # 10**0 .. 10**18


def parse_digits(w: np.ndarray, pos: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Value of the ``n`` (0..19) ASCII digits at each pos."""
    n = np.asarray(n, dtype=np.int64)
    first = np.minimum(n, 8)
    val = parse8(w[pos], first)
    rest = n - first
    if np.any(rest > 0):
        second = np.minimum(rest, 8)
        val = val * _POW10[second] + parse8(w[pos + 8], second)
        rest2 = rest - second
        if np.any(rest2 > 0):
            third = np.minimum(rest2, 8)
            val = val * _POW10[third] + parse8(w[pos + 16], third)
    return val


def decimal(w: np.ndarray, pos: np.ndarray, limit: np.ndarray | None = None,
            signed: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A decimal number at each pos, up to the first non-digit: (value, end, ok).

    ``ok`` is False where there is no digit or the number ends past ``limit``.
    """
    neg = np.zeros(len(pos), dtype=bool)
    start = pos
    if signed and len(pos):
        neg = (w[pos] & _U(0xFF)) == _U(ord("-"))
        start = pos + neg
    n = digit_run(w, start)
    # 19 digits fit int64 up to 9.2e18 (nanoseconds since 1970 do until 2262)
    ok = (n > 0) & (n <= 19)
    n = np.clip(n, 0, 19)
    end = start + n
    if limit is not None:
        ok &= end <= limit
    val = parse_digits(w, start, n)
    return np.where(neg, -val, val), end, ok
