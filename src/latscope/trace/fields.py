"""Per-event arguments: which fields latscope keeps and how to read them, column-wise.

Most tracepoints print ``key=value key=value ...`` in a fixed order, so the
fields of all lines of one event can be read together: the first key must
sit where the arguments start, a number ends at the next space, and a string
that may hold spaces (a comm) ends where the next key is found. Lines where a
key is not where the format says are counted as garbled and keep no fields.
Formats that are not key=value (trace-cmd's sched_switch, block requests)
are read with a regular expression over just the lines of that event.

The tables of which event is read how are in latscope.trace.specs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from latscope.trace import scan, swar
from latscope.trace.table import NONE, NUM_FIELDS, STR_FIELDS

INT, HEX, STR, STATE, REST = "int", "hex", "str", "state", "rest"

#: prev_state letters as the kernel prints them -> bits (values of TASK_REPORT).
STATE_BITS = {"R": 0, "S": 1, "D": 2, "T": 4, "t": 8, "X": 16, "Z": 32, "P": 64, "I": 128, "W": 0x100,
              "K": 0x200, "N": 0x400}
#: Added to a state when the task was preempted while runnable ("R+").
STATE_PREEMPTED = 1 << 16
#: A state letter this table does not know (still "not runnable").
STATE_OTHER = 1 << 15

#: trace_marker phases of latscope's probe ("latscope tx seq=N").
PHASES = {"tx": 1, "rx": 2, "wake": 3}
MARKER_PREFIX = b"latscope "


@dataclass(frozen=True)
class Key:
    """One field: the text before its value, how to read it, and the column it fills."""

    key: str
    kind: str
    col: str
    #: Longest value of a string that ends at the next key (a comm has at most 15 bytes).
    max_len: int = 64


@dataclass(frozen=True)
class Regex:
    """A field set read by a regular expression with named groups (group name = column)."""

    pattern: str
    kinds: dict[str, str]


@dataclass(frozen=True)
class Search:
    """Fields found anywhere in the arguments, each by its own pattern (one group): for -R output,
    whose field order follows the event's format file rather than its printed form."""

    patterns: dict[str, tuple[str, str]]  # column -> (pattern, kind)

    @property
    def kinds(self) -> dict[str, str]:
        return {c: k for c, (_p, k) in self.patterns.items()}


@dataclass(frozen=True)
class Alt:
    """Several ways an event is printed (trace-cmd versions differ): each tried on the rows still unread."""

    specs: tuple[tuple[Key, ...] | Regex | Search, ...]


Spec = tuple[Key, ...] | Regex | Search | Alt

_COL = {name: k for k, name in enumerate(NUM_FIELDS)}
_SCOL = {name: k for k, name in enumerate(STR_FIELDS)}


class FieldSink:
    """Where extracted fields go: the number/string matrices of the rows being parsed."""

    def __init__(self, n: int, strings: dict[str, int]) -> None:
        self.nums = np.full((n, len(NUM_FIELDS)), NONE, dtype=np.int64)
        self.strs = np.full((n, len(STR_FIELDS)), -1, dtype=np.int32)
        self.strings = strings
        self.garbled = 0

    def put(self, rows: np.ndarray, col: str, values: np.ndarray) -> None:
        if col in _COL:
            self.nums[rows, _COL[col]] = values
        else:
            self.strs[rows, _SCOL[col]] = values


