"""env.clock: adjtimex through ctypes on this very host, and pmc/chronyc output parsed from real captures."""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest

from latscope.env import clock
from latscope.libc import Timex

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "clock"


def test_adjtimex_reads_this_hosts_kernel_clock_state() -> None:
    """The ctypes struct matches the kernel's: the status word decodes, the flags agree, the errors are in range."""
    doc = clock.adjtimex()
    assert "error" not in doc
    assert doc["state"] in clock.CLOCK_STATES.values()
    assert doc["unsynchronised"] == ("UNSYNC" in doc["status_bits"]) == bool(doc["status"] & clock.STA_UNSYNC)
    # The kernel caps both errors at NTP_PHASE_LIMIT-derived 16 s (in µs); a misaligned struct reads garbage here.
    assert 0 <= doc["esterror_us"] <= clock.MAXERROR_UNSYNC_US
    assert 0 <= doc["maxerror_us"] <= clock.MAXERROR_UNSYNC_US
    assert ctypes.sizeof(Timex) == 208  # sizeof(struct timex) on LP64 Linux


def test_timex_doc_names_status_bits_and_scales_the_offset() -> None:
    """STA_NANO says the offset is in ns already; without it, µs are scaled."""
    nano = clock.timex_doc(0, 0x2000 | 0x0001, 1234, 10, 5)
    assert nano["status_bits"] == ["PLL", "NANO"] and nano["offset_ns"] == 1234 and not nano["unsynchronised"]
    micro = clock.timex_doc(5, 0x0040, 7, 16_000_000, 16_000_000)
    assert micro["offset_ns"] == 7000 and micro["unsynchronised"] and micro["state"] == "TIME_ERROR"


@pytest.mark.parametrize("name,state", [("pmc-master.txt", "MASTER"), ("pmc-uncalibrated.txt", "UNCALIBRATED")])
def test_pmc_answers_of_a_real_ptp4l_parse(name: str, state: str) -> None:
    """Captured from ptp4l -S in two namespaces: each TLV's fields land under its name."""
    answers = clock.parse_pmc((FIXTURES / name).read_text())
    assert set(answers) == {"PORT_DATA_SET", "CURRENT_DATA_SET", "TIME_STATUS_NP"}
    doc = clock.ptp_doc(answers)
    assert doc["port_state"] == state
    assert isinstance(doc["offset_from_master_ns"], float) and isinstance(doc["mean_path_delay_ns"], float)
    assert doc["gm_present"] in (True, False)


def test_pmc_garbage_gives_no_answers() -> None:
    """Text that is not pmc's (or a pmc that timed out after 'sending:' lines) yields nothing, not an exception."""
    assert clock.parse_pmc("sending: GET PORT_DATA_SET\n") == {}
    assert clock.parse_pmc("\x00\xff garbage\n\t\tportState SLAVE\n") == {}
    assert clock.ptp_doc({})["port_state"] is None


def test_ptp_reports_a_pmc_that_cannot_run(tmp_path: Path) -> None:
    """A pmc that fails is an error in the document, never an exception."""
    def fail(_argv):
        raise FileNotFoundError(2, "No such file or directory", "pmc")

    doc = clock.ptp(run=fail, proc=tmp_path, uds=str(tmp_path / "nothing"))
    assert doc["running"] and "pmc" in doc["error"]


# chronyc's -c tracking format (chronyc(1)): no chronyd may run on a shared test host (it would steer its clock),
# so this line follows the documented field order rather than a capture.
CHRONY = "C0A80001,192.168.0.1,3,1764000000.123456789,-0.000001500,0.000000800,0.000002000,-12.345,0.001,0.020," \
         "0.000400000,0.000050000,64.5,Normal"


def test_chrony_tracking_line_and_its_bound() -> None:
    """Bound = |system offset| + root dispersion + root delay / 2 (chrony's own maximum error)."""
    doc = clock.parse_chrony_tracking(CHRONY)
    assert doc["stratum"] == 3 and doc["synchronised"]
    assert doc["bound_ns"] == 1_500 + 50_000 + 200_000


@pytest.mark.parametrize("bad", ["", "a,b,c", CHRONY.replace(",3,", ",x,"), CHRONY + ",extra"])
def test_chrony_rejects_other_text(bad: str) -> None:
    """Anything but the 14 fields is a ValueError, which chrony() turns into an error entry."""
    with pytest.raises(ValueError):
        clock.parse_chrony_tracking(bad)


def test_host_bound_prefers_ptp_then_chrony_then_the_kernel() -> None:
    """The strongest source this host has decides its bound; an unsynchronised kernel alone gives none."""
    unsync = {"adjtimex": clock.timex_doc(5, 0x40, 0, 16_000_000, 16_000_000)}
    assert clock.host_bound_ns(unsync)[0] is None
    synced = {"adjtimex": clock.timex_doc(0, 0x2001, 0, 250, 3)}
    assert clock.host_bound_ns(synced)[0] == 250_000
    with_chrony = {**synced, "chrony": clock.parse_chrony_tracking(CHRONY)}
    assert clock.host_bound_ns(with_chrony)[0] == 251_500
    with_ptp = {**with_chrony, "ptp": {"port_state": "SLAVE", "offset_from_master_ns": -42.0}}
    assert clock.host_bound_ns(with_ptp) == (42, "ptp4l offset from master")
