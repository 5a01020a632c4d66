"""The parsers read text in chunks (4 MiB) and groups of chunks (64 MiB): where the text is cut never shows.

State carried from chunk to chunk (string and event-name tables, line
ordinals, the pairing with the raw rendering) is what these tests exercise:
a capture parsed in one piece, cut at every line, cut at odd sizes, or
larger than one real chunk gives the same table, row for row.
"""

from __future__ import annotations

import numpy as np
import pytest

from latscope.trace import engine, parse_text, parse_tracecmd, scan
from latscope.trace.table import EventTable
from tests.unit.trace.conftest import fixture_bytes

RENDERINGS = {
    "veth-run.txt": parse_text.DIALECT,
    "overrun.txt": parse_text.DIALECT,
    "veth-run.report": parse_tracecmd.DEFAULT,
    "veth-run.report-t": parse_tracecmd.DEFAULT,
    "veth-run.report-R": parse_tracecmd.RAW,
}


def resolved(t: EventTable) -> dict[str, np.ndarray]:
    """Every column with ids replaced by what they name (ids depend on the order names were first met)."""
    strings = np.array([*t.strings, None], dtype=object)  # index -1 -> None
    return {
        "ts": t.ts, "cpu": t.cpu, "pid": t.pid, "ctx": t.ctx, "nums": t.nums,
        "comm": strings[t.comm], "strs": strings[t.strs],
        "event": np.array(t.event_names, dtype=object)[t.event],
    }


def assert_same_table(got: EventTable, want: EventTable) -> None:
    a, b = resolved(got), resolved(want)
    assert len(got) == len(want)
    for key in a:
        assert np.array_equal(a[key], b[key]), key


@pytest.mark.parametrize("name", sorted(RENDERINGS))
@pytest.mark.parametrize("chunk_bytes,group_bytes", [pytest.param(1, None, marks=pytest.mark.slow),
                                                     pytest.param(1, 1, marks=pytest.mark.slow),
                                                     (997, 4096), (8192, None)])
def test_cut_anywhere_gives_the_same_table(name: str, chunk_bytes: int, group_bytes: int | None) -> None:
    """chunk_bytes=1 cuts after every line; group_bytes=1 reads the fields of each chunk on its own."""
    data = fixture_bytes(name)
    dialect = RENDERINGS[name]
    whole, whole_stats, whole_ord = engine.parse_lines(data, dialect, chunk_bytes=len(data) + 1)
    assert len(list(scan.chunks(data, len(data) + 1))) == 1 and len(whole) > 200
    cut, cut_stats, cut_ord = engine.parse_lines(data, dialect, chunk_bytes=chunk_bytes, group_bytes=group_bytes)
    if chunk_bytes == 1:
        assert len(list(scan.chunks(data, chunk_bytes))) == whole_stats.lines
    assert_same_table(cut, whole)
    assert np.array_equal(cut_ord, whole_ord)
    assert cut_stats.as_meta() == whole_stats.as_meta()


def test_capture_larger_than_a_chunk_with_its_raw_rendering() -> None:
    """The `run --trace` path (text + raw ns) on 5 MiB of text: every copy of the capture parses alike."""
    text, raw = fixture_bytes("veth-run.txt"), fixture_bytes("veth-run.raw")
    body = b"".join(ln + b"\n" for ln in text.splitlines() if not ln.startswith(b"#"))
    raw_body = b"".join(ln + b"\n" for ln in raw.splitlines() if not ln.startswith(b"#"))
    copies = (5 << 20) // len(body) + 1
    assert len(list(scan.chunks(body * copies))) >= 2
    one = parse_text.parse_kernel_text(body, raw_body)
    many = parse_text.parse_kernel_text(body * copies, raw_body * copies)
    assert one.meta["ts_source"] == "raw" and many.meta["ts_source"] == "raw"
    assert len(many) == copies * len(one)
    # engine.finish orders rows by time: equal timestamps of the copies sit side by side
    want = resolved(one)
    got = resolved(many)
    for key in want:
        rep = np.repeat(want[key], copies, axis=0)
        assert np.array_equal(got[key], rep), key
