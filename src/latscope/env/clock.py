"""How well this host's clock is synchronised: the kernel's view (adjtimex), chrony and linuxptp.

One-way latency subtracts a time read on one host from a time read on
another; the result is only as good as the two clocks' agreement
(docs/clock.md). ``check_host`` gathers what this host can say about its own
clock; analysis.clockbound turns the checks of both ends (and a burst of
round trips between them) into one error bound. The agent runs
``check_host`` on its own host and sends the document back.

Every source is optional: a daemon that does not run is reported as such,
never as an error. External commands run with a bounded timeout.
"""

from __future__ import annotations

import ctypes
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from latscope.libc import LIBC, Timex

# include/uapi/linux/timex.h
STATUS_BITS = {
    0x0001: "PLL", 0x0002: "PPSFREQ", 0x0004: "PPSTIME", 0x0008: "FLL", 0x0010: "INS", 0x0020: "DEL",
    0x0040: "UNSYNC", 0x0080: "FREQHOLD", 0x0100: "PPSSIGNAL", 0x0200: "PPSJITTER", 0x0400: "PPSWANDER",
    0x0800: "PPSERROR", 0x1000: "CLOCKERR", 0x2000: "NANO", 0x4000: "MODE", 0x8000: "CLK",
}
STA_UNSYNC = 0x0040
STA_NANO = 0x2000
CLOCK_STATES = {0: "TIME_OK", 1: "TIME_INS", 2: "TIME_DEL", 3: "TIME_OOP", 4: "TIME_WAIT", 5: "TIME_ERROR"}
#: The kernel's "no idea" maximum error (NTP_PHASE_LIMIT << 5 ... capped at 16 s): what an unsynchronised clock says.
MAXERROR_UNSYNC_US = 16_000_000
COMMAND_TIMEOUT_S = 5.0
Runner = Callable[[Sequence[str]], str]


def adjtimex() -> dict[str, Any]:
    """The kernel's clock discipline state (adjtimex with modes=0 only reads)."""
    tx = Timex()
    state = LIBC.adjtimex(ctypes.byref(tx))
    if state < 0:
        return {"error": f"adjtimex failed (errno {ctypes.get_errno()})"}
    return timex_doc(state, tx.status, tx.offset, tx.maxerror, tx.esterror, tx.freq, tx.tai)


def timex_doc(state: int, status: int, offset: int, maxerror_us: int, esterror_us: int, freq: int = 0,
              tai: int = 0) -> dict[str, Any]:
    """adjtimex's answer as JSON: state, status bits by name, unsynchronised flag, errors (µs) and offset (ns)."""
    return {
        "state": CLOCK_STATES.get(state, str(state)),
        "status": status,
        "status_bits": [name for bit, name in STATUS_BITS.items() if status & bit],
        "unsynchronised": bool(status & STA_UNSYNC),
        "maxerror_us": maxerror_us,
        "esterror_us": esterror_us,
        "offset_ns": offset if status & STA_NANO else offset * 1000,
        "freq_ppm": round(freq / 65536, 3),
        "tai_offset_s": tai,
    }


def run_command(argv: Sequence[str]) -> str:
    """stdout of ``argv`` (bounded in time); OSError/TimeoutExpired/CalledProcessError propagate."""
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
                          check=True).stdout


def running(name: str, proc: Path = Path("/proc")) -> bool:
    """Whether a process whose comm is ``name`` runs (in this PID namespace)."""
    for p in proc.iterdir():
        if p.name.isdigit():
            try:
                if (p / "comm").read_text().strip() == name:
                    return True
            except OSError:
                continue
    return False


_CHRONY_FIELDS = ("reference_id", "reference", "stratum", "reference_time", "system_offset_s", "last_offset_s",
                  "rms_offset_s", "frequency_ppm", "residual_frequency_ppm", "skew_ppm", "root_delay_s",
                  "root_dispersion_s", "update_interval_s", "leap_status")


def parse_chrony_tracking(text: str) -> dict[str, Any]:
    """``chronyc -c tracking`` (one CSV line) as a dict; ValueError when it is not that."""
    parts = text.strip().split(",")
    if len(parts) != len(_CHRONY_FIELDS):
        raise ValueError(f"expected {len(_CHRONY_FIELDS)} fields, got {len(parts)}")
    doc: dict[str, Any] = dict(zip(_CHRONY_FIELDS, parts, strict=True))
    doc["stratum"] = int(doc["stratum"])
    for key in _CHRONY_FIELDS[3:13]:
        doc[key] = float(doc[key])
    # chrony's own bound on the clock's error (chronyc(1), "Root dispersion"): offset + dispersion + delay/2.
    doc["bound_ns"] = int(1e9 * (abs(doc["system_offset_s"]) + doc["root_dispersion_s"] + doc["root_delay_s"] / 2))
    doc["synchronised"] = doc["leap_status"] != "Not synchronised" and doc["stratum"] < 16
    return doc


def chrony(run: Runner = run_command, proc: Path = Path("/proc")) -> dict[str, Any]:
    """chronyd's tracking state when it runs."""
    if not running("chronyd", proc):
        return {"running": False}
    try:
        return {"running": True, **parse_chrony_tracking(run(["chronyc", "-c", "tracking"]))}
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return {"running": True, "error": f"chronyc -c tracking: {str(exc).strip() or type(exc).__name__}"}


PMC_QUERIES = ("GET PORT_DATA_SET", "GET CURRENT_DATA_SET", "GET TIME_STATUS_NP")