def extract(spec: Spec, mat: np.ndarray, length: np.ndarray, rows: np.ndarray, sink: FieldSink) -> None:
    """Fill ``sink`` for ``rows``, whose argument bytes are the rows of ``mat`` (zero after ``length``).

    Arguments repeat (the same task switch, the same wakeup, the same device
    line thousands of times), so identical rows are grouped in C and each
    distinct one is read once with the spec's regular expression. Events
    whose arguments are mostly unique (a timer's expiry time) are read
    column-wise instead.
    """
    gid, keys = scan.distinct(mat)
    if len(keys) <= max(DISTINCT_MIN, len(rows) // DISTINCT_RATIO):
        _extract_distinct(spec, gid, keys, rows, sink)
        return
    flat = np.concatenate([mat.ravel(), np.zeros(scan.PAD, np.uint8)])
    lo = np.arange(len(rows), dtype=np.int64) * mat.shape[1]
    hi = lo + length
    specs = spec.specs if isinstance(spec, Alt) else (spec,)
    left = np.arange(len(rows))
    for one in specs:
        if len(left) == 0:
            break
        if isinstance(one, tuple):
            failed = _extract_keys(one, flat, rows[left], lo[left], hi[left], sink)
        else:
            failed = _extract_per_line(one, flat, rows[left], lo[left], hi[left], sink)
        left = left[failed]
    sink.garbled += len(left)


#: Read per distinct value when there are at most max(DISTINCT_MIN, rows / DISTINCT_RATIO) of them.
DISTINCT_MIN = 512
DISTINCT_RATIO = 8


def _extract_distinct(spec: Spec, gid: np.ndarray, keys: list[bytes], rows: np.ndarray, sink: FieldSink) -> None:
    alts = [as_regex(one) for one in (spec.specs if isinstance(spec, Alt) else (spec,))]
    cols = sorted({c for a in alts for c in a.kinds})
    values = {c: np.full(len(keys), NONE if c in _COL else -1, dtype=np.int64) for c in cols}
    matched = np.zeros(len(keys), dtype=bool)
    for j, key in enumerate(keys):
        text = key.rstrip(b"\0").decode("utf-8", "replace")
        for alt in alts:
            got = _read_one(alt, text, sink.strings)
            if got is not None:
                for c, v in got.items():
                    values[c][j] = v
                matched[j] = True
                break
    ok = matched[gid]
    r = rows[ok]
    for c in cols:
        v = values[c][gid[ok]]
        sink.put(r, c, v if c in _COL else v.astype(np.int32))
    sink.garbled += int((~ok).sum())


def _read_one(spec: Regex | Search, text: str, strings: dict[str, int]) -> dict[str, int] | None:
    if isinstance(spec, Search):
        found = {}
        for col, (pattern, _kind) in spec.patterns.items():
            m = re.search(pattern, text)
            if m is None:
                return None
            found[col] = m.group(1)
    else:
        m = re.compile(spec.pattern).search(text)
        if m is None:
            return None
        found = {n: m.group(n) for n in spec.kinds}
    out = {}
    try:
        for n, kind in spec.kinds.items():
            raw = found[n]
            if kind in (STR, REST):
                out[n] = strings.setdefault(raw, len(strings))
            else:
                v = _CONVERT[kind](raw)
                if v == NONE:
                    return None
                # u64 values (a flush's sector is 2**64-1) keep their bit pattern in int64.
                out[n] = v - (1 << 64) if v >= 1 << 63 else v
    except ValueError:
        return None
    return out


def as_regex(spec: tuple[Key, ...] | Regex | Search) -> Regex | Search:
    """The regular expression equivalent of a key list (a Regex or Search stays as it is)."""
    if isinstance(spec, (Regex, Search)):
        return spec
    parts = ["^"]
    kinds = {}
    for i, f in enumerate(spec):
        last = i + 1 == len(spec)
        parts.append(re.escape(f.key))
        value = {INT: r"-?\d+", HEX: r"(?:0x)?[0-9a-fA-F]+", STATE: r"\S+", REST: r".*"}.get(f.kind)
        if value is None:  # STR: up to the next key (a comm may hold spaces), or to a space when last
            value = r"\S*" if last else r".*?"
        parts.append(f"(?P<{f.col}>{value})")
        kinds[f.col] = f.kind
    return Regex("".join(parts), kinds)


def _matches_at(buf: np.ndarray, pos: np.ndarray, key: bytes, hi: np.ndarray) -> np.ndarray:
    return scan.key_at(buf, pos, key) & (pos + len(key) <= hi)


def _search(buf: np.ndarray, pos: np.ndarray, key: bytes, hi: np.ndarray, width: int) -> np.ndarray:
    """Absolute offset of the first ``key`` at or after pos within width bytes; -1 if absent."""
    return scan.find_key(buf, pos, key, width, hi)


def _extract_keys(spec: tuple[Key, ...], buf: np.ndarray, rows: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                  sink: FieldSink) -> np.ndarray:
    ok = np.ones(len(rows), dtype=bool)
    w = swar.words(buf)
    cur = lo.copy()
    numbers: list[tuple[Key, np.ndarray]] = []
    spans: list[tuple[Key, np.ndarray, np.ndarray]] = []
    for i, f in enumerate(spec):
        key = f.key.encode()
        ok &= _matches_at(buf, cur, key, hi)
        vstart = cur + len(key)
        if f.kind == INT:
            val, vend, vok = swar.decimal(w, vstart, hi)
            ok &= vok
            numbers.append((f, val))
        elif f.kind == HEX:
            val, vend, vok = scan.number(buf, vstart, hi, 18, 16)
            ok &= vok
            numbers.append((f, val))
        else:
            nxt = spec[i + 1].key.encode() if i + 1 < len(spec) else None
            if f.kind == REST:
                vend = hi.copy()
            elif f.kind == STR and nxt is not None:
                # A comm may contain spaces: it ends where the next key starts.
                found = _search(buf, vstart, nxt, hi, f.max_len)
                ok &= found >= 0
                vend = np.where(found >= 0, found, vstart)
            else:
                vend = _value_end(buf, vstart, hi, 64 if f.kind == STR else 16)
            spans.append((f, vstart, vend))
        cur = vend
    good = np.flatnonzero(ok)
    if len(good) == 0:
        return np.flatnonzero(~ok)
    r = rows[good]
    for f, val in numbers:
        sink.put(r, f.col, val[good])
    for f, vs, ve in spans:
        vs, ve = vs[good], ve[good]
        if f.kind == STATE:
            texts: dict[str, int] = {}
            ids = scan.intern_spans(buf, vs, ve, texts, 16)
            lookup = np.array([state_code(s) for s in sorted(texts, key=texts.__getitem__)], dtype=np.int64)
            sink.put(r, f.col, lookup[ids])
        else:
            sink.put(r, f.col, scan.intern_spans(buf, vs, ve, sink.strings))
    return np.flatnonzero(~ok)


def _value_end(buf: np.ndarray, start: np.ndarray, hi: np.ndarray, width: int) -> np.ndarray:
    off = swar.find_first(swar.words(buf), start, b" ,)\n", -(-width // 8))
    return np.where(off >= 0, np.minimum(start + off, hi), np.minimum(start + width, hi))


def state_code(text: str) -> int:
    """prev_state as printed ("S", "R+", "D|K", or a number from trace-cmd -R) -> bits."""
    text = text.strip()
    if not text:
        return NONE
    if text.lstrip("-").isdigit():
        # raw numbers (trace-cmd -R): the kernel's TASK_REPORT bits, 0x100 (TASK_REPORT_MAX) = preempted
        v = int(text)
        return (v & 0xFF) | (STATE_PREEMPTED if v & 0x100 else 0)
    if text.startswith("0x"):
        try:
            return int(text, 16)
        except ValueError:
            return NONE
    code = 0
    if text.endswith("+"):
        code |= STATE_PREEMPTED
        text = text[:-1]
    for part in text.split("|"):
        # Letters differ between kernels and trace-cmd's plugin; any letter but R means "not runnable".
        code |= STATE_BITS.get(part, STATE_OTHER) if len(part) == 1 else STATE_OTHER
    return code


_CONVERT: dict[str, Callable[[str], int]] = {
    INT: int,
    HEX: lambda s: int(s, 16) if s not in ("(nil)", "") else 0,
    STATE: state_code,
}


def _extract_per_line(spec: Regex | Search, buf: np.ndarray, rows: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                      sink: FieldSink) -> np.ndarray:
    """Read each line with the spec's expression (for rare events whose arguments are mostly unique)."""
    text = scan.gather_lines(buf, lo, hi)
    hit_rows: list[int] = []
    cols: dict[str, list[int]] = {n: [] for n in spec.kinds}
    for i, line in enumerate(text.split("\n")[:len(rows)]):
        got = _read_one(spec, line, sink.strings)
        if got is None:
            continue
        hit_rows.append(i)
        for n, values in cols.items():
            values.append(got[n])
    hit = np.asarray(hit_rows, dtype=np.int64)
    missed = np.ones(len(rows), dtype=bool)
    missed[hit] = False
    if len(hit):
        for n, vals in cols.items():
            sink.put(rows[hit], n, np.asarray(vals, dtype=np.int64 if n.startswith("a") else np.int32))
    return np.flatnonzero(missed)


def flat(mat: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A compact matrix as a padded buffer with the span of each row: (buf, lo, hi)."""
    buf = np.concatenate([mat.ravel(), np.zeros(scan.PAD, np.uint8)])
    lo = np.arange(len(mat), dtype=np.int64) * mat.shape[1]
    return buf, lo, lo + length


def syscall_returns(mat: np.ndarray, length: np.ndarray, rows: np.ndarray, sink: FieldSink) -> None:
    """sys_exit_*: the return value ("0x40", or "__syscall_nr=46 ret=0x40" in trace-cmd -R)."""
    gid, keys = scan.distinct(mat)
    vals = np.full(len(keys), NONE, dtype=np.int64)
    for j, key in enumerate(keys):
        text = key.rstrip(b"\0").decode("ascii", "replace")
        text = text.rsplit("ret=", 1)[-1].strip()
        try:
            v = int(text, 16) if text.startswith("0x") else int(text)
        except ValueError:
            continue
        vals[j] = v - (1 << 64) if v >= 1 << 63 else v
    v = vals[gid]
    ok = v != NONE
    sink.put(rows[ok], "a0", v[ok])
    sink.garbled += int((~ok).sum())


def markers(buf: np.ndarray, rows: np.ndarray, lo: np.ndarray, hi: np.ndarray, sink: FieldSink) -> None:
    """trace_marker lines: latscope's "latscope tx seq=N" as (seq, phase), anything else as text."""
    if len(rows) == 0:
        return
    pre = len(MARKER_PREFIX)
    ours = _matches_at(buf, lo, MARKER_PREFIX, hi)
    r, plo, phi = rows[ours], lo[ours] + pre, hi[ours]
    eq = _search(buf, plo, b" seq=", phi, 8)
    good = eq >= 0
    if good.any():
        texts: dict[str, int] = {}
        phase_ids = scan.intern_spans(buf, plo[good], eq[good], texts, 8)
        lookup = np.array([PHASES.get(p, 0) for p in sorted(texts, key=texts.__getitem__)], dtype=np.int64)
        seq, sok = scan.digits(buf, eq[good] + 5, _value_end(buf, eq[good] + 5, phi[good], 21))
        rr = r[good]
        sink.put(rr[sok], "a0", seq[sok])
        sink.put(rr[sok], "a1", lookup[phase_ids][sok])
        sink.garbled += int((~sok).sum())
    sink.garbled += int((~good).sum())
    other = ~ours
    if other.any():
        sink.put(rows[other], "s0", scan.intern_spans(buf, lo[other], hi[other], sink.strings, 128))
