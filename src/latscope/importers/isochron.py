"""isochron's binary log (`isochron send --output-file`, isochron.dat) -> a latscope run.

Layout of log version 4 (isochron 0.7 to 0.9), all integers big-endian:

- a 96-byte header: magic "ISOCHRON", u32 version, u32 packet_count,
  u16 frame_size, u16 flags, u32 reserved, s64 base_time, advance_time,
  shift_time, cycle_time, window_size, u64 send_log_start, rcv_log_start,
  u32 send_log_size, rcv_log_size, u64 reserved;
- the sender log: one 48-byte record per packet, indexed by seqid - 1:
  u32 seqid, u32 reserved, s64 scheduled, wakeup, hwts, swts, sched_ts;
- the receiver log: one 32-byte record per packet, indexed by seqid - 1:
  u32 seqid, u32 reserved, s64 arrival, hwts, swts.

A record whose seqid does not match its slot was never written (a packet not
sent, or not received). A timestamp of 0 means "not taken". Every time is
CLOCK_TAI nanoseconds.

Mapping onto the data contract (docs/import.md says why):

=================  =========================================================
sched_ns           scheduled - advance_time: the programmed wakeup, when the
                   sender was due to start the packet. isochron's own
                   "scheduled" (when the frame must hit the wire) is
                   sched_ns + advance_time.
wake_ns            wakeup
send_ns            wakeup: isochron takes no user time nearer the send call
                   (it builds and sends the frame right after waking), so
                   latency includes the few microseconds of preparation and
                   sender_latency equals isochron's "sender latency" (t - w).
tx_sw_ns           swts, the driver-level software TX timestamp (t): the
                   point SOF_TIMESTAMPING_TX_SOFTWARE stamps, as latscope's
                   own sender records. The pre-qdisc stamp (s) has no column.
tx_hw_ns           hwts (T), null when 0
rx_hw_ns           receiver hwts (R), null when 0
rx_sw_ns           receiver swts (r), null when 0
rx_user_ns         arrival (a)
=================  =========================================================
"""

from __future__ import annotations

import datetime as _dt
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from latscope.errors import FormatError
from latscope.importers.common import Imported, RawFile, build
from latscope.store.samples import MISSING

MAGIC = b"ISOCHRON"
SUPPORTED_VERSIONS = (4,)
HEADER = struct.Struct(">8sIIHHIqqqqqQQIIQ")
_HEADER_FIELDS = ("magic", "version", "packet_count", "frame_size", "flags", "reserved", "base_time", "advance_time",
                  "shift_time", "cycle_time", "window_size", "send_log_start", "rcv_log_start", "send_log_size",
                  "rcv_log_size", "reserved2")
SEND_RECORD = np.dtype([("seqid", ">u4"), ("reserved", ">u4"), ("scheduled", ">i8"), ("wakeup", ">i8"),
                        ("hwts", ">i8"), ("swts", ">i8"), ("sched_ts", ">i8")])
RCV_RECORD = np.dtype([("seqid", ">u4"), ("reserved", ">u4"), ("arrival", ">i8"), ("hwts", ">i8"),
                       ("swts", ">i8")])

_TIMES = ("base_time", "advance_time", "shift_time", "cycle_time", "window_size")
FLAG_NAMES = {0: "omit_sync", 1: "do_ts", 2: "taprio", 3: "txtime", 4: "deadline"}


@dataclass(frozen=True)
class IsochronLog:
    """The header and the per-packet records of an isochron log, as stored (timestamps 0 = not taken)."""

    header: dict[str, int]
    flags: dict[str, bool]
    #: Sender records of seqid 1..n, up to the first slot never written.
    send: np.ndarray
    #: Per sender record: whether the receiver logged that seqid.
    received: np.ndarray
    #: Receiver fields aligned with ``send`` (0 where not received).
    arrival: np.ndarray
    rx_hwts: np.ndarray
    rx_swts: np.ndarray
    #: Sender slots after ``send`` that were never written.
    unwritten: int


def sniff(head: bytes, complete: bool, where: Path) -> None:
    """FormatError unless the file starts with isochron's magic."""
    if head[: len(MAGIC)] != MAGIC:
        raise FormatError(f"{where}: not an isochron log (no ISOCHRON magic at the start)")


