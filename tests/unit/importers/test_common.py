"""Shared importer helpers: file reading, contract columns, loss and reordering rules."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from latscope.errors import FormatError, NotFoundError
from latscope.importers.common import build, parse_decimal_ns, read_file, reordered_mask
from latscope.store.runfile import COMPLETENESS_KEYS
from latscope.store.samples import FLAG_LOST, FLAG_REORDERED, MISSING, SAMPLE_COLUMNS

M = MISSING


def test_read_file_gunzips_and_hashes_the_original(tmp_path: Path) -> None:
    """gzip is undone transparently; size and sha256 describe the file as it is on disk."""
    p = tmp_path / "x.json.gz"
    p.write_bytes(gzip.compress(b'{"a": 1}'))
    raw = read_file(p)
    assert raw.data == b'{"a": 1}' and raw.gzipped
    assert raw.size == p.stat().st_size and len(raw.sha256) == 64


# mtime=0: a gzip member carries its time, and a parameter id that changes with the second makes
# pytest-xdist's workers collect different tests.
@pytest.mark.parametrize("content", [b"", b"   \n\n", gzip.compress(b"", mtime=0)],
                         ids=["empty", "blank", "empty-gzip"])
def test_read_file_refuses_empty_files(tmp_path: Path, content: bytes) -> None:
    """An empty (or empty once gunzipped) file is a FormatError, not an empty run."""
    p = tmp_path / "empty"
    p.write_bytes(content)
    with pytest.raises(FormatError, match="empty"):
        read_file(p)


def test_read_file_truncated_gzip(tmp_path: Path) -> None:
    """A cut gzip stream is reported as corrupt or truncated."""
    p = tmp_path / "cut.json.gz"
    p.write_bytes(gzip.compress(b"x" * 10000)[:20])
    with pytest.raises(FormatError, match="gzip"):
        read_file(p)


def test_read_file_missing(tmp_path: Path) -> None:
    """A file that does not exist is NotFoundError (exit 2)."""
    with pytest.raises(NotFoundError):
        read_file(tmp_path / "nope")


def test_build_fills_every_contract_column_and_count() -> None:
    """Absent timestamps are null columns; rows without a receive time are flagged lost."""
    cols, counts = build(np.array([1, 2, 3]), {"send_ns": np.array([10, 20, 30]),
                                               "rx_sw_ns": np.array([15, M, 36])})
    assert set(cols) == set(SAMPLE_COLUMNS)
    assert (cols["sched_ns"] == M).all() and (cols["rx_hw_ns"] == M).all()
    assert list(cols["flags"] & FLAG_LOST) == [0, FLAG_LOST, 0]
    assert set(counts) == set(COMPLETENESS_KEYS)
    assert counts["sent"] == 3 and counts["received"] == 2 and counts["lost"] == 1
    assert counts["missing_tx_timestamps"] == 3


def test_build_untimed_rows_are_received_not_lost() -> None:
    """Rows known to have arrived without a time count as received with a missing rx timestamp."""
    cols, counts = build(np.array([0, 1]), {"send_ns": np.array([1, 2]), "rx_sw_ns": np.array([5, M])},
                         untimed=np.array([False, True]), tx_recorded=False)
    assert not (cols["flags"] & FLAG_LOST).any()
    assert counts["received"] == 2 and counts["lost"] == 0 and counts["missing_rx_timestamps"] == 1
    assert counts["missing_tx_timestamps"] == 0


def test_reordered_mask_matches_the_receiver_rule() -> None:
    """A packet is reordered when it arrives after one with a higher seq (latscope's receiver rule)."""
    seq = np.array([0, 1, 2, 3, 4])
    arrival = np.array([10, 30, 20, 40, M])
    assert list(reordered_mask(seq, arrival)) == [False, True, False, False, False]  # 1 came after 2
    cols, counts = build(seq, {"send_ns": seq, "rx_sw_ns": arrival}, arrival="rx_sw_ns")
    assert list(cols["flags"] & FLAG_REORDERED) == [0, FLAG_REORDERED, 0, 0, 0]
    assert counts["reordered"] == 1


@pytest.mark.parametrize(("text", "ns"), [("2.403062896", 2_403_062_896), ("0.5", 500_000_000),
                                          ("1795605691.708000001", 1_795_605_691_708_000_001), ("-1.000000002", -1_000_000_002)])
def test_parse_decimal_ns_is_exact(text: str, ns: int) -> None:
    """Decimal seconds become integer ns without float rounding, even at epoch scale."""
    assert parse_decimal_ns(text) == ns


@pytest.mark.parametrize("text", ["", "1.2.3", "abc", "1e3", "1.5x"])
def test_parse_decimal_ns_rejects_garbage(text: str) -> None:
    """Anything but a plain decimal number is a ValueError."""
    with pytest.raises(ValueError):
        parse_decimal_ns(text)
