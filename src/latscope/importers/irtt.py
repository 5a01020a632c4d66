"""irtt's JSON output (`irtt client -o FILE`, gzip or not) -> a latscope run.

irtt is a round-trip tool, but with server timestamps (``--tstamp=both``,
its default) each round trip carries four wall-clock times: client send,
server receive, server send, client receive. latscope can therefore store a
real one-way stream, as long as the client's and the server's clocks agree
(the same host, or both synchronised by PTP/NTP); irtt's own "send delay"
and "receive delay" rest on the same assumption.

``metric`` chooses what lands in the contract columns:

- ``one-way`` (default when the file has server receive times): the
  client-to-server stream. send_ns = client send, rx_sw_ns = server receive.
  irtt's "send delay" per packet is exactly latscope's latency.
- ``one-way-down``: the server-to-client replies. send_ns = server send,
  rx_sw_ns = client receive (irtt's "receive delay"). Only packets that
  reached the server have a row.
- ``half-rtt`` (default without server timestamps): send_ns = client send,
  rx_sw_ns = send_ns + RTT/2 (integer ns, rounded down), RTT being irtt's,
  which excludes the server's processing time when the server stamped both
  receive and send. Clocks need not agree.
- ``rtt``: rx_sw_ns = send_ns + RTT, so latency is the round trip.

irtt's times are taken in user space (Go's clock after the socket call);
they go into rx_sw_ns anyway because latency is computed from it, and the
run's source says so. sched_ns is irtt's send schedule, rebuilt as it
builds it: the test start plus the nearest whole number of intervals (irtt
skips a slot rather than send late by more than half an interval).
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from latscope.errors import ConfigError, FormatError
from latscope.importers.common import Imported, RawFile, build, null_column, text_head, text_of
from latscope.safetext import quote
from latscope.store.runfile import MAX_STORED_PERIOD_NS
from latscope.store.samples import MISSING

METRICS = ("one-way", "one-way-down", "half-rtt", "rtt")
KNOWN_JSON_FORMATS = (1,)


@dataclass(frozen=True)
class Trips:
    """irtt's round trips as columns: seqno, lost state, the four wall times and the RTT (MISSING if absent)."""

    seq: np.ndarray
    lost: np.ndarray
    c_send: np.ndarray
    c_recv: np.ndarray
    s_recv: np.ndarray
    s_send: np.ndarray
    rtt: np.ndarray


@dataclass(frozen=True)
class Stream:
    """The rows one --metric keeps, with their send and receive times, and what to say about them."""

    rows: np.ndarray
    send: np.ndarray
    rx: np.ndarray
    untimed: np.ndarray
    notes: list[str]


def parse(raw: RawFile, metric: str | None = None) -> Imported:
    """Parse an irtt JSON result; ``metric`` is one of METRICS (None: one-way when possible)."""
    where = raw.path
    doc = _document(raw)
    params = ((doc.get("config") or {}).get("params") or {})
    interval = _int(params.get("interval"), where, "config.params.interval")
    if not 0 <= interval <= MAX_STORED_PERIOD_NS:
        raise FormatError(f"{where}: config.params.interval {quote(interval)} ns is not an interval of 0 to 1 day")
    stats = doc.get("stats") or {}
    trips = read_trips(doc["round_trips"], where)
    metric = choose_metric(trips, params, metric, where)
    stream = select_stream(trips, metric)
    start_ns = _rfc3339_ns(stats.get("start_time"))
    notes = [*stream.notes, ("irtt's timestamps are user-space clock readings; the receive one is stored as "
             "rx_sw_ns so that latency can be computed, and no kernel (tx/rx) timestamps exist")]
    sched = null_column(len(trips.seq))
    if start_ns is not None and interval > 0:
        ok = trips.c_send != MISSING
        k = np.rint((trips.c_send[ok] - start_ns) / interval).astype(np.int64)
        sched[ok] = start_ns + k * interval
        notes.append("sched_ns is irtt's send schedule rebuilt: test start + the nearest whole number of intervals")
    rows = stream.rows
    times = {"sched_ns": sched[rows], "send_ns": stream.send[rows], "rx_sw_ns": stream.rx[rows]}
    cols, counts = build(trips.seq[rows], times, arrival="rx_sw_ns", duplicated=int(stats.get("duplicates") or 0),
                         tx_recorded=False, untimed=stream.untimed[rows])
    if stats.get("late_packets"):
        notes.append(f"irtt counted {stats['late_packets']} late (out-of-order) packets by client arrival; "
                     "the reordered flags here follow arrival order in the chosen direction")
    version = doc.get("version") or {}
    return Imported(
        columns=cols,
        counts=counts,
        source={"tool": "irtt", "tool_version": version.get("irtt"), "json_format": version.get("json_format"),
                "metric": "round-trip" if metric in ("half-rtt", "rtt") else "one-way latency",
                "irtt_metric": metric, "clock": "CLOCK_REALTIME (wall)", "notes": notes},
        config={"period_ns": interval or None, "count": int(np.count_nonzero(rows)),
                "size": params.get("length"), "duration_ns": params.get("duration"),
                "irtt": {k: v for k, v in (doc.get("config") or {}).items() if k != "supplied"}},
        environment={"irtt": {"version": version, "system_info": doc.get("system_info")}},
        started=None if start_ns is None else _dt.datetime.fromtimestamp(
            start_ns / 1e9, _dt.UTC).isoformat(timespec="milliseconds"),
    )