def read_log(raw: RawFile) -> IsochronLog:
    """Decode an isochron.dat, checking magic, version and that every section is inside the file."""
    data = raw.data
    where = raw.path
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise FormatError(f"{where}: not an isochron log (no ISOCHRON magic at the start)")
    if len(data) < HEADER.size:
        raise FormatError(f"{where}: truncated isochron log ({len(data)} bytes, the header alone is {HEADER.size})")
    fields = dict(zip(_HEADER_FIELDS, HEADER.unpack_from(data), strict=True))
    version = fields["version"]
    if version not in SUPPORTED_VERSIONS:
        raise FormatError(f"{where}: isochron log version {version} is not supported "
                          f"(this importer reads version {', '.join(map(str, SUPPORTED_VERSIONS))})")
    send = _section(data, where, "sender", fields["send_log_start"], fields["send_log_size"], SEND_RECORD)
    rcv = _section(data, where, "receiver", fields["rcv_log_start"], fields["rcv_log_size"], RCV_RECORD)
    if len(send) == 0:
        raise FormatError(f"{where}: the isochron log holds no sender records")
    # isochron report stops at the first slot whose seqid does not match
    # (the log of an interrupted run); do the same.
    slot_ok = send["seqid"].astype(np.int64) == np.arange(1, len(send) + 1)
    n = len(send) if slot_ok.all() else int(np.argmin(slot_ok))
    if n == 0:
        raise FormatError(f"{where}: the isochron sender log is empty (no record has a valid seqid)")
    seq = send["seqid"][:n].astype(np.int64)
    got = np.zeros(n, dtype=bool)
    rx = {k: np.zeros(n, dtype=np.int64) for k in ("arrival", "hwts", "swts")}
    m = min(n, len(rcv))
    if m:
        match = rcv["seqid"][:m].astype(np.int64) == seq[:m]
        got[:m] = match
        for k, column in rx.items():
            column[:m] = np.where(match, rcv[k][:m].astype(np.int64), 0)
    header = {k: int(v) for k, v in fields.items() if k not in ("magic", "flags", "reserved", "reserved2")}
    flags = {name: bool(fields["flags"] & (1 << bit)) for bit, name in FLAG_NAMES.items()}
    return IsochronLog(header, flags, send[:n], got, rx["arrival"], rx["hwts"], rx["swts"], len(send) - n)


def parse(raw: RawFile) -> Imported:
    """Parse an isochron.dat log into contract columns (mapping in the module docstring)."""
    log = read_log(raw)
    send, got = log.send, log.received
    n = len(send)
    seq = send["seqid"].astype(np.int64)
    # Everything is CLOCK_TAI; differences are what matter, so no offset is applied.
    advance_time = log.header["advance_time"]
    rx = {"arrival": log.arrival, "hwts": log.rx_hwts, "swts": log.rx_swts}

    def ts(values: np.ndarray, ok: np.ndarray | None = None) -> np.ndarray:
        v = values.astype(np.int64)
        keep = v != 0 if ok is None else (v != 0) & ok
        return np.where(keep, v, MISSING)

    scheduled = send["scheduled"].astype(np.int64)
    wakeup = ts(send["wakeup"])
    times = {
        "sched_ns": np.where(scheduled != 0, scheduled - advance_time, MISSING),
        "wake_ns": wakeup,
        "send_ns": wakeup,
        "tx_sw_ns": ts(send["swts"]),
        "tx_hw_ns": ts(send["hwts"]),
        "rx_hw_ns": ts(rx["hwts"], got),
        "rx_sw_ns": ts(rx["swts"], got),
        "rx_user_ns": ts(rx["arrival"], got),
    }
    cols, counts = build(seq, times, arrival="rx_user_ns")
    first = int(scheduled[scheduled != 0].min()) if np.any(scheduled != 0) else None
    notes = [
        "isochron measures one-way latency; every timestamp is CLOCK_TAI",
        "sched_ns = isochron scheduled (S) - advance_time: the programmed wakeup; S = sched_ns + advance_time_ns",
        ("send_ns = wakeup (w): isochron records no user time closer to the send call, "
        "so latency runs from the sender's wakeup and includes building the frame"),
        "tx_sw_ns = driver-level software TX timestamp (t); the pre-qdisc timestamp (s) is not stored",
        "duplicates are not recorded by isochron (its receiver log keeps one record per seqid)",
        ("the TAI-UTC offset of the recording host is not in the file: absolute times (and `created`) "
        "may be ahead of UTC by that offset (37 s when ptp4l/phc2sys set it, 0 when unset)"),
    ]
    if log.unwritten:
        notes.append(f"the sender log ends after seqid {n}; {log.unwritten} further slot(s) were never written")
    return Imported(
        columns=cols,
        counts=counts,
        source={"tool": "isochron", "log_version": log.header["version"], "metric": "one-way latency",
                "clock": "CLOCK_TAI", "tai_utc_offset_s": None, "notes": notes},
        config={
            "period_ns": log.header["cycle_time"] if log.header["cycle_time"] > 0 else None,
            "count": n,
            "size": log.header["frame_size"],
            "isochron": {**{f"{k}_ns": log.header[k] for k in _TIMES}, "frame_size": log.header["frame_size"],
                         "packet_count": log.header["packet_count"], **log.flags},
        },
        started=_iso(first),
    )


def _section(data: bytes, where: Any, what: str, start: int, size: int, dtype: np.dtype) -> np.ndarray:
    if size % dtype.itemsize:
        raise FormatError(f"{where}: corrupt isochron log: the {what} log is {size} bytes, "
                          f"not a multiple of its {dtype.itemsize}-byte records")
    if start < HEADER.size or start + size > len(data):
        raise FormatError(f"{where}: truncated isochron log: the {what} log needs bytes {start}..{start + size}, "
                          f"the file has {len(data)}")
    return np.frombuffer(data, dtype=dtype, count=size // dtype.itemsize, offset=start)


def _iso(tai_ns: int | None) -> str | None:
    if tai_ns is None:
        return None
    return _dt.datetime.fromtimestamp(tai_ns / 1e9, _dt.UTC).isoformat(timespec="milliseconds")
