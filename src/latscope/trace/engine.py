"""From trace text to an EventTable: chunks, line prefixes, event names, fields.

The dialects (the kernel's text, trace-cmd's report and its -R form) differ
only in how they name a few events and print a few argument lists; the
``Dialect`` record carries those differences and this module does the rest.

Nothing here raises on bad input: a line that cannot be read is counted
(with its line number kept for the first few), lost-event notices are
summed per CPU, and the caller decides what to tell the user.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from latscope.trace import fields, prefix, scan
from latscope.trace.prefix import (
    SEP_ARROW,
    SEP_COLON,
    SEP_OTHER,
    SEP_PAREN,
    Prefixes,
    Tables,
    parse_prefixes,
)
from latscope.trace.table import EventTable, empty_table, sort_by_time

#: Adjusts where the arguments of an event start (e.g. past "tracing_mark_write: "); returns new lo.
ArgsFix = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
#: A hand-written column reader for one event: (buf, rows, lo, hi, sink) -> None.
Special = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, fields.FieldSink], None]

MAX_EXAMPLES = 5

# Lines outside the event layout that still mean something.
_LOST = re.compile(r"^\s*CPU:\s*(\d+) \[LOST (\d+) EVENTS\]")
_DROPPED = re.compile(r"^\s*CPU:\s*(\d+) \[(\d+) EVENTS DROPPED\]")
_STARTED = re.compile(r"^#+ CPU (\d+) buffer started #+")
# The kernel's header says how many events it kept and how many were written (the rest were lost).
_ENTRIES = re.compile(r"^# entries-in-buffer/entries-written: (\d+)/(\d+)")
# The general line layout, for lines the column reader rejected (a 4-digit CPU, odd comms).
_LINE = re.compile(
    r"^(?:[\w.-]+: )?\s*(?P<comm>.*?)-(?P<pid>\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[(?P<cpu>\d+)\]\s+"
    r"(?:(?P<flags>[^\s\d]\S{2,6})\s+)?(?P<sec>\d+)(?:\.(?P<frac>\d+))?:\s+(?P<name>\w+)"
    r"(?P<sep>:\s*|\(| -> | )(?P<args>.*?)\)?$")


@dataclass(frozen=True)
class Dialect:
    """What differs between trace text formats."""

    name: str
    specs: dict[str, fields.Spec]
    canonical: Callable[[str, int], str]
    args_fix: dict[str, ArgsFix] = field(default_factory=dict)
    special: dict[str, Special] = field(default_factory=dict)
    #: Arguments are cut where this text starts before grouping equal ones: a field latscope does
    #: not read (a timer's expiry time) would make every line distinct.
    cuts: dict[str, bytes] = field(default_factory=dict)


@dataclass
class ParseStats:
    """What the parser saw besides events: counted, never raised."""

    lines: int = 0
    events: int = 0
    comments: int = 0
    unparsed: int = 0
    garbled_fields: int = 0
    lost_events: dict[int, int] = field(default_factory=dict)
    buffer_started: list[int] = field(default_factory=list)
    entries: tuple[int, int] | None = None
    examples: list[tuple[int, str]] = field(default_factory=list)
    other: dict[str, int] = field(default_factory=dict)

    def as_meta(self) -> dict[str, Any]:
        return {
            "lines": self.lines, "events": self.events, "comments": self.comments, "unparsed": self.unparsed,
            "garbled_fields": self.garbled_fields,
            "lost_events": {str(k): v for k, v in sorted(self.lost_events.items())},
            "lost_events_total": sum(self.lost_events.values()),
            "buffer_started": sorted(set(self.buffer_started)),
            **({"entries_in_buffer": self.entries[0], "entries_written": self.entries[1],
                "overwritten": max(0, self.entries[1] - self.entries[0])} if self.entries else {}),
            "unparsed_examples": [{"line": n, "text": t[:160]} for n, t in self.examples],
            **({"other_lines": self.other} if self.other else {}),
        }


def parse_lines(data: bytes | memoryview, dialect: Dialect, *, chunk_bytes: int = scan.CHUNK_BYTES,
                group_bytes: int | None = None,
                meta: dict[str, Any] | None = None) -> tuple[EventTable, ParseStats, np.ndarray]:
    """Parse trace text; return (events in line order, stats, data-line ordinal of each row).

    The ordinal counts the lines that are events or look like one (everything
    but comments, blank lines and lost-event notices), so a second rendering
    of the same buffer (the kernel's raw timestamps) can be matched line by line.

    Line prefixes are read chunk by chunk (a few megabytes stay in the CPU
    cache while every column is read). The arguments of each event are copied
    into one compact matrix per event and read when a group of chunks is done:
    the lines of one event are scattered through the text, and reading their
    fields in place would cost a cache miss per field and line.
    ``chunk_bytes`` and ``group_bytes`` (default GROUP_BYTES) change only
    the work's granularity, never the table (tests cut at every line).
    """
    group_limit = GROUP_BYTES if group_bytes is None else group_bytes
    stats = ParseStats()
    state = _State()
    parts: list[tuple[np.ndarray, ...]] = []
    group: list[_Chunk] = []
    group_bytes = 0
    data_base = line_base = 0
    for _off, buf in scan.chunks(data, chunk_bytes):
        chunk = _read_chunk(buf, dialect, state, stats, data_base, line_base)
        data_base += chunk.ndata
        line_base += chunk.nlines
        if chunk.rows:
            group.append(chunk)
            group_bytes += len(buf)
        if group_bytes >= group_limit:
            parts.append(_fields_of(group, dialect, state, stats))
            group, group_bytes = [], 0
    if group:
        parts.append(_fields_of(group, dialect, state, stats))
    stats.events = sum(len(p[0]) for p in parts)
    info = dict(meta or {})
    info.update(format=dialect.name, parse=stats.as_meta())
    if not parts:
        return empty_table(info), stats, np.zeros(0, np.int64)
    cols = [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]
    ts, cpu, pid, comm, ev, ctx, nums, strs, ordinal, ts_dot, fdig = cols
    info["ts_resolution_ns"] = _resolution(ts_dot, fdig)
    table = EventTable(
        ts=ts, cpu=cpu, pid=pid, comm=comm, event=ev, ctx=ctx, nums=nums, strs=strs,
        event_names=tuple(sorted(state.events, key=state.events.__getitem__)),
        strings=tuple(sorted(state.tables.strings, key=state.tables.strings.__getitem__)), meta=info,
    )
    return table, stats, ordinal


GROUP_BYTES = 64 << 20
#: Arguments longer than this are cut (every field latscope reads comes earlier).
ARGS_WIDTH = 192


@dataclass
class _State:
    """What chunks share: the string table and the event-name table (ids stay valid across chunks)."""

    tables: Tables = field(default_factory=lambda: Tables({}, {}))
    events: dict[str, int] = field(default_factory=dict)
    canon: dict[int, int] = field(default_factory=dict)


@dataclass
class _Chunk:
    nlines: int
    ndata: int
    rows: int = 0
    columns: tuple[np.ndarray, ...] = ()
    #: event id -> (row indices in this chunk, args bytes matrix, args lengths)
    args: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)


def _read_chunk(buf: np.ndarray, dialect: Dialect, st: _State, stats: ParseStats, data_base: int,
                line_base: int) -> _Chunk:
    starts, ends = scan.line_bounds(buf)
    nlines = len(starts)
    stats.lines += nlines
    first = buf[starts]
    blank = ends == starts
    comment = (first == ord("#")) & ~blank
    stats.comments += int(comment.sum())
    for i in np.flatnonzero(comment)[:256]:
        text = scan.text_of(buf, int(starts[i]), int(ends[i]))
        m = _STARTED.match(text)
        if m:
            stats.buffer_started.append(int(m.group(1)))
        m = _ENTRIES.match(text)
        if m and stats.entries is None:
            stats.entries = (int(m.group(1)), int(m.group(2)))
    candidates = np.flatnonzero(~blank & ~comment)
    pre, rest = parse_prefixes(buf, starts[candidates], ends[candidates], st.tables)
    pre = Prefixes(**{**pre.__dict__, "line": candidates[pre.line]})
    slow, notice = _slow_path(buf, starts, ends, candidates[rest], stats, line_base, st.tables)
    pre = prefix.concat([pre, slow])
    is_data = np.zeros(nlines, dtype=bool)
    is_data[candidates] = True
    is_data[notice] = False
    ordinal_of_line = np.cumsum(is_data) - 1 + data_base
    chunk = _Chunk(nlines, int(is_data.sum()))
    n = len(pre.line)
    if n == 0:
        return chunk
    keyed = pre.name.astype(np.int64) * 8 + pre.sep
    uniq, inverse = np.unique(keyed, return_inverse=True)
    if any(int(k) not in st.canon for k in uniq):
        name_list = sorted(st.tables.names, key=st.tables.names.__getitem__)
        for k in uniq:
            if int(k) not in st.canon:
                canon = dialect.canonical(name_list[int(k) // 8], int(k) % 8)
                st.canon[int(k)] = st.events.setdefault(canon, len(st.events))
    ev = np.array([st.canon[int(k)] for k in uniq], dtype=np.int16)[inverse.ravel()]
    event_names = sorted(st.events, key=st.events.__getitem__)
    order = np.argsort(ev, kind="stable")
    bounds = np.searchsorted(ev[order], np.arange(len(event_names) + 1))
    for code, name in enumerate(event_names):
        rows = order[bounds[code]:bounds[code + 1]]
        if len(rows) == 0 or not _has_fields(dialect, name):
            continue
        lo, hi = pre.args_lo[rows], pre.args_hi[rows]
        fix = dialect.args_fix.get(name)
        if fix is not None:
            lo = fix(buf, lo, hi)
        length = np.clip(hi - lo, 0, ARGS_WIDTH)
        width = max(8, int(length.max(initial=0)))
        cut = dialect.cuts.get(name)
        if cut is not None:
            at = scan.find_key(buf, lo, cut, ARGS_WIDTH, hi)
            length = np.where(at >= 0, np.minimum(at - lo, length), length)
        mat = scan.window(buf, lo, width)
        # zero after each line's end, so equal arguments are equal rows
        mat = np.where(np.arange(width)[None, :] < length[:, None], mat, 0).astype(np.uint8)
        chunk.args[code] = (rows, mat, length)
    chunk.rows = n
    chunk.columns = (pre.ts, pre.cpu, pre.pid, pre.comm, ev, pre.ctx, ordinal_of_line[pre.line], pre.ts_dot,
                     pre.frac_digits)
    return chunk


def _has_fields(dialect: Dialect, name: str) -> bool:
    return name in dialect.special or name == "print" or name in dialect.specs or name.startswith("sys_exit_")


def _fields_of(group: list[_Chunk], dialect: Dialect, st: _State, stats: ParseStats) -> tuple[np.ndarray, ...]:
    """Read the fields of a group of chunks, one compact matrix per event; return the group's columns."""
    n = sum(c.rows for c in group)
    sink = fields.FieldSink(n, st.tables.strings)
    event_names = sorted(st.events, key=st.events.__getitem__)
    bases = np.cumsum([0] + [c.rows for c in group])
    for code, name in enumerate(event_names):
        pieces = [(c.args[code], base) for c, base in zip(group, bases[:-1], strict=True) if code in c.args]
        if not pieces:
            continue
        width = max(p[0][1].shape[1] for p in pieces)
        rows = np.concatenate([p[0][0] + p[1] for p in pieces])
        mat = np.concatenate([np.pad(p[0][1], ((0, 0), (0, width - p[0][1].shape[1]))) for p in pieces])
        length = np.concatenate([p[0][2] for p in pieces])
        if name in dialect.special:
            buf, lo, hi = fields.flat(mat, length)
            dialect.special[name](buf, rows, lo, hi, sink)
        elif name == "print":
            buf, lo, hi = fields.flat(mat, length)
            fields.markers(buf, rows, lo, hi, sink)
        elif name in dialect.specs:
            fields.extract(dialect.specs[name], mat, length, rows, sink)
        else:
            fields.syscall_returns(mat, length, rows, sink)
    stats.garbled_fields += sink.garbled
    cols = [np.concatenate([c.columns[k] for c in group]) for k in range(len(group[0].columns))]
    ts, cpu, pid, comm, ev, ctx, ordinal, ts_dot, fdig = cols
    return ts, cpu, pid, comm, ev, ctx, sink.nums, sink.strs, ordinal, ts_dot, fdig


def finish(table: EventTable) -> EventTable:
    """Time order, the form every consumer expects."""
    return sort_by_time(table)


def _resolution(ts_dot: np.ndarray, frac: np.ndarray) -> int | None:
    """ns per timestamp unit: 1000 for the usual 6 decimals, 1 for 9, None for raw counter clocks."""
    if not ts_dot.any():
        return None
    digits = int(np.min(frac[ts_dot]))
    return 10 ** max(0, 9 - digits)


def _slow_path(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, rest: np.ndarray,
               stats: ParseStats, line_base: int, tables: Tables) -> tuple[Prefixes, np.ndarray]:
    """Lines the column reader rejected: lost-event notices, odd layouts, garbage."""
    rows: list[tuple] = []
    notices: list[int] = []
    for i in rest:
        s, e = int(starts[i]), int(ends[i])
        text = scan.text_of(buf, s, e)
        m = _LOST.match(text) or _DROPPED.match(text)
        if m:
            cpu = int(m.group(1))
            stats.lost_events[cpu] = stats.lost_events.get(cpu, 0) + int(m.group(2))
            notices.append(int(i))
            continue
        if text.startswith(("cpus=", "version", "CPU ")) or text.strip() == "":
            key = "header" if text.startswith(("cpus=", "version")) else "notice"
            stats.other[key] = stats.other.get(key, 0) + 1
            notices.append(int(i))
            continue
        m = _LINE.match(text)
        if m is None or not _sane(m):
            stats.unparsed += 1
            if len(stats.examples) < MAX_EXAMPLES:
                stats.examples.append((line_base + int(i) + 1, text))
            continue
        # Offsets are in characters; they equal bytes for the ASCII lines the kernel writes.
        if len(text) != e - s:
            stats.unparsed += 1
            continue
        frac = m.group("frac")
        sec = int(m.group("sec"))
        ts = sec * 1_000_000_000 + int(frac.ljust(9, "0")[:9]) if frac else sec
        sep_text = m.group("sep")
        sep = SEP_COLON if sep_text.startswith(":") else SEP_PAREN if sep_text == "(" else \
            SEP_ARROW if sep_text == " -> " else SEP_OTHER
        flags = m.group("flags") or ""
        ctx = ord(flags[2]) if len(flags) >= 3 else 0
        comm = tables.strings.setdefault(m.group("comm").strip(), len(tables.strings))
        name = tables.names.setdefault(m.group("name"), len(tables.names))
        rows.append((int(i), int(m.group("pid")), int(m.group("cpu")), comm, ctx, ts, frac is not None,
                     len(frac or ""), name, sep, s + m.start("args"), s + m.end("args")))
    notice_idx = np.asarray(notices, dtype=np.int64)
    if not rows:
        return prefix.empty(), notice_idx
    cols = list(zip(*rows, strict=True))
    dtypes = (np.int64, np.int32, np.int16, np.int32, np.uint8, np.int64, bool, np.int8, np.int32, np.int8,
              np.int64, np.int64)
    arrays = [np.asarray(c, dtype=d) for c, d in zip(cols, dtypes, strict=True)]
    return Prefixes(*arrays), notice_idx


def _sane(m: re.Match[str]) -> bool:
    return len(m.group("comm")) <= 64 and len(m.group("pid")) <= 10 and len(m.group("cpu")) <= 5
