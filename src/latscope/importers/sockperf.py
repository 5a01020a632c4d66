"""sockperf's full log (`sockperf ping-pong ... --full-log FILE`) -> a latscope run.

The file is sockperf's summary text followed, per server, by a block::

    ------------------------------
    packet, txTime(sec), rxTime(sec), latency(usec)     (or rtt(usec) with --full-rtt)
    0, 2.403062896, 2.403092670, 14.887
    ...
    ------------------------------

txTime and rxTime are the client's user-space clock (sockperf's tick
counter, seconds since an arbitrary origin, not wall time) just before the
send and just after the reply arrived. sockperf writes only the packets of
its "valid duration" that came back in order, renumbered from 0: dropped
and out-of-order packets are counted in the summary but have no line.

Mapping (docs/import.md):

- seq = the send slot when dropped packets can be placed (see below), else
  the ``packet`` number of the log; stream = the server number;
- send_ns = txTime;
- ``half-rtt`` (default, sockperf's own "latency"): rx_sw_ns = txTime +
  (rxTime - txTime) / 2, a derived value, not a timestamp;
  ``rtt``: rx_sw_ns = rxTime, so latency is the round trip;
- sched_ns: the send grid rebuilt from --mps (first send + nearest whole
  period), null with --mps=max;
- the dropped and out-of-order packets of the summary become rows, so loss
  counts come out right in every verb: in the gaps of the send grid when
  they can be placed exactly, else after the logged ones without times.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latscope.errors import ConfigError, FormatError
from latscope.importers.common import Imported, RawFile, build, null_column, parse_decimal_ns, text_head, text_of
from latscope.store.samples import FLAG_REORDERED, MISSING

METRICS = ("half-rtt", "rtt")
_RULE = re.compile(r"^-{10,}$")
_HEADER = re.compile(r"^packet,\s*txTime\(sec\),\s*rxTime\(sec\),\s*(latency|rtt)\(usec\)$")
_SERVER = re.compile(r"Printing statistics for Server No:\s*(\d+)")
_ERRORS = re.compile(r"# dropped messages = (\d+); # duplicated messages = (\d+); # out-of-order messages = (\d+)")
_VALID = re.compile(r"\[Valid Duration\].*ReceivedMessages=(\d+)")
_PARAMS = re.compile(r"test was performed using the following parameters:\s*(.*)$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: sockperf prints the reported value with 3 decimals of a double; allow that rounding.
_TOLERANCE_US = 0.0015


@dataclass
class _Block:
    server: int
    unit: str = ""
    seq: list[int] = field(default_factory=list)
    tx: list[int] = field(default_factory=list)
    rx: list[int] = field(default_factory=list)
    dropped: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    closed: bool = False


def parse(raw: RawFile, metric: str | None = None) -> Imported:
    """Parse a sockperf --full-log file; ``metric`` is half-rtt (default) or rtt."""
    metric = metric or "half-rtt"
    if metric not in METRICS:
        raise ConfigError(f"sockperf metric must be one of {', '.join(METRICS)}, got {metric!r}")
    blocks, params = _read_blocks(raw)
    mps = _param(params, "mps")
    period = 1_000_000_000 // int(mps) if mps and mps.isdigit() and int(mps) > 0 else None

    paced = period is not None and _param(params, "burst") in (None, "1") and \
        _param(params, "reply-every") in (None, "1")
    parts = [_block_rows(b, metric, period if paced else None) for b in blocks]
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k != "placed"}
    times = {"sched_ns": cat["sched_ns"], "send_ns": cat["send_ns"], "rx_sw_ns": cat["rx_sw_ns"]}
    duplicated = sum(b.duplicated for b in blocks)
    dropped = sum(b.dropped for b in blocks)
    ooo = sum(b.out_of_order for b in blocks)
    placed = sum(p["placed"] for p in parts)
    cols, counts = build(cat["seq"], times, stream=cat["stream"], extra_flags=cat["flags"],
                         duplicated=duplicated, tx_recorded=False, untimed=cat["flags"] == FLAG_REORDERED)
    unit = blocks[0].unit
    what = "RTT/2" if metric == "half-rtt" else "the full RTT"
    notes = [
        f"round trip: latency = {what}; rx_sw_ns = txTime + that, a derived value, not a timestamp",
        "send_ns = txTime, the client's user-space clock before the send (sockperf ticks, not wall time)",
        f"the log was written with {unit}(usec) as its last column"
        + (" (sockperf --full-rtt)" if unit == "rtt" else " (sockperf's RTT/2)"),
        f"{dropped} dropped and {ooo} out-of-order packet(s) are in sockperf's summary but not in its log",
        (f"all {placed} dropped packet(s) were placed in the gaps of the send grid: seq is the send slot "
         "(first logged packet = 0), not the file's packet number" if placed and placed == dropped + ooo else
         f"{placed} dropped packet(s) were placed in gaps of the send grid (seq = send slot); the other "
         f"{dropped + ooo - placed} are rows without timestamps after the logged ones" if placed else
         "they are rows without timestamps after the logged ones (out-of-order ones count as received "
         "with a missing rx timestamp); seq is the file's packet number"),
        "only sockperf's 'valid duration' is logged (its warm-up and cool-down are left out)",
    ]
    notes.append("sched_ns is rebuilt from --mps: first send + the nearest whole period" if period else
                 "sched_ns is null: the send rate was --mps=max, so there is no schedule")
    return Imported(
        columns=cols,
        counts=counts,
        source={"tool": "sockperf", "metric": "round-trip", "sockperf_metric": metric, "log_unit": unit,
                "clock": "sockperf ticks (client, arbitrary origin)", "notes": notes},
        config={"period_ns": period, "count": len(cols["seq"]), "size": _int_param(params, "msg-size"),
                "sockperf": {"parameters": params, "servers": len(blocks)}},
    )


def sniff(head: bytes, complete: bool, where: Path) -> None:
    """FormatError unless the file starts as text (sockperf's log is text, its summary comes first)."""
    text_head(head, complete, where, "a sockperf log")


def _read_blocks(raw: RawFile) -> tuple[list[_Block], dict[str, str]]:
    where = raw.path
    lines = _ANSI.sub("", text_of(raw)).splitlines()
    blocks: list[_Block] = []
    params: dict[str, str] = {}
    server = 0
    counts: dict[int, tuple[int, int, int]] = {}
    reported: dict[int, int] = {}
    current: _Block | None = None
    for lineno, line in enumerate(lines, 1):
        text = line.strip()
        if current is not None:
            if _RULE.match(text):
                current.closed = True
                current = None
                continue
            _row(current, text, where, lineno)
            continue
        if m := _HEADER.match(text):
            current = _Block(server, m.group(1))
            blocks.append(current)
        elif m := _SERVER.search(text):
            server = int(m.group(1))
        elif m := _VALID.search(text):
            reported[server] = int(m.group(1))
        elif m := _ERRORS.search(text):
            counts[server] = (int(m.group(1)), int(m.group(2)), int(m.group(3)))
        elif m := _PARAMS.search(text):
            params = dict(_split_param(p) for p in m.group(1).split())
    if not blocks:
        raise FormatError(f"{where}: no sockperf full log found (no 'packet, txTime(sec), rxTime(sec), ...' header)")
    if blocks[-1].closed is False:
        raise FormatError(f"{where}: truncated sockperf log (the last block has no closing line of dashes)")
    for b in blocks:
        if not b.seq:
            raise FormatError(f"{where}: the sockperf log for server {b.server} has no packets")
        b.dropped, b.duplicated, b.out_of_order = counts.get(b.server, (0, 0, 0))
        # sockperf states how many packets it logs; fewer rows mean lines went missing.
        if b.server in reported and reported[b.server] != len(b.seq):
            raise FormatError(f"{where}: the sockperf log for server {b.server} has {len(b.seq)} packets, "
                              f"its summary says {reported[b.server]}")
    if len({b.server for b in blocks}) != len(blocks):
        raise FormatError(f"{where}: two sockperf logs for the same server number")
    if len({b.unit for b in blocks}) != 1:
        raise FormatError(f"{where}: sockperf logs mix latency and rtt columns")
    return blocks, params


def _row(block: _Block, text: str, where: object, lineno: int) -> None:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 4 or not parts[0].isdigit():
        raise FormatError(f"{where}: line {lineno}: malformed sockperf log row {text[:60]!r}")
    try:
        tx, rx = parse_decimal_ns(parts[1]), parse_decimal_ns(parts[2])
        shown = float(parts[3])
    except ValueError:
        raise FormatError(f"{where}: line {lineno}: malformed sockperf log row {text[:60]!r}") from None
    # The last column is derived from the other two; disagreement means a damaged line.
    expect = (rx - tx) / 1000 / (2 if block.unit == "latency" else 1)
    if abs(expect - shown) > _TOLERANCE_US + abs(expect) * 1e-12 or rx < tx:
        raise FormatError(f"{where}: line {lineno}: {block.unit} {parts[3]} does not match rxTime - txTime")
    if block.seq and int(parts[0]) != block.seq[-1] + 1:
        raise FormatError(f"{where}: line {lineno}: packet {parts[0]} follows packet {block.seq[-1]}")
    block.seq.append(int(parts[0]))
    block.tx.append(tx)
    block.rx.append(rx)


def _block_rows(b: _Block, metric: str, period: int | None) -> dict[str, np.ndarray | int]:
    """Rows of one server's log, plus rows for the packets sockperf counted but did not log.

    With a regular send grid (--mps, one message per burst, a reply to every
    message) each dropped packet leaves a gap of one period between logged
    sends. When the gaps account for every dropped packet, and none was merely
    out of order (those leave gaps too and cannot be told apart), the lost
    rows go into their slots, so windows and loss bursts see them where they
    happened. Otherwise they are appended without times.
    """
    tx = np.array(b.tx, np.int64)
    rtt = np.array(b.rx, np.int64) - tx
    rx = tx + (rtt // 2 if metric == "half-rtt" else rtt)
    slots = np.rint((tx - tx[0]) / period).astype(np.int64) if period else None
    gaps = int(np.sum(np.diff(slots) - 1)) if slots is not None else -1
    out: dict[str, Any]
    if period and slots is not None and b.out_of_order == 0 and np.all(np.diff(slots) >= 1) and 0 <= gaps <= b.dropped:
        n = int(slots[-1]) + 1
        out = {name: np.full(n, MISSING, np.int64) for name in ("send_ns", "rx_sw_ns")}
        out["send_ns"][slots], out["rx_sw_ns"][slots] = tx, rx
        out["sched_ns"] = tx[0] + np.arange(n, dtype=np.int64) * period
        out["seq"] = np.arange(n, dtype=np.int64)
        placed, rest, rest_reordered = gaps, b.dropped - gaps, 0
    else:
        out = {"send_ns": tx, "rx_sw_ns": rx, "sched_ns": _grid(tx, period), "seq": np.array(b.seq, np.int64)}
        placed, rest, rest_reordered = 0, b.dropped, b.out_of_order
    # Counted by sockperf but not placed: rows with no timestamps after the others.
    extra = rest + rest_reordered
    nxt = int(out["seq"][-1]) + 1
    for name in ("send_ns", "rx_sw_ns", "sched_ns"):
        out[name] = np.concatenate([out[name], np.full(extra, MISSING, np.int64)])
    out["seq"] = np.concatenate([out["seq"], np.arange(nxt, nxt + extra, dtype=np.int64)])
    flags = np.zeros(len(out["seq"]), np.int32)
    if rest_reordered:
        flags[-rest_reordered:] = FLAG_REORDERED
    out["flags"] = flags
    out["stream"] = np.full(len(flags), b.server, np.int32)
    out["placed"] = placed
    return out


def _grid(tx: np.ndarray, period: int | None) -> np.ndarray:
    if not period or not len(tx):
        return null_column(len(tx))
    k = np.rint((tx - tx[0]) / period).astype(np.int64)
    return tx[0] + k * period


def _split_param(token: str) -> tuple[str, str]:
    key, _, value = token.lstrip("-").partition("=")
    return key, value


def _param(params: dict[str, str], key: str) -> str | None:
    return params.get(key) or params.get(key.replace("-", "_"))


def _int_param(params: dict[str, str], key: str) -> int | None:
    value = _param(params, key)
    return int(value) if value and value.isdigit() else None
