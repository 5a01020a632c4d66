"""isochron .dat logs: the real log decodes packet by packet like `isochron report`, damage is refused."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from latscope.errors import FormatError
from latscope.importers import isochron
from latscope.importers.common import RawFile, read_file
from latscope.store.samples import FLAG_LOST, MISSING
from tests.unit.importers.conftest import ISOCHRON_CSV, ISOCHRON_DAT


@pytest.fixture(scope="module")
def export() -> np.ndarray:
    """The per-packet CSV export: seqid, S, cycle, w, s, t, T, a, r, R."""
    return np.loadtxt(ISOCHRON_CSV, delimiter=",", dtype=np.int64, ndmin=2)


def _raw(data: bytes) -> RawFile:
    return RawFile.of_bytes(Path("test.dat"), data)


def _nz(a: np.ndarray) -> np.ndarray:
    return np.where(a == 0, MISSING, a)


def test_raw_records_match_isochron_report_export(export: np.ndarray) -> None:
    """Every field of every packet equals what `isochron report --printf-format` printed for it."""
    log = isochron.read_log(read_file(ISOCHRON_DAT))
    assert len(log.send) == len(export) == 2000
    s = log.send
    assert (s["seqid"] == export[:, 0]).all()
    assert (s["scheduled"] == export[:, 1]).all()
    assert (log.header["cycle_time"] == export[:, 2]).all()
    assert (s["wakeup"] == export[:, 3]).all()
    assert (s["sched_ts"] == export[:, 4]).all()  # sw_tx_pre_qdisc (s)
    assert (s["swts"] == export[:, 5]).all()  # sw_tx_driver (t)
    assert (s["hwts"] == export[:, 6]).all()
    assert (log.arrival == export[:, 7]).all()
    assert (log.rx_swts == export[:, 8]).all()
    assert (log.rx_hwts == export[:, 9]).all()


def test_contract_columns_follow_the_documented_mapping(export: np.ndarray) -> None:
    """sched = S - advance, wake = send = w, tx_sw = t, tx_hw = T, rx_user = a, rx_sw = r, rx_hw = R (0 is null)."""
    imp = isochron.parse(read_file(ISOCHRON_DAT))
    c = imp.columns
    advance = imp.config["isochron"]["advance_time_ns"]
    assert advance == 1_000_000
    assert (c["seq"] == export[:, 0]).all()
    assert (c["sched_ns"] + advance == export[:, 1]).all()
    assert (c["wake_ns"] == export[:, 3]).all() and (c["send_ns"] == export[:, 3]).all()
    assert (c["tx_sw_ns"] == _nz(export[:, 5])).all()
    assert (c["tx_hw_ns"] == MISSING).all()  # software timestamps only in this log
    assert (c["rx_user_ns"] == _nz(export[:, 7])).all()
    assert (c["rx_sw_ns"] == _nz(export[:, 8])).all()
    assert (c["rx_hw_ns"] == MISSING).all()


def test_metrics_equal_isochron_definitions(export: np.ndarray) -> None:
    """latscope's wakeup and sender latency equal isochron's "wakeup latency" and "sender latency" per packet."""
    imp = isochron.parse(read_file(ISOCHRON_DAT))
    c = imp.columns
    S, A, w, t = export[:, 1], 1_000_000, export[:, 3], export[:, 5]
    assert ((c["wake_ns"] - c["sched_ns"]) == w - (S - A)).all()
    assert ((c["tx_sw_ns"] - c["send_ns"]) == t - w).all()


def test_run_metadata_says_what_was_stored() -> None:
    """The source names the tool, one-way metric, CLOCK_TAI and notes; config has the period and flags."""
    imp = isochron.parse(read_file(ISOCHRON_DAT))
    assert imp.source["tool"] == "isochron" and imp.source["metric"] == "one-way latency"
    assert imp.source["clock"] == "CLOCK_TAI" and any("TAI-UTC" in n for n in imp.source["notes"])
    assert imp.config["period_ns"] == 1_000_000 and imp.config["count"] == 2000 and imp.config["size"] == 58
    assert imp.config["isochron"]["do_ts"] and not imp.config["isochron"]["txtime"]
    assert imp.counts["sent"] == 2000 and imp.counts["received"] == 2000 and imp.counts["lost"] == 0
    assert imp.started and imp.started.startswith("20")


def test_unreceived_packet_is_lost() -> None:
    """A receiver record whose seqid does not match its slot means the packet never arrived."""
    data = bytearray(read_file(ISOCHRON_DAT).data)
    rcv_start = struct.unpack_from(">Q", data, 72)[0]
    struct.pack_into(">I", data, rcv_start + 32 * 9, 0)  # seqid 10 never received
    imp = isochron.parse(_raw(bytes(data)))
    c = imp.columns
    assert c["flags"][9] & FLAG_LOST and c["rx_user_ns"][9] == MISSING and c["rx_sw_ns"][9] == MISSING
    assert imp.counts["lost"] == 1 and imp.counts["received"] == 1999


def test_interrupted_log_stops_at_first_unwritten_slot() -> None:
    """Like isochron report, parsing stops at the first sender slot never written, and says so."""
    data = bytearray(read_file(ISOCHRON_DAT).data)
    send_start = struct.unpack_from(">Q", data, 64)[0]
    struct.pack_into(">I", data, send_start + 48 * 1500, 0)
    imp = isochron.parse(_raw(bytes(data)))
    assert len(imp.columns["seq"]) == 1500
    assert any("500 further slot" in n for n in imp.source["notes"])


@pytest.mark.parametrize(("mutate", "needle"), [
    (lambda d: b"NOTISOCH" + d[8:], "not an isochron log"),
    (lambda d: d[:50], "truncated"),
    (lambda d: d[:100_000], "truncated"),
    (lambda d: d[:-1], "truncated"),
    (lambda d: d[:8] + struct.pack(">I", 99) + d[12:], "version 99"),
    (lambda d: d[:80] + struct.pack(">I", 1000) + d[84:], "multiple"),
    (lambda d: d[:64] + struct.pack(">Q", 10**9) + d[72:], "truncated"),
    (lambda d: d[:96] + bytes(48) + d[144:], "empty"),
])
def test_damaged_logs_are_refused(mutate, needle: str) -> None:
    """Wrong magic, truncation anywhere, unknown version, bad section sizes or offsets: one FormatError."""
    data = read_file(ISOCHRON_DAT).data
    with pytest.raises(FormatError, match=needle):
        isochron.parse(_raw(mutate(data)))