def sniff(head: bytes, complete: bool, where: Path) -> None:
    """FormatError unless the file starts like irtt's JSON: text whose first character is '{'."""
    text = text_head(head, complete, where, "irtt JSON").lstrip("\ufeff \t\r\n")
    if not text.startswith("{"):
        raise FormatError(f"{where}: not irtt JSON (it starts with {quote(text[:20])}, irtt writes an object)")


def _document(raw: RawFile) -> dict[str, Any]:
    where = raw.path
    try:
        doc = json.loads(text_of(raw))
    except json.JSONDecodeError as exc:
        raise FormatError(f"{where}: not valid irtt JSON (line {exc.lineno}: {exc.msg})") from None
    except RecursionError:
        raise FormatError(f"{where}: not irtt JSON (nested too deeply)") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("round_trips"), list):
        raise FormatError(f"{where}: not an irtt result (no round_trips list)")
    fmt = (doc.get("version") or {}).get("json_format")
    if fmt is not None and fmt not in KNOWN_JSON_FORMATS:
        raise FormatError(f"{where}: irtt JSON format {fmt} is not supported (known: 1)")
    if not doc["round_trips"]:
        raise FormatError(f"{where}: the irtt result holds no round trips")
    return doc


def read_trips(trips: list[Any], where: Any) -> Trips:
    """Columns of the round_trips list; a damaged entry is a FormatError naming its index."""
    n = len(trips)
    seq = np.empty(n, np.int64)
    lost = np.empty(n, dtype=object)
    f = {k: null_column(n) for k in ("c_send", "c_recv", "s_recv", "s_send", "rtt")}
    for i, rt in enumerate(trips):
        try:
            seq[i] = int(rt["seqno"])
            lost[i] = _lost(rt.get("lost"))
            ts = rt.get("timestamps") or {}
            client, server = ts.get("client") or {}, ts.get("server") or {}
            f["c_send"][i] = _wall(client, "send", where, i, required=True)
            f["c_recv"][i] = _wall(client, "receive", where, i)
            f["s_recv"][i] = _wall(server, "receive", where, i)
            f["s_send"][i] = _wall(server, "send", where, i)
            rtt = (rt.get("delay") or {}).get("rtt")
            if rtt is not None:
                f["rtt"][i] = int(rtt)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise FormatError(f"{where}: round trip #{i} is malformed "
                              f"({type(exc).__name__}: {quote(str(exc))})") from None
    if len(np.unique(seq)) != n:
        raise FormatError(f"{where}: the same seqno appears twice in round_trips")
    return Trips(seq, lost, **f)


