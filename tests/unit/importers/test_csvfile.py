"""CSV imports: the documented columns land in the contract, anything malformed is one FormatError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from latscope.analysis import metrics
from latscope.errors import FormatError
from latscope.importers import csvfile
from latscope.importers.common import read_file
from latscope.store.samples import FLAG_LOST, FLAG_REORDERED, MISSING, Samples
from tests.support import synthetic_columns


def _parse(tmp_path: Path, text: str):
    p = tmp_path / "in.csv"
    p.write_text(text)
    return csvfile.parse(read_file(p))


def test_minimal_file(tmp_path: Path) -> None:
    """seq,send_ns,rx_ns: rx_ns becomes rx_sw_ns, an empty rx is a lost packet, latency is rx - send."""
    imp = _parse(tmp_path, "seq,send_ns,rx_ns\n0,1000,1500\n1,2000,\n2,3000,3700\n")
    c = imp.columns
    assert list(c["rx_sw_ns"]) == [1500, MISSING, 3700]
    assert (c["rx_hw_ns"] == MISSING).all() and (c["sched_ns"] == MISSING).all()
    assert list(c["flags"] & FLAG_LOST) == [0, FLAG_LOST, 0]
    assert list(np.nan_to_num(metrics.latency(Samples(c)))) == [500, 0, 700]
    assert imp.counts["lost"] == 1 and imp.counts["missing_tx_timestamps"] == 0
    assert imp.source["metric"] == "one-way latency" and "rx_ns" in imp.source["columns"]


def test_optional_columns_and_spaces(tmp_path: Path) -> None:
    """sched_ns and rx_user_ns are taken, spaces after commas are fine, the period comes from sched_ns."""
    imp = _parse(tmp_path, "seq, sched_ns, send_ns, rx_ns, rx_user_ns\n"
                           "0, 1000000, 1000100, 1000600, 1000900\n1, 2000000, 2000200, 2000500, 2000800\n")
    c = imp.columns
    assert list(c["sched_ns"]) == [1_000_000, 2_000_000]
    assert list(c["rx_user_ns"]) == [1_000_900, 2_000_800]
    assert imp.config["period_ns"] == 1_000_000


def test_rows_are_sorted_by_seq_and_reordering_flagged(tmp_path: Path) -> None:
    """Rows come out in seq order; a packet that arrived after a higher seq is flagged reordered."""
    imp = _parse(tmp_path, "seq,send_ns,rx_ns\n1,200,900\n0,100,950\n2,300,1000\n")
    c = imp.columns
    assert list(c["seq"]) == [0, 1, 2]
    assert list(c["flags"] & FLAG_REORDERED) == [FLAG_REORDERED, 0, 0]


def test_round_trip_of_a_synthetic_run(tmp_path: Path) -> None:
    """A run exported column by column and imported again gives the same latencies."""
    lat = np.random.default_rng(3).integers(10_000, 90_000, 500)
    lost = np.zeros(500, bool)
    lost[[7, 100]] = True
    cols = synthetic_columns(lat, lost=lost)
    names = ["seq", "sched_ns", "wake_ns", "send_ns", "tx_sw_ns", "rx_sw_ns", "rx_user_ns"]
    lines = [",".join(names)] + [",".join("" if cols[n][i] == MISSING else str(cols[n][i]) for n in names)
                                 for i in range(500)]
    imp = _parse(tmp_path, "\n".join(lines) + "\n")
    for name in ("latency", "e2e", "wakeup_latency", "sender_latency", "arrival_latency"):
        np.testing.assert_array_equal(metrics.METRICS[name][0](Samples(imp.columns)),
                                      metrics.METRICS[name][0](Samples(cols)))
    assert imp.counts["lost"] == 2


@pytest.mark.parametrize(("text", "needle"), [
    ("seq,send_ns\n0,1\n", "receive time"),
    ("seq,rx_ns\n0,1\n", "send_ns"),
    ("seq,send_ns,rx_ns,latency\n0,1,2,1\n", "unknown column 'latency'"),
    ("seq,send_ns,rx_ns,send_ns\n0,1,2,3\n", "twice"),
    ("seq,send_ns,rx_ns,rx_sw_ns\n0,1,2,3\n", "not both"),
    ("seq,send_ns,rx_ns\n", "no rows"),
    ("seq,send_ns,rx_ns\n0,100,abc\n", "column rx_ns"),
    ("seq,send_ns,rx_ns\n0,100,1.5e3\n", "column rx_ns"),
    ("seq,send_ns,rx_ns\n0,100,200\n1,150\n", "Expected 3 columns"),
    ("seq,send_ns,rx_ns\n0,100,200\n,150,300\n", "line 3: seq is empty"),
    ("seq,send_ns,rx_ns\n0,100,200\n0,150,300\n", "seq 0 appears more than once"),
    ("seq,stream,send_ns,rx_ns\n0,-1,100,200\n", "stream"),
    ("\n\n1,2,3\n", "name the columns"),
])
def test_malformed_files(tmp_path: Path, text: str, needle: str) -> None:
    """Missing or unknown columns, bad numbers, short rows, duplicate seq: FormatError naming the problem."""
    with pytest.raises(FormatError, match=needle):
        _parse(tmp_path, text)


def test_binary_garbage(tmp_path: Path) -> None:
    """A binary file given as CSV is refused as such, not parsed into nonsense."""
    p = tmp_path / "in.csv"
    p.write_bytes(b"\x00\xff\xfe garbage \x89PNG")
    with pytest.raises(FormatError):
        csvfile.parse(read_file(p))
