"""The kernel's own text format: /sys/kernel/tracing/trace (and trace_pipe).

::

    python-10481   [000] ...1. 1795608271.069036: tracing_mark_write: latscope tx seq=100
    python-10481   [000] ..... 1795608271.069039: sys_sendmsg(fd: 5, msg: 0x7fff00a37620, flags: 0)
    python-10481   [000] ..... 1795608271.069058: sys_sendmsg -> 0x40

Syscall events print as a call and a return instead of their event names,
and trace_marker writes print the writer's symbol (``tracing_mark_write``)
where other events print their name; both are renamed to the tracepoint
names (``sys_enter_sendmsg``, ``sys_exit_sendmsg``, ``print``).

The text has microsecond timestamps for the usual clocks. The same buffer
printed with the ``raw`` trace option carries the nanoseconds
(``pid cpu ns type: N``, one line per event, in the same order);
``parse_kernel_text(text, raw=...)`` takes them from there when both
renderings agree line by line.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from latscope.trace import engine, scan, specs, swar
from latscope.trace.prefix import SEP_ARROW, SEP_PAREN
from latscope.trace.table import EventTable

_KNOWN_PRINTERS = ("tracing_mark_write", "tracing_mark_raw_write")


def kernel_name(name: str, sep: int) -> str:
    """Tracepoint name of a kernel text line's event word."""
    if name.startswith("sys_") and sep == SEP_PAREN:
        return "sys_enter_" + name[4:]
    if name.startswith("sys_") and sep == SEP_ARROW:
        return "sys_exit_" + name[4:]
    if name in _KNOWN_PRINTERS:
        return "print"
    return name


DIALECT = engine.Dialect(name="ftrace-text", specs=specs.TEXT_SPECS, canonical=kernel_name,
                         cuts={"hrtimer_expire_entry": b" now="})


def parse_kernel_text(data: bytes | memoryview, raw: bytes | memoryview | None = None, *,
                      meta: dict[str, Any] | None = None) -> EventTable:
    """Parse the kernel's text trace; with ``raw`` (the raw-option rendering) timestamps become exact ns."""
    table, _stats, ordinal = engine.parse_lines(data, DIALECT, meta=meta)
    if raw is not None and len(table):
        ns = raw_timestamps(raw)
        table = _apply_raw(table, ordinal, ns)
    return engine.finish(table)


def raw_timestamps(raw: bytes | memoryview) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pid, cpu, ns) of every event line of a raw-option rendering (``pid cpu ns ...``); -1 where unreadable."""
    pids, cpus, stamps = [], [], []
    for _off, buf in scan.chunks(raw):
        starts, ends = scan.line_bounds(buf)
        first = buf[starts]
        keep = (ends > starts) & (first != ord("#")) & (first != ord("C"))
        s, e = starts[keep], ends[keep]
        w = swar.words(buf)
        pid, p_end, ok1 = swar.decimal(w, s, e, signed=False)
        cpu, c_end, ok2 = swar.decimal(w, p_end + 1, e, signed=False)
        ts, _end, ok3 = swar.decimal(w, c_end + 1, e, signed=False)
        ok = ok1 & ok2 & ok3 & (buf[p_end] == scan.SPACE) & (buf[c_end] == scan.SPACE)
        pids.append(np.where(ok, pid, -1))
        cpus.append(np.where(ok, cpu, -1))
        stamps.append(np.where(ok, ts, -1))
    if not stamps:
        z = np.zeros(0, np.int64)
        return z, z, z
    return np.concatenate(pids), np.concatenate(cpus), np.concatenate(stamps)


def _apply_raw(table: EventTable, ordinal: np.ndarray, raw: tuple[np.ndarray, np.ndarray, np.ndarray]) -> EventTable:
    pid, cpu, ns = raw
    meta = dict(table.meta)
    if len(ordinal) and int(ordinal.max()) < len(ns):
        same = (pid[ordinal] == table.pid) & (cpu[ordinal] == table.cpu) & (ns[ordinal] >= 0)
        res = meta.get("ts_resolution_ns") or 1000
        close = np.abs(ns[ordinal] // res - table.ts // res) <= 1
        if bool(np.all(same & close)):
            meta.update(ts_resolution_ns=1, ts_source="raw")
            from dataclasses import replace

            return replace(table, ts=ns[ordinal].astype(np.int64), meta=meta)
    meta["ts_source"] = "text"
    meta.setdefault("warnings", []).append("the raw rendering did not match the text line by line; "
                                           "timestamps keep the text's resolution")
    from dataclasses import replace

    return replace(table, meta=meta)
