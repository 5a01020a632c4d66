"""sockperf --full-log: round trips stored as documented, sockperf's loss counts kept, damage refused."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from latscope.analysis import metrics
from latscope.errors import ConfigError, FormatError
from latscope.importers import sockperf
from latscope.importers.common import RawFile, read_file
from latscope.store.samples import FLAG_LOST, MISSING, Samples
from tests.unit.importers.conftest import IMPORT

LOSSY = IMPORT / "sockperf-veth-loss.csv"
RTT = IMPORT / "sockperf-lo-pingpong-rtt.csv"


def _rows(path: Path) -> np.ndarray:
    return np.array([[float(x) for x in line.split(",")] for line in path.read_text().splitlines()
                     if re.match(r"^\d+, ", line)])


def _raw(text: str) -> RawFile:
    return RawFile.of_bytes(Path("t.csv"), text.encode())


def test_half_rtt_matches_sockperf_latency_column() -> None:
    """Each logged packet's latency is sockperf's own "latency" value (RTT/2), to its 3 printed decimals."""
    imp = sockperf.parse(read_file(LOSSY))
    rows = _rows(LOSSY)
    lat = metrics.latency(Samples(imp.columns))
    lat = lat[~np.isnan(lat)] / 1000
    assert len(lat) == len(rows) and np.abs(lat - rows[:, 3]).max() <= 0.0015
    assert imp.source["metric"] == "round-trip" and imp.source["sockperf_metric"] == "half-rtt"


def test_dropped_packets_fill_the_gaps_of_the_send_grid() -> None:
    """Each of the 123 dropped packets goes into the 1 ms slot its absence left, flagged lost, schedule known."""
    imp = sockperf.parse(read_file(LOSSY))
    c = imp.columns
    rows = _rows(LOSSY)
    tx = np.round(rows[:, 1] * 1e9).astype(np.int64)
    slots = np.rint((tx - tx[0]) / 1e6).astype(np.int64)
    assert len(c["seq"]) == 1427 + 123 and list(c["seq"]) == list(range(1550))
    lost = (c["flags"] & FLAG_LOST) != 0
    assert lost.sum() == 123 and not lost[slots].any()
    assert (c["send_ns"][slots] == tx).all() and (c["send_ns"][lost] == MISSING).all()
    assert (c["sched_ns"] != MISSING).all() and (np.diff(c["sched_ns"]) == 1_000_000).all()
    assert imp.counts["lost"] == 123 and imp.counts["sent"] == 1550
    assert any("placed in the gaps" in n for n in imp.source["notes"])


def test_unpaced_or_reordered_logs_append_the_lost_rows() -> None:
    """Without a send grid (--mps=max) or with out-of-order packets, uncounted rows go after the log, untimed."""
    text = LOSSY.read_text()
    for edited, lost, reordered in (
        (text.replace("--mps=1000", "--mps=max"), 123, 0),
        (text.replace("# out-of-order messages = 0", "# out-of-order messages = 2"), 123, 2),
    ):
        imp = sockperf.parse(_raw(edited))
        c = imp.columns
        assert len(c["seq"]) == 1427 + lost + reordered and list(c["seq"]) == list(range(len(c["seq"])))
        assert not (c["flags"][:1427] & FLAG_LOST).any() and (c["send_ns"][1427:] == MISSING).all()
        assert imp.counts["lost"] == lost and imp.counts["reordered"] == reordered
        assert imp.counts["received"] == 1427 + reordered and imp.counts["missing_rx_timestamps"] == reordered


def test_full_rtt_log() -> None:
    """A --full-rtt log: half-rtt halves it, rtt keeps it; the unit of the log is recorded."""
    rows = _rows(RTT)
    half = sockperf.parse(read_file(RTT))
    full = sockperf.parse(read_file(RTT), "rtt")
    assert half.source["log_unit"] == "rtt"
    assert np.abs(metrics.latency(Samples(full.columns)) / 1000 - rows[:, 3]).max() <= 0.0015
    assert np.abs(metrics.latency(Samples(half.columns)) / 1000 - rows[:, 3] / 2).max() <= 0.0015


def test_average_equals_sockperf_summary() -> None:
    """The mean latency equals the avg-latency sockperf printed for the run."""
    text = LOSSY.read_text()
    reported = float(re.search(r"avg-latency=([\d.]+)", text).group(1))
    imp = sockperf.parse(read_file(LOSSY))
    assert abs(np.nanmean(metrics.latency(Samples(imp.columns))) / 1000 - reported) < 0.001


def test_schedule_from_mps() -> None:
    """--mps=1000 gives a 1 ms period and a send grid within half a period of each send."""
    imp = sockperf.parse(read_file(LOSSY))
    c = imp.columns
    ok = c["send_ns"] != MISSING
    assert imp.config["period_ns"] == 1_000_000
    assert (np.abs(c["send_ns"][ok] - c["sched_ns"][ok]) <= 500_000).all()


def _cut_last_rule(t: str) -> str:
    return t[: t.rindex("------------------------------")]


def _drop_row(t: str) -> str:
    return re.sub(r"\n5, [^\n]*", "", t, count=1)


def _bad_value(t: str) -> str:
    return re.sub(r"\n(7, [\d.]+, [\d.]+, )([\d.]+)", lambda m: f"\n{m.group(1)}999.000", t, count=1)


@pytest.mark.parametrize(("mutate", "needle"), [
    (lambda t: "sockperf: nothing useful here\n", "no sockperf full log"),
    (_cut_last_rule, "truncated"),
    (lambda t: t[: t.index("\n10, ") + 12], "line"),
    (_drop_row, "follows packet"),
    (_bad_value, "does not match"),
    (lambda t: t.replace("\n3, ", "\n3; ", 1), "malformed"),
    (lambda t: t.replace("ReceivedMessages=1427", "ReceivedMessages=1500"), "summary says 1500"),
])
def test_damaged_logs(mutate, needle: str) -> None:
    """Missing log, truncation, a lost or edited line, a summary that disagrees: one FormatError."""
    with pytest.raises(FormatError, match=needle):
        sockperf.parse(_raw(mutate(LOSSY.read_text())))


def test_unknown_metric() -> None:
    """Only half-rtt and rtt exist for sockperf: it has no one-way times."""
    with pytest.raises(ConfigError):
        sockperf.parse(read_file(LOSSY), "one-way")
