"""The byte-column primitives: numbers, searches, grouping, chunking."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from latscope.trace import scan, swar


def test_line_bounds_handle_crlf_and_missing_final_newline() -> None:
    """Lines end before CR and a last line without newline still counts."""
    buf = scan.padded(b"ab\r\ncd\n\nlast")
    starts, ends = scan.line_bounds(buf)
    assert [bytes(buf[s:e]) for s, e in zip(starts, ends, strict=True)] == [b"ab", b"cd", b"", b"last"]


def test_chunks_cut_after_newlines_only() -> None:
    """Chunks end after a newline, so no line is split between two of them."""
    data = b"".join(b"line %d with some text\n" % i for i in range(5000))
    pieces = list(scan.chunks(data, size=1000))
    assert len(pieces) > 10
    joined = b"".join(bytes(p[:len(p) - scan.PAD]) for _off, p in pieces)
    assert joined == data
    assert all(bytes(p[len(p) - scan.PAD - 1:len(p) - scan.PAD]) == b"\n" for _off, p in pieces)


def test_digits_and_hex_report_bad_spans() -> None:
    """Decimal and hex readers give values where the span is a number and ok=False where not."""
    buf = scan.padded(b"123 -45 x9 0x1f ffffffffffffffff")
    val, ok = scan.digits(buf, np.array([0, 4, 8]), np.array([3, 7, 10]), signed=True)
    assert val[:2].tolist() == [123, -45] and ok.tolist() == [True, True, False]
    hv, hok = scan.hexnum(buf, np.array([11, 16]), np.array([15, 32]))
    assert hv.tolist() == [31, -1] and hok.all()


def test_distinct_groups_equal_rows() -> None:
    """distinct() returns one group per distinct row and the group of every row."""
    mat = np.array([[1, 2], [3, 4], [1, 2], [0, 0]], dtype=np.uint8)
    gid, keys = scan.distinct(mat)
    assert len(keys) == 3 and gid[0] == gid[2] != gid[1]
    assert [keys[g] for g in gid] == [bytes(r) for r in mat]


def test_intern_spans_strips_right_aligned_comms() -> None:
    """Interning a right-aligned comm column with strip gives the bare names, once each."""
    buf = scan.padded(b"          python\n          <idle>\n          python\n")
    starts, _ends = scan.line_bounds(buf)
    strings: dict[str, int] = {}
    ids = scan.intern_spans(buf, starts, starts + 16, strings, 16, strip=True)
    assert ids[0] == ids[2] and sorted(strings) == ["<idle>", "python"]


@given(st.lists(st.integers(min_value=0, max_value=10**18 - 1), min_size=1, max_size=40))
def test_swar_decimal_matches_int(values: list[int]) -> None:
    """The eight-bytes-at-a-time decimal reader agrees with int() on any non-negative number."""
    text = b" ".join(str(v).encode() for v in values) + b"\n"
    buf = scan.padded(text)
    pos, p = [], 0
    for v in values:
        pos.append(p)
        p += len(str(v)) + 1
    val, end, ok = swar.decimal(swar.words(buf), np.array(pos, dtype=np.int64))
    assert ok.all() and val.tolist() == values
    assert (end - np.array(pos)).tolist() == [len(str(v)) for v in values]


@pytest.mark.parametrize("text,targets,expected", [
    (b"sched_switch: prev", b":(", 12), (b"sys_recvmsg(fd: 5", b":( ", 11), (b"abcdefghijklmnopqrstuvw", b":", -1),
])
def test_swar_find_first(text: bytes, targets: bytes, expected: int) -> None:
    """find_first locates the first of several bytes across words, -1 when absent."""
    buf = scan.padded(text + b"\n")
    assert swar.find_first(swar.words(buf), np.array([0]), targets + b"\n", 3).tolist() == \
        [expected if expected >= 0 else len(text)]