def choose_metric(trips: Trips, params: dict[str, Any], metric: str | None, where: Any) -> str:
    """The --metric to use: the one asked for if the file can give it, else one-way when possible."""
    # With --tstamp=midpoint the server's "receive" and "send" are both the
    # midpoint, and with --clock=monotonic there is no wall time to compare
    # across hosts: neither gives a one-way time.
    stamp_at, clock = params.get("stamp_at"), params.get("clock")
    wall = clock in ("both", "wall")
    usable = {
        "one-way": wall and stamp_at in ("both", "receive") and bool(np.any(trips.s_recv != MISSING)),
        "one-way-down": wall and stamp_at in ("both", "send") and bool(np.any(trips.s_send != MISSING)),
    }
    if metric is None:
        return "one-way" if usable["one-way"] else "half-rtt"
    if metric not in METRICS:
        raise ConfigError(f"irtt metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if metric in usable and not usable[metric]:
        raise ConfigError(f"{where}: this irtt result has no server {'receive' if metric == 'one-way' else 'send'} "
                          f"wall-clock timestamps (it was run with --tstamp={stamp_at} --clock={clock}; one-way "
                          "needs --tstamp=both --clock=both, irtt's defaults); use --metric half-rtt")
    return metric


def select_stream(t: Trips, metric: str) -> Stream:
    """Rows, send and receive times of ``metric``; loss follows irtt's lost field (docs/import.md)."""
    n = len(t.seq)
    everyone, nobody = np.ones(n, dtype=bool), np.zeros(n, dtype=bool)
    if metric == "one-way":
        # The server's times travel in the reply: a reply lost on the way back
        # ("true_down") hides when a packet that did arrive got there.
        untimed = t.lost == "true_down"
        notes = [("one-way latency client -> server: send_ns = client send (wall), "
                 "rx_sw_ns = server receive (wall); valid only if both hosts' clocks agree")]
        if untimed.any():
            notes.append(f"{int(np.count_nonzero(untimed))} packet(s) reached the server but their reply was lost, "
                         "so their arrival time is unknown: received, with a missing rx timestamp")
        return Stream(everyone, t.c_send, t.s_recv, untimed, notes)
    if metric == "one-way-down":
        # Replies exist for packets the server got: lost "false" or "true_down".
        rows = (t.lost == "false") | (t.lost == "true_down")
        notes = [("one-way latency server -> client: send_ns = server send (wall), "
                 "rx_sw_ns = client receive (wall); valid only if both hosts' clocks agree"),
                 "a reply lost on the way back has no server send time either (it travelled in the reply)"]
        if not rows.all():
            notes.append(f"{int(np.count_nonzero(~rows))} round trip(s) lost upstream or in an unknown direction "
                         "have no row")
        return Stream(rows, t.s_send, t.c_recv, nobody, notes)
    ok = t.rtt != MISSING
    rx = np.where(ok, t.c_send + (t.rtt // 2 if metric == "half-rtt" else t.rtt), MISSING)
    what = "RTT/2 (rounded down to the ns)" if metric == "half-rtt" else "the full RTT"
    return Stream(everyone, t.c_send, rx, nobody, [
        (f"round trip: latency = {what}; rx_sw_ns = send_ns + that, a derived value, not a timestamp; "
        "irtt's RTT leaves out the server's processing time when the server stamped both times")])


def _lost(value: Any) -> str:
    # irtt 0.9 writes "false", "true", "true_up" or "true_down"; older versions a boolean.
    if isinstance(value, bool):
        return "true" if value else "false"
    if value in ("false", "true", "true_up", "true_down"):
        return value
    raise ValueError(f"unknown lost value {value!r}")


def _wall(side: dict[str, Any], which: str, where: Any, i: int, required: bool = False) -> int:
    stamp = side.get(which)
    wall = stamp.get("wall") if isinstance(stamp, dict) else None
    if wall is None:
        if required:
            raise FormatError(f"{where}: round trip #{i} has no client send wall time")
        return MISSING
    return int(wall)


def _int(value: Any, where: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FormatError(f"{where}: {what} must be an integer (ns), got {value!r}")
    return value


_RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


def _rfc3339_ns(text: Any) -> int | None:
    """'2026-11-25T12:00:33.217849192Z' -> epoch ns, keeping all nine digits (datetime keeps six)."""
    m = _RFC3339.match(text) if isinstance(text, str) else None
    if not m:
        return None
    whole, frac, tz = m.groups()
    base = _dt.datetime.fromisoformat(whole + ("+00:00" if tz == "Z" else tz))
    return int(base.timestamp()) * 1_000_000_000 + int((frac or "0")[:9].ljust(9, "0"))