def parse_pmc(text: str) -> dict[str, dict[str, str]]:
    """pmc's answers: {"PORT_DATA_SET": {"portState": "SLAVE", ...}, ...} (the first response of each kind)."""
    out: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in text.splitlines():
        words = line.split()
        if "RESPONSE" in words and "MANAGEMENT" in words:
            tlv = words[-1]
            current = out.setdefault(tlv, {}) if tlv not in out else None
            continue
        if line.startswith("sending:"):
            current = None
            continue
        if current is not None and len(words) >= 2 and line[:1].isspace():
            current[words[0]] = " ".join(words[1:])
    return out


def ptp_doc(answers: dict[str, dict[str, str]]) -> dict[str, Any]:
    """Port state, offset from master and mean path delay (ns) from parsed pmc answers."""
    port = answers.get("PORT_DATA_SET", {})
    current = answers.get("CURRENT_DATA_SET", {})
    status = answers.get("TIME_STATUS_NP", {})

    def number(doc: dict[str, str], key: str) -> float | None:
        try:
            return float(doc[key])
        except (KeyError, ValueError):
            return None

    offset = number(current, "offsetFromMaster")
    if offset is None:
        offset = number(status, "master_offset")
    doc: dict[str, Any] = {
        "port_state": port.get("portState"),
        "offset_from_master_ns": offset,
        "mean_path_delay_ns": number(current, "meanPathDelay"),
        "steps_removed": number(current, "stepsRemoved"),
        "gm_present": status.get("gmPresent") == "true" if "gmPresent" in status else None,
        "gm_identity": status.get("gmIdentity"),
    }
    return doc


def ptp(run: Runner = run_command, proc: Path = Path("/proc"), uds: str | None = None,
        pmc: str = "pmc") -> dict[str, Any]:
    """ptp4l's state through its management socket (pmc over UDS, domain 0... as ptp4l runs it)."""
    if uds is None and not running("ptp4l", proc):
        return {"running": False}
    argv = [pmc, "-u", "-b", "0"] + (["-s", uds] if uds else []) + list(PMC_QUERIES)
    try:
        answers = parse_pmc(run(argv))
    except (OSError, subprocess.SubprocessError) as exc:
        return {"running": True, "error": f"pmc: {str(exc).strip() or type(exc).__name__}"}
    if not answers:
        return {"running": True, "error": "pmc: ptp4l did not answer"}
    doc = {"running": True, **ptp_doc(answers)}
    doc["phc2sys_running"] = running("phc2sys", proc)
    return doc


def host_bound_ns(doc: dict[str, Any]) -> tuple[int | None, str]:
    """This host's clock error against its reference, and what says so; None: unknown or unsynchronised."""
    ptp_doc_ = doc.get("ptp") or {}
    if ptp_doc_.get("port_state") == "SLAVE" and ptp_doc_.get("offset_from_master_ns") is not None:
        return int(abs(ptp_doc_["offset_from_master_ns"])), "ptp4l offset from master"
    if ptp_doc_.get("port_state") in ("MASTER", "GRAND_MASTER"):
        return 0, "ptp4l master (the reference)"
    ch = doc.get("chrony") or {}
    if ch.get("synchronised") and ch.get("bound_ns") is not None:
        return int(ch["bound_ns"]), "chrony (offset + root dispersion + root delay / 2)"
    kernel = doc.get("adjtimex") or {}
    if kernel.get("unsynchronised") is False and kernel.get("maxerror_us", MAXERROR_UNSYNC_US) < MAXERROR_UNSYNC_US:
        return int(kernel["maxerror_us"]) * 1000, "kernel maxerror (adjtimex)"
    return None, "no synchronisation this host can vouch for"


def check_host(run: Runner = run_command, proc: Path = Path("/proc"), ptp_uds: str | None = None
               ) -> dict[str, Any]:
    """Everything this host can say about its clock, and the bound it gives (``bound_ns``, None: unknown)."""
    doc: dict[str, Any] = {"adjtimex": adjtimex(), "chrony": chrony(run, proc), "ptp": ptp(run, proc, ptp_uds)}
    doc["bound_ns"], doc["basis"] = host_bound_ns(doc)
    return doc


ADJ_FREQUENCY, ADJ_MAXERROR, ADJ_ESTERROR, ADJ_STATUS = 0x0002, 0x0004, 0x0008, 0x0010


def kernel_state() -> dict[str, int]:
    """The adjtimex fields a time daemon changes (freq, status, maxerror, esterror), to put them back later."""
    tx = Timex()
    if LIBC.adjtimex(ctypes.byref(tx)) < 0:
        raise OSError(ctypes.get_errno(), "adjtimex")
    return {"freq": tx.freq, "status": tx.status, "maxerror": tx.maxerror, "esterror": tx.esterror}


def restore_kernel_state(saved: dict[str, int]) -> None:
    """Set what kernel_state() saved (needs CAP_SYS_TIME): for tests that run a time daemon on this host."""
    tx = Timex()
    tx.modes = ADJ_FREQUENCY | ADJ_MAXERROR | ADJ_ESTERROR | ADJ_STATUS
    tx.freq, tx.status, tx.maxerror, tx.esterror = saved["freq"], saved["status"], saved["maxerror"], saved["esterror"]
    if LIBC.adjtimex(ctypes.byref(tx)) < 0:
        raise OSError(ctypes.get_errno(), "adjtimex")
