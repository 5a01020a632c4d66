"""The part of a trace line before the event's arguments, read for all lines at once.

The kernel's ``trace`` file and ``trace-cmd report`` start every event line
the same way (trace-cmd may put a buffer name in front)::

    [buffer: ]<comm right-aligned in 16>-<pid> [(<tgid>)] [<cpu>] [<flags>] <sec>.<frac>: <event>...

The CPU in brackets is the anchor: the pid is the number after the last
``-`` before it (a comm may itself contain ``-``), the comm is the 16
columns before that ``-``, and the timestamp and event name follow it. The
kernel prints syscalls as ``sys_sendto(fd: 3, ...)`` and ``sys_sendto ->
0x40`` instead of ``sys_enter_sendto:``/``sys_exit_sendto:``; the separator
after the name (``:``, ``(`` or ``->``) is kept so each dialect can name them.

Nearly every line of a trace has the same layout (same columns for the dash,
the CPU, the timestamp) and the same few task/CPU headers and event names
over and over. So the layout of a few lines is learnt, each column is cut out
for all lines, identical byte strings are grouped in C (``scan.distinct``)
and each distinct one is read once in Python. Lines that do not fit the
layout take a slower reader that finds the anchors line by line; lines that
fit neither are handed back by index.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from latscope.trace import scan, swar

SEP_COLON, SEP_PAREN, SEP_ARROW, SEP_OTHER = 1, 2, 3, 4
SPACE = scan.SPACE
_WIDTH = 96
_NAME_KEY = 32
_DIGIT_LO, _DIGIT_HI = 48, 57
_HEAD = re.compile(rb"^(?:[\w.-]+: )?\s*(.*?)-(\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[(\d+)\] $", re.DOTALL)
_NAME = re.compile(rb"^([A-Za-z_]\w*)(:\s*| -> |\(| )")


def _isdigit(m: np.ndarray) -> np.ndarray:
    return (m >= _DIGIT_LO) & (m <= _DIGIT_HI)


@dataclass(frozen=True)
class Prefixes:
    """Columns of the lines that fit; ``line`` says which of the given lines each row is."""

    line: np.ndarray
    pid: np.ndarray
    cpu: np.ndarray
    comm: np.ndarray      # id in the strings table
    ctx: np.ndarray       # hardirq/softirq flag character, 0 when the line has no flags
    ts: np.ndarray        # ns (or raw clock units when ``ts_dot`` is False)
    ts_dot: np.ndarray    # the timestamp had a fractional part
    frac_digits: np.ndarray
    name: np.ndarray      # id in the names table
    sep: np.ndarray
    args_lo: np.ndarray
    args_hi: np.ndarray


@dataclass
class Tables:
    """String tables shared by all chunks: comms and other strings, raw event words."""

    strings: dict[str, int]
    names: dict[str, int]


def parse_prefixes(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                   tables: Tables) -> tuple[Prefixes, np.ndarray]:
    """Read the prefix of every line; return (prefixes of the lines that fit, indices of the others)."""
    if len(starts) == 0:
        return empty(), np.zeros(0, np.int64)
    layout = _learn(buf, starts[:64], ends[:64])
    if layout is None:
        return _flexible(buf, starts, ends, tables)
    fast, rejected = _fixed(buf, starts, ends, layout, tables)
    if len(rejected) == 0:
        return fast, rejected
    slow, rest = _flexible(buf, starts[rejected], ends[rejected], tables)
    slow = Prefixes(**{**slow.__dict__, "line": rejected[slow.line]})
    return concat([fast, slow]), rejected[rest]


def concat(parts: list[Prefixes]) -> Prefixes:
    """Rows of several Prefixes in line order."""
    parts = [p for p in parts if len(p.line)]
    if not parts:
        return empty()
    if len(parts) == 1:
        return parts[0]
    merged = {k: np.concatenate([getattr(p, k) for p in parts]) for k in parts[0].__dict__}
    order = np.argsort(merged["line"], kind="stable")
    return Prefixes(**{k: v[order] for k, v in merged.items()})


def empty() -> Prefixes:
    z = np.zeros(0, dtype=np.int64)
    return Prefixes(z, z.astype(np.int32), z.astype(np.int16), z.astype(np.int32), z.astype(np.uint8), z,
                    z.astype(bool), z.astype(np.int8), z.astype(np.int32), z.astype(np.int8), z, z)


@dataclass(frozen=True)
class _Layout:
    dash: int
    bracket: int
    flags: int      # column of the flags, -1 when lines have none
    ts: int
    dot: int        # -1 for integer timestamps
    colon: int


def _learn(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> _Layout | None:
    """The most common layout among a few lines (None if none of them is an event line)."""
    cols = _anchors(buf, starts, ends)
    if cols is None:
        return None
    uniq, counts = np.unique(cols, axis=0, return_counts=True)
    return _Layout(*(int(x) for x in uniq[counts.argmax()]))


def _fixed(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, L: _Layout,
           tables: Tables) -> tuple[Prefixes, np.ndarray]:
    s, e = starts, ends
    # Every column read here is below _WIDTH < scan.PAD, so it stays inside the padded chunk.
    ok = (e > s + L.colon + 2) & (buf[s + L.colon] == ord(":")) & (buf[s + L.colon + 1] == SPACE)
    # "comm-pid [cpu] ": a few hundred distinct strings in a whole trace
    hid, heads = scan.distinct(scan.window(buf, s, L.bracket + 6))
    head_vals = np.array([_head(h, tables.strings) for h in heads], dtype=np.int64).reshape(-1, 4)
    ok &= head_vals[hid, 3] == 1
    comm, pid, cpu = head_vals[hid, 0], head_vals[hid, 1], head_vals[hid, 2]
    w = swar.words(buf)
    if L.dot >= 0:
        # whole seconds repeat for a million lines; the fraction is read eight digits at a time
        sid, secs = scan.distinct(scan.window(buf, s + L.ts, L.dot - L.ts))
        sec_vals = np.array([int(x) if x.isdigit() else -1 for x in secs], dtype=np.int64)
        sec = sec_vals[sid]
        fdig = L.colon - L.dot - 1
        frac, fok = _fixed_number(w, s + L.dot + 1, fdig)
        ts = sec * 1_000_000_000 + frac * 10 ** max(0, 9 - fdig)
        ok &= (sec >= 0) & fok & (buf[s + L.dot] == ord(".")) & (buf[s + L.ts - 1] == SPACE)
    else:
        ts, tok = _fixed_number(w, s + L.ts, L.colon - L.ts)
        fdig = 0
        ok &= tok
    if L.flags >= 0:
        ok &= buf[s + L.flags - 1] == SPACE
    name, sep, args_lo, nok = _name_sep_args(buf, s + L.colon + 2, e, tables)
    ok &= nok
    good = np.flatnonzero(ok)
    ctx = buf[s[good] + L.flags + 2] if L.flags >= 0 else np.zeros(len(good), np.uint8)
    pre = Prefixes(
        line=good, pid=pid[good].astype(np.int32), cpu=cpu[good].astype(np.int16),
        comm=comm[good].astype(np.int32), ctx=ctx.astype(np.uint8), ts=ts[good],
        ts_dot=np.full(len(good), L.dot >= 0), frac_digits=np.full(len(good), fdig, np.int8),
        name=name[good], sep=sep[good], args_lo=args_lo[good], args_hi=_args_hi(buf, sep[good], e[good]),
    )
    return pre, np.flatnonzero(~ok)


def _head(key: bytes, strings: dict[str, int]) -> tuple[int, int, int, int]:
    """(comm id, pid, cpu, ok) of one distinct "comm-pid [cpu] " column."""
    m = _HEAD.match(key)
    if m is None or len(m.group(1)) > 64:
        return (-1, -1, -1, 0)
    comm = m.group(1).decode("utf-8", "replace").strip()
    return (strings.setdefault(comm, len(strings)), int(m.group(2)), int(m.group(3)), 1)


def _fixed_number(w: np.ndarray, pos: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A number of exactly ``width`` digits at pos (a fixed column); (value, ok)."""
    run = swar.digit_run(w, pos, -(-width // 8))
    return swar.parse_digits(w, pos, np.full(len(pos), width)), run >= width


def _name_sep_args(buf: np.ndarray, nstart: np.ndarray, e: np.ndarray,
                   tables: Tables) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(name id, separator, start of the arguments, ok) from the first bytes of the event word.

    The word and what follows it repeat, so the first 32 bytes of the line
    from there (cut at the line end) are grouped and read once per distinct
    value. A name too long to end within them is not ok (the slow reader
    takes that line).
    """
    mat = scan.window(buf, nstart, _NAME_KEY)
    left = e - nstart
    if int(left.min(initial=_NAME_KEY)) < _NAME_KEY:
        mat = np.where(np.arange(_NAME_KEY)[None, :] < left[:, None], mat, 0).astype(np.uint8)
    kid, keys = scan.distinct(mat)
    vals = np.array([_name_key(k, tables.names) for k in keys], dtype=np.int64).reshape(-1, 4)
    v = vals[kid]
    ok = v[:, 3] >= 1
    args_lo = nstart + v[:, 2]
    # trace-cmd pads names to 20 columns; when the padding reaches past the key, skip the rest here
    more = np.flatnonzero(v[:, 3] == 2)
    if len(more):
        A = scan.window(buf, args_lo[more], 32)
        skip = scan.first_of(A, A != SPACE)
        args_lo[more] += np.where(skip >= 0, skip, 0)
    return v[:, 0].astype(np.int32), v[:, 1].astype(np.int8), np.minimum(args_lo, e), ok


def _name_key(key: bytes, names: dict[str, int]) -> tuple[int, int, int, int]:
    """(name id, sep, offset of the arguments, ok: 1, or 2 when padding may continue past the key)."""
    m = _NAME.match(key)
    if m is None:
        return (-1, 0, 0, 0)
    sep_text = m.group(2)
    sep = SEP_ARROW if sep_text == b" -> " else SEP_PAREN if sep_text == b"(" else \
        SEP_COLON if sep_text.startswith(b":") else SEP_OTHER
    name = names.setdefault(m.group(1).decode(), len(names))
    end = m.end()
    return (name, sep, end, 2 if end >= _NAME_KEY else 1)


def _args_hi(buf: np.ndarray, sep: np.ndarray, e: np.ndarray) -> np.ndarray:
    """End of the arguments: the line end, before the ")" of the kernel's syscall call form."""
    closing = (sep == SEP_PAREN) & (buf[np.maximum(e - 1, 0)] == ord(")"))
    return np.where(closing, e - 1, e)


def _anchors(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray | None:
    """Per line: dash, bracket, flags, ts, dot, colon columns (rows of the lines that fit), or None."""
    found = _anchor_rows(buf, starts, ends)
    return None if found is None else found[1]


def _flexible(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, tables: Tables) -> tuple[Prefixes, np.ndarray]:
    """Lines whose layout differs from the common one: each read with its own anchors."""
    n = len(starts)
    if n == 0:
        return empty(), np.zeros(0, np.int64)
    rows: list[Prefixes] = []
    found = np.zeros(n, dtype=bool)
    cols_all = _anchor_rows(buf, starts, ends)
    if cols_all is not None:
        idx, cols = cols_all
        # group lines by layout and read each group like the common layout
        uniq, inverse = np.unique(cols, axis=0, return_inverse=True)
        for j, layout in enumerate(uniq):
            members = idx[inverse.ravel() == j]
            pre, _rej = _fixed(buf, starts[members], ends[members], _Layout(*(int(x) for x in layout)), tables)
            rows.append(Prefixes(**{**pre.__dict__, "line": members[pre.line]}))
            found[members[pre.line]] = True
    return concat(rows), np.flatnonzero(~found)


def _anchor_rows(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Find each line's anchors separately: the bracketed CPU, the dash before the pid, the timestamp."""
    n = len(starts)
    length = ends - starts
    W = scan.window(buf, starts, _WIDTH)
    col = np.arange(_WIDTH - 5)[None, :]
    dig = _isdigit(W)
    cand = (W[:, :-5] == ord("[")) & dig[:, 1:-4] & dig[:, 2:-3] & dig[:, 3:-2] & (W[:, 4:-1] == ord("]")) \
        & (W[:, 5:] == SPACE) & (col + 5 < length[:, None])
    b = scan.first_of(W, cand)
    dmask = (W[:, :-1] == ord("-")) & dig[:, 1:] & (np.arange(_WIDTH - 1)[None, :] < b[:, None])
    rev = dmask[:, ::-1]
    last = rev.argmax(axis=1)
    dash = np.where(rev[np.arange(n), last], _WIDTH - 2 - last, -1)
    # after "] ": optional flags, then the timestamp and its colon
    p = b + 6
    R = scan.window(buf, starts + np.maximum(p, 0), 48)
    r0 = R[:, 0]
    has_flags = ~_isdigit(r0) & (r0 != SPACE)
    space = scan.first_of(R, R == SPACE)
    rc = np.arange(48)[None, :]
    tfrom = np.where(has_flags, np.maximum(space, 0), 0)
    tstart = scan.first_of(R, _isdigit(R) & (rc >= tfrom[:, None]))
    colon = scan.first_of(R, (R == ord(":")) & (rc > tstart[:, None]))
    dot = scan.first_of(R, (R == ord(".")) & (rc > tstart[:, None]) & (rc < colon[:, None]))
    ok = (b > 0) & (dash >= 0) & (tstart >= 0) & (colon > tstart) & (~has_flags | (space > 0))
    if not ok.any():
        return None
    cols = np.stack([dash, b, np.where(has_flags, p, -1), p + tstart, np.where(dot > tstart, p + dot, -1),
                     p + colon], axis=1)
    return np.flatnonzero(ok), cols[ok]
