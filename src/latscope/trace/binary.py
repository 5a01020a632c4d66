"""Ring-buffer pages -> the EventTable the text parser makes, with no text in between.

The pages (latscope.trace.ringbuf) carry each event's raw fields; this
module reads the fields latscope keeps (the columns of latscope.trace.specs)
from the offsets of the events' ``format`` files, and fills in what the
kernel's text rendering adds from elsewhere:

* ``comm``: the kernel prints the name its ``saved_cmdlines`` map has for
  the pid (``<idle>`` for 0, ``<...>`` when it has none); the map is read
  when the trace is stored. With ``comm_fallback`` a pid the map lacks gets
  the last name the trace itself gives it (sched_switch, sched_waking),
  which the text could not show;
* ``ctx``: the hardirq/softirq character the text prints in its flags
  column (``h``, ``s``, ``H``, ``z``, ``Z`` or ``.``), from the flags byte;
* function names (``%ps``: hrtimer and workqueue functions) from the
  kernel's symbol table, resolved when the trace is stored;
* names the format prints with ``__print_symbolic`` (a drop reason, a KVM
  exit reason) from the table in the event's print format.

Pointers (skb addresses, NAPI contexts, timers, work items: every field the
format file declares as a pointer or names ``*addr*``) are not stored as the
kernel's addresses, which would give away its layout (KASLR) in files users
share: each is replaced by a keyed 64-bit mix (AddressMix) whose key is drawn
per capture and never stored. The mix is a bijection, so equal addresses stay
equal and distinct ones distinct within one decoded trace, which is all the
breakdown uses them for (following an skb from queue to receive); NULL stays
0. Function addresses (``%ps``) are stored as their names; one the kernel's
symbol table lacks as ``0x`` and its mixed value.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latscope.errors import FormatError
from latscope.trace import fields as fx
from latscope.trace import ringbuf as rb
from latscope.trace.table import EventTable, empty_table

#: Flags byte of an event's common fields (kernel/trace/trace.h, enum trace_flag_type).
FLAG_HARDIRQ, FLAG_SOFTIRQ, FLAG_NMI = 0x08, 0x10, 0x40
#: Longest text kept of a trace_marker write that is not latscope's (as the text parser keeps).
MARKER_TEXT_MAX = 128
#: The text parser reads at most this many bytes of an event's arguments.
ARGS_WIDTH = 192
KALLSYMS = Path("/proc/kallsyms")
_KALLSYMS_LINE = re.compile(rb"^([0-9a-fA-F]+) [tTwW] ([^\s]+)", re.MULTILINE)
_SYMBOLS_LOCK = threading.Lock()

INT, STR, STATE, DEVT, SYM, SYMBOLIC = "int", "str", "state", "devt", "sym", "symbolic"
Col = tuple[str, str, str]   # (column, kind, field name)

_NET = (("s0", STR, "name"), ("a0", INT, "skbaddr"), ("a1", INT, "len"))
_WAKE = (("s0", STR, "comm"), ("a0", INT, "pid"), ("a1", INT, "prio"), ("a2", INT, "target_cpu"))
_BLOCK = (("s0", DEVT, "dev"), ("s1", STR, "rwbs"), ("a0", INT, "sector"), ("a1", INT, "nr_sector"))
_JBD2 = (("s0", DEVT, "dev"), ("a0", INT, "transaction"))
_WQ = (("a0", INT, "work"), ("s0", SYM, "function"))

#: Per event: which field fills which column, and how it is turned into the text parser's value.
BINARY_SPECS: dict[str, tuple[Col, ...]] = {
    "sched_switch": (("s0", STR, "prev_comm"), ("a0", INT, "prev_pid"), ("a2", INT, "prev_prio"),
                     ("a4", STATE, "prev_state"), ("s1", STR, "next_comm"), ("a1", INT, "next_pid"),
                     ("a3", INT, "next_prio")),
    "sched_waking": _WAKE, "sched_wakeup": _WAKE, "sched_wakeup_new": _WAKE,
    "sched_migrate_task": (("s0", STR, "comm"), ("a0", INT, "pid"), ("a1", INT, "prio"), ("a2", INT, "orig_cpu"),
                           ("a3", INT, "dest_cpu")),
    "irq_handler_entry": (("a0", INT, "irq"), ("s0", STR, "name")),
    "irq_handler_exit": (("a0", INT, "irq"),),
    "softirq_entry": (("a0", INT, "vec"),), "softirq_raise": (("a0", INT, "vec"),),
    "softirq_exit": (("a0", INT, "vec"),),
    "net_dev_queue": _NET, "net_dev_xmit": _NET, "netif_rx": _NET, "netif_receive_skb": _NET,
    "napi_gro_receive_entry": _NET, "netif_receive_skb_entry": _NET, "napi_gro_frags_entry": _NET,
    "net_dev_start_xmit": (("s0", STR, "name"), ("a2", INT, "queue_mapping"), ("a0", INT, "skbaddr")),
    "skb_copy_datagram_iovec": (("a0", INT, "skbaddr"), ("a1", INT, "len")),
    "kfree_skb": (("a0", INT, "skbaddr"), ("s0", SYMBOLIC, "reason")),
    "sk_data_ready": (("a0", INT, "family"), ("a1", INT, "protocol")),
    "napi_poll": (("a2", INT, "napi"), ("s0", STR, "dev_name"), ("a0", INT, "work"), ("a1", INT, "budget")),
    "qdisc_dequeue": (("a0", INT, "skbaddr"),), "qdisc_enqueue": (("a0", INT, "skbaddr"),),
    "hrtimer_expire_entry": (("a1", INT, "hrtimer"), ("s0", SYM, "function")),
    "workqueue_execute_start": _WQ, "workqueue_execute_end": _WQ,
    "block_rq_issue": _BLOCK, "block_rq_insert": _BLOCK, "block_rq_complete": _BLOCK,
    "jbd2_start_commit": _JBD2, "jbd2_end_commit": _JBD2, "jbd2_commit_locking": _JBD2,
    "jbd2_commit_flushing": _JBD2, "jbd2_commit_logging": _JBD2,
    "kvm_exit": (("s0", SYMBOLIC, "exit_reason"),),
}


_MIX_A = np.uint64(0xBF58476D1CE4E5B9)
_MIX_B = np.uint64(0x94D049BB133111EB)
_S32 = np.uint64(32)
_NONE_BITS = 1 << 63    # table.NONE (int64 min) as a u64 bit pattern: "no value"


class AddressMix:
    """A keyed bijection of 64-bit integers that replaces kernel addresses (see the module's docstring).

    ``g(x) = s(B * s(A * (x ^ key)))`` with ``s(y) = y ^ (y >> 32)`` and odd
    A, B (mod 2**64): each step is invertible, so no two addresses collide.
    Then two swaps keep 0 (NULL) at 0 and the table's "no value" pattern
    (int64 min) where it is: ``f(0) = 0``, ``f(x) = g(0)`` for the x that g
    sends to 0, likewise for int64 min; still a bijection. The key is drawn
    from ``secrets`` unless given (tests), and never written anywhere.
    """

    def __init__(self, key: int | None = None) -> None:
        while True:
            k = secrets.randbits(64) if key is None else key & ((1 << 64) - 1)
            self._key = np.uint64(k)
            g0, gn = (int(v) for v in self._g(np.array([0, _NONE_BITS], np.uint64)))
            if key is not None or not {g0, gn} & {0, _NONE_BITS}:
                break
        self._g0, self._gn = np.uint64(g0), np.uint64(gn)

    def __repr__(self) -> str:
        return "AddressMix(<key not shown>)"

    def _g(self, x: np.ndarray) -> np.ndarray:
        y = (x ^ self._key) * _MIX_A
        y ^= y >> _S32
        y *= _MIX_B
        y ^= y >> _S32
        return y

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        """The stored values (int64) of raw addresses (any 64-bit integer dtype)."""
        x = np.ascontiguousarray(raw).view(np.uint64) if raw.dtype.itemsize == 8 else raw.astype(np.uint64)
        y = self._g(x)
        for fixed, image in ((np.uint64(0), self._g0), (np.uint64(_NONE_BITS), self._gn)):
            if image != fixed:
                y = np.where(y == image, fixed, np.where(y == fixed, image, y))
        return y.view(np.int64)


def pointer_field(f: rb.Field) -> bool:
    """A field holding a kernel address: declared as a pointer (``void *``, ``struct napi_struct *``,
    ``const void *``) or named ``*addr*`` (``skbaddr``), of pointer size."""
    return f.size in (4, 8) and not f.dynamic and ("*" in f.ctype or "addr" in f.name.lower())


def pointer_columns(formats: dict[int, rb.EventFormat]) -> dict[str, list[int]]:
    """Per event name, the ``a0..a4`` columns (0..4) that hold a mixed pointer in a decoded table."""
    out: dict[str, list[int]] = {}
    for fmt in formats.values():
        spec = BINARY_SPECS.get(fmt.name, ())
        cols = [int(col[1]) for col, kind, name in spec
                if kind == INT and name in fmt.fields and pointer_field(fmt.fields[name])]
        if cols:
            out[fmt.name] = sorted(cols)
    return out


@dataclass
class RingMeta:
    """What decoding pages needs besides the pages: layouts, names, the kernel's maps at capture time."""

    page_size: int
    header_page: str
    #: event id -> (system, format file text)
    formats: dict[int, tuple[str, str]]
    #: pid -> comm, the kernel's saved_cmdlines when the trace was read
    cmdlines: dict[int, str] = field(default_factory=dict)
    #: function address -> symbol name, for the %ps fields of the trace
    symbols: dict[int, str] = field(default_factory=dict)

    def parsed(self) -> tuple[rb.PageLayout, dict[int, rb.EventFormat]]:
        return rb.parse_header_page(self.header_page), {
            i: rb.parse_format(text, system) for i, (system, text) in self.formats.items()}

    def as_json(self) -> dict[str, Any]:
        return {"page_size": self.page_size, "header_page": self.header_page,
                "formats": {str(i): {"system": s, "format": t} for i, (s, t) in sorted(self.formats.items())},
                "cmdlines": {str(p): c for p, c in sorted(self.cmdlines.items())},
                "symbols": {f"{a:x}": n for a, n in sorted(self.symbols.items())}}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> RingMeta:
        try:
            return cls(int(doc["page_size"]), str(doc["header_page"]),
                       {int(i): (str(v["system"]), str(v["format"])) for i, v in doc["formats"].items()},
                       {int(p): str(c) for p, c in doc.get("cmdlines", {}).items()},
                       {int(a, 16): str(n) for a, n in doc.get("symbols", {}).items()})
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise FormatError(f"ring-buffer description is incomplete or malformed ({exc})") from None


class Kallsyms:
    """The kernel's function symbols (``/proc/kallsyms``), for the names ``%ps`` prints.

    ``Kallsyms.load()`` reads the file only when a name is first looked up.
    """

    def __init__(self, addrs: np.ndarray | None, names: list[str], path: Path | None = None) -> None:
        self._addrs, self.names, self.path = addrs, names, path

    @property
    def addrs(self) -> np.ndarray:
        if self._addrs is None:
            self._addrs, self.names = self._read(self.path or KALLSYMS)
        return self._addrs

    @classmethod
    def load(cls, path: Path | None = None) -> Kallsyms:
        return cls(None, [], path)

    @staticmethod
    def _read(path: Path) -> tuple[np.ndarray, list[str]]:
        try:
            data = path.read_bytes()
        except OSError:
            data = b""
        # "address type name[\tmodule]", text (and weak) symbols only; all-zero addresses: hidden (kptr_restrict)
        pairs = [(a, n.decode("ascii", "replace")) for a, n in
                 ((int(h, 16), n) for h, n in _KALLSYMS_LINE.findall(data)) if a]
        pairs.sort()
        return np.array([a for a, _ in pairs], np.uint64), [n for _, n in pairs]

    def resolve(self, addresses: np.ndarray) -> dict[int, str]:
        """Name of the function each address is in, as %ps prints it (addresses before every symbol: none)."""
        out: dict[int, str] = {}
        if len(addresses) == 0:
            return out
        addrs = self.addrs
        for a in np.unique(addresses.astype(np.uint64)):
            i = int(np.searchsorted(addrs, a, side="right")) - 1
            if i >= 0 and len(self.names):
                out[int(a)] = self.names[i]
        return out


def ctx_of(flags: np.ndarray) -> np.ndarray:
    """The hardirq/softirq character the kernel prints for an event's flags byte."""
    f = flags.astype(np.int64)
    nmi, hard, soft = (f & FLAG_NMI) != 0, (f & FLAG_HARDIRQ) != 0, (f & FLAG_SOFTIRQ) != 0
    out = np.full(len(f), ord("."), np.uint8)
    out[soft] = ord("s")
    out[hard] = ord("h")
    out[hard & soft] = ord("H")
    out[nmi] = ord("z")
    out[nmi & hard] = ord("Z")
    return out


_SYMBOLIC = re.compile(r"__print_symbolic\(\s*(?:\(+\s*)?REC->(\w+)")
_PAIR = re.compile(r"\{\s*(-?(?:0x[0-9a-fA-F]+|\d+))\s*,\s*\"([^\"]*)\"\s*\}")


def symbolic_tables(print_fmt: str, name: str) -> list[dict[int, str]]:
    """The value -> name tables of every ``__print_symbolic(REC->name ...)`` of a print format, in order."""
    out = []
    starts = [m for m in _SYMBOLIC.finditer(print_fmt) if m.group(1) == name]
    for m in starts:
        depth, i = 0, print_fmt.index("(", m.start())
        j = i
        for j in range(i, len(print_fmt)):
            depth += {"(": 1, ")": -1}.get(print_fmt[j], 0)
            if depth == 0:
                break
        out.append({int(k, 0): v for k, v in _PAIR.findall(print_fmt[i:j])})
    return out


def _state_code(raw: np.ndarray) -> np.ndarray:
    """prev_state as latscope.trace.fields.state_code reads the printed letters (R, S, D|K, R+ ...)."""
    code = raw & 0xFF
    return np.where(raw & 0x100, code | fx.STATE_PREEMPTED, code).astype(np.int64)


def decode_table(pages: np.ndarray, cpus: np.ndarray, ring: RingMeta, *, comm_fallback: bool = True,
                 kallsyms: Kallsyms | None = None, meta: dict[str, Any] | None = None,
                 sort: bool = True, addresses: AddressMix | None = None) -> EventTable:
    """The EventTable of ring-buffer pages (a (n, page_size) uint8 array) recorded on ``cpus`` (per page).

    Pages of one CPU must be in the order they were read. Rows come out in
    time order; equal times keep CPU order, then buffer order (the order the
    kernel's ``trace`` file prints them in). Function addresses missing from
    ``ring.symbols`` are looked up in ``kallsyms`` (and added to ``ring.symbols``).
    ``sort=False`` leaves the rows in buffer order (for ``concat``, which sorts once).
    Pointer fields are mixed with ``addresses`` (a fresh random key when None:
    chunks of one trace decoded apart must share one AddressMix).
    """
    layout, formats = ring.parsed()
    if addresses is None:
        addresses = AddressMix()
    info = dict(meta or {})
    dec = rb.decode_pages(pages, layout)
    lost_by_cpu: dict[int, int] = {}
    missed_unknown: dict[int, int] = {}
    for p in np.flatnonzero(dec.lost):
        c = int(cpus[p])
        if dec.lost[p] > 0:
            lost_by_cpu[c] = lost_by_cpu.get(c, 0) + int(dec.lost[p])
        else:
            missed_unknown[c] = missed_unknown.get(c, 0) + 1
    n = len(dec.ts)
    parse: dict[str, Any] = {
        "pages": len(pages), "events": n, "unparsed": 0, "garbled_fields": 0, "bad_pages": dec.bad_pages,
        "lost_events": {str(k): v for k, v in sorted(lost_by_cpu.items())},
        "lost_events_total": sum(lost_by_cpu.values()),
        "pages_after_loss_uncounted": {str(k): v for k, v in sorted(missed_unknown.items())},
    }
    info.update(format="ftrace-binary", ts_resolution_ns=1, ts_source="binary")
    if n == 0:
        info["parse"] = parse
        return empty_table(info)
    pay = rb.Payloads(pages)
    common = next(iter(formats.values())).fields if formats else {}
    f_type, f_flags, f_pid = (common.get(k) for k in ("common_type", "common_flags", "common_pid"))
    if f_type is None or f_flags is None or f_pid is None:
        raise FormatError("the events' format files have no common_type/common_flags/common_pid fields")
    at = dec.offset
    etype = pay.uint(at + f_type.offset, f_type.size).astype(np.int64)
    flags = pay.uint(at + f_flags.offset, f_flags.size)
    pid = pay.value(at + f_pid.offset, f_pid).astype(np.int32)
    cpu = cpus[dec.page].astype(np.int16)
    # Fields are read in buffer order (the payloads in memory order) and the rows put in time order last.
    plen = dec.length
    ts = dec.ts.view(np.int64)
    strings: dict[str, int] = {}
    sink = fx.FieldSink(n, strings)
    ids, inverse = _small_unique(etype)
    event_names: dict[str, int] = {}
    code = np.empty(len(ids), np.int16)
    order = np.argsort(inverse, kind="stable")   # radix sort: inverse is int16
    bounds = np.searchsorted(inverse[order], np.arange(len(ids) + 1))
    unknown = 0
    for j, eid in enumerate(ids):
        fmt = formats.get(int(eid))
        rows = order[bounds[j]:bounds[j + 1]]
        if fmt is None:
            name = f"unknown_event_{int(eid)}"
            unknown += len(rows)
        else:
            name = fmt.name
            _fields(fmt, pay, at[rows], plen[rows], rows, sink, ring.symbols, kallsyms, addresses)
        code[j] = event_names.setdefault(name, len(event_names))
    parse["unknown_event_ids"] = unknown
    parse["garbled_fields"] = sink.garbled
    event = code[inverse]
    comm = _comms(pid, ts, ring.cmdlines, strings, sink, event, event_names if comm_fallback else None)
    info["parse"] = parse
    nums, strs, ctx = sink.nums, sink.strs, ctx_of(flags)
    if sort:
        # time order; ties: lower CPU first, then buffer order (the kernel's merge of the per-CPU buffers)
        o = time_order(cpu, ts)
        ts, cpu, pid, comm, event, ctx, nums, strs = (x[o] for x in (ts, cpu, pid, comm, event, ctx, nums, strs))
    return EventTable(
        ts=ts, cpu=cpu, pid=pid, comm=comm, event=event, ctx=ctx, nums=nums, strs=strs,
        event_names=tuple(sorted(event_names, key=event_names.__getitem__)),
        strings=tuple(sorted(strings, key=strings.__getitem__)), meta=info)


def time_order(cpu: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Rows by time; equal times by CPU, then in their given order (each CPU's rows in buffer order)."""
    o = np.argsort(cpu, kind="stable")
    return o[np.argsort(ts[o], kind="stable")]


def _fields(fmt: rb.EventFormat, pay: rb.Payloads, at: np.ndarray, plen: np.ndarray, rows: np.ndarray,
            sink: fx.FieldSink, symbols: dict[int, str], kallsyms: Kallsyms | None = None,
            addresses: AddressMix | None = None) -> None:
    mix = addresses if addresses is not None else AddressMix()
    name = fmt.name
    if name == "print":
        _markers(fmt, pay, at, plen, rows, sink)
        return
    if name.startswith("sys_exit_"):
        f = fmt.fields.get("ret")
        if f is not None:
            sink.put(rows, "a0", pay.value(at + f.offset, f))
        return
    spec = BINARY_SPECS.get(name)
    if spec is None:
        return
    if any(fname not in fmt.fields for _col, _kind, fname in spec):
        # a kernel whose event lacks a field latscope reads: the rows keep no fields, and are counted
        sink.garbled += len(rows)
        return
    for col, kind, fname in spec:
        f = fmt.fields[fname]
        if kind == STR:
            sink.put(rows, col, _string(pay, at, plen, f, sink.strings))
        elif kind == STATE:
            sink.put(rows, col, _state_code(pay.value(at + f.offset, f)))
        elif kind == DEVT:
            dev = pay.uint(at + f.offset, min(f.size, 8)).astype(np.int64)
            sink.put(rows, col, _texts(dev, lambda v: f"{v >> 20},{v & ((1 << 20) - 1)}", sink.strings))
        elif kind == SYM:
            addr = pay.uint(at + f.offset, 8)
            if kallsyms is not None:
                with _SYMBOLS_LOCK:   # chunks may be decoded on several threads (capture.decode_ring)
                    new = np.setdiff1d(np.unique(addr), np.fromiter(list(symbols), np.uint64, len(symbols)))
                    symbols.update(kallsyms.resolve(new))
            missing = [v for v in np.unique(addr).tolist() if v not in symbols]
            hidden = dict(zip(missing, mix(np.asarray(missing, np.uint64)).view(np.uint64).tolist(),
                              strict=True))
            sink.put(rows, col, _texts(addr, _symbol_or_hidden(symbols, hidden), sink.strings))
        elif kind == SYMBOLIC:
            sink.put(rows, col, _symbolic(fmt, pay, at, f, sink.strings))
        elif pointer_field(f):
            sink.put(rows, col, mix(pay.uint(at + f.offset, min(f.size, 8))))
        else:
            sink.put(rows, col, pay.value(at + f.offset, f))


def _symbol_or_hidden(symbols: dict[int, str], hidden: dict[int, int]) -> Callable[[int], str]:
    """A function address's name, or ``0x`` and its mixed value when the kernel's table lacks it."""
    return lambda v: symbols.get(v) or f"0x{hidden[v]:x}"


def _string(pay: rb.Payloads, at: np.ndarray, plen: np.ndarray, f: rb.Field, strings: dict[str, int]) -> np.ndarray:
    if f.dynamic:
        loc = pay.uint(at + f.offset, 4).astype(np.int64)
        off, length = loc & 0xFFFF, loc >> 16
        length = np.minimum(length, np.maximum(plen - off, 0))
        return pay.strings(at + off, length, strings)
    return pay.strings(at + f.offset, np.full(len(at), f.size, np.int64), strings)


def _texts(values: np.ndarray, render: Callable[[int], str], strings: dict[str, int]) -> np.ndarray:
    uniq, inverse = np.unique(values, return_inverse=True)
    ids = np.array([strings.setdefault(render(int(v)), len(strings)) for v in uniq], np.int32)
    return ids[inverse.ravel()]


def _symbolic(fmt: rb.EventFormat, pay: rb.Payloads, at: np.ndarray, f: rb.Field,
              strings: dict[str, int]) -> np.ndarray:
    value = pay.uint(at + f.offset, min(f.size, 8)).astype(np.int64)
    tables = symbolic_tables(fmt.print_fmt, f.name) or [{}]
    which = np.zeros(len(at), np.int64)
    isa = fmt.fields.get("isa")
    if isa is not None and len(tables) > 1:
        # kvm_exit: VMX reasons (isa 1, the low 16 bits) in the first table, SVM's in the second
        which = np.where(pay.value(at + isa.offset, isa) == 1, 0, 1)
        value = np.where(which == 0, value & 0xFFFF, value)
    key = value * 4 + which
    return _texts(key, lambda k: tables[min(k & 3, len(tables) - 1)].get(k >> 2, f"0x{k >> 2:x}"), strings)


def _markers(fmt: rb.EventFormat, pay: rb.Payloads, at: np.ndarray, plen: np.ndarray, rows: np.ndarray,
             sink: fx.FieldSink) -> None:
    """trace_marker writes, read by the text parser's own marker reader over the written bytes."""
    f = fmt.fields.get("buf")
    if f is None:
        sink.garbled += len(rows)
        return
    lo = at + f.offset
    avail = np.clip(plen - f.offset, 0, ARGS_WIDTH)
    end = lo + avail
    # the text line ends at the first newline (or where the string ends); most writes are short
    for width in (48, ARGS_WIDTH):
        todo = np.flatnonzero(end == lo + avail) if width == ARGS_WIDTH else np.arange(len(lo))
        if len(todo) == 0:
            break
        idx = np.minimum(lo[todo, None] + np.arange(width)[None, :], len(pay.bytes) - 1)
        win = pay.bytes[idx]
        stop = (win == 0) | (win == ord("\n")) | (np.arange(width)[None, :] >= avail[todo, None])
        hit = stop.any(axis=1)
        end[todo[hit]] = lo[todo[hit]] + stop[hit].argmax(axis=1)
        if width == ARGS_WIDTH:
            end[todo[~hit]] = lo[todo[~hit]] + width
    fx.markers(pay.bytes, rows, lo, end, sink)


def _comms(pid: np.ndarray, ts: np.ndarray, cmdlines: dict[int, str], strings: dict[str, int], sink: fx.FieldSink,
           event: np.ndarray, event_names: dict[str, int] | None) -> np.ndarray:
    """The comm the kernel's text would print for each pid (and, with event_names, the trace's own names)."""
    uniq, inverse = _small_unique(pid)
    learned: dict[int, str] = {}
    missing = [p for p in uniq.tolist() if p > 0 and p not in cmdlines]
    if event_names is not None and missing:
        # the last name the trace gives each pid: sched_switch's prev/next, wakeups' comm
        ps, ss, rs = [], [], []
        for name, cols in (("sched_switch", ((0, 0), (1, 1))), ("sched_waking", ((0, 0),)),
                           ("sched_wakeup", ((0, 0),)), ("sched_wakeup_new", ((0, 0),))):
            c = event_names.get(name)
            if c is None:
                continue
            rows = np.flatnonzero(event == c)
            for pcol, scol in cols:
                ps.append(sink.nums[rows, pcol])
                ss.append(sink.strs[rows, scol])
                rs.append(rows)
        if ps:
            p_all, s_all, r_all = np.concatenate(ps), np.concatenate(ss), np.concatenate(rs)
            want = np.isin(p_all, np.asarray(missing, np.int64)) & (s_all >= 0)
            p_all, s_all, r_all = p_all[want], s_all[want], r_all[want]
            o = np.argsort(ts[r_all], kind="stable")[::-1]
            last_p, first = np.unique(p_all[o], return_index=True)
            names = sorted(strings, key=strings.__getitem__)
            learned = {int(pp): names[int(sid)] for pp, sid in zip(last_p, s_all[o][first], strict=True)}
    ids = np.empty(len(uniq), np.int32)
    for j, p in enumerate(uniq.tolist()):
        if p == 0:
            text = "<idle>"
        elif p < 0:
            text = "<XXX>"
        else:
            text = cmdlines.get(p) or learned.get(p) or "<...>"
        ids[j] = strings.setdefault(text, len(strings))
    return ids[inverse]


def _small_unique(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(values, return_inverse=True) for small non-negative integers (ids, pids), without sorting."""
    v = values.astype(np.int64, copy=False)
    if len(v) == 0 or int(v.min()) < 0 or int(v.max()) > 1 << 23:
        u, inv = np.unique(v, return_inverse=True)
        return u, inv.ravel().astype(np.int32)
    present = np.bincount(v) > 0
    uniq = np.flatnonzero(present)
    lut = np.zeros(len(present), np.int32 if len(uniq) > 32000 else np.int16)
    lut[uniq] = np.arange(len(uniq))
    return uniq, lut[v]


def sum_parse(parses: list[dict[str, Any]]) -> dict[str, Any]:
    """The parse counts of a trace from those of its chunks (numbers added, per-CPU dicts added per key)."""
    out: dict[str, Any] = {}
    for p in parses:
        for k, v in p.items():
            if isinstance(v, dict):
                d = out.setdefault(k, {})
                for kk, vv in v.items():
                    d[kk] = d.get(kk, 0) + vv
            elif isinstance(v, (int, float)):
                out[k] = out.get(k, 0) + v
    return out


def concat(parts: list[EventTable], meta: dict[str, Any] | None = None) -> EventTable:
    """One table of the tables of consecutive page chunks: ids remapped, rows in the decoder's time order.

    Per CPU, the chunks' rows follow each other in buffer order (whether each
    part was sorted or not), so sorting by CPU and then by time (both stable)
    gives the order decode_table gives.
    """
    info = dict(meta or {})
    if not parts:
        info.update(format="ftrace-binary", ts_resolution_ns=1, ts_source="binary",
                    parse={"pages": 0, "events": 0, "unparsed": 0, "garbled_fields": 0, "lost_events": {},
                           "lost_events_total": 0})
        return empty_table(info)
    parse = sum_parse([p.meta.get("parse", {}) for p in parts])
    strings: dict[str, int] = {}
    names: dict[str, int] = {}

    def remap(ids: np.ndarray, table: tuple[str, ...], into: dict[str, int]) -> np.ndarray:
        lut = np.array([into.setdefault(s, len(into)) for s in table] + [-1], np.int32)
        return lut[np.where(ids < 0, len(table), ids)]

    comm = np.concatenate([remap(p.comm, p.strings, strings) for p in parts])
    strs = np.concatenate([remap(p.strs, p.strings, strings) for p in parts])
    event = np.concatenate([remap(p.event, p.event_names, names) for p in parts]).astype(np.int16)
    cpu = np.concatenate([p.cpu for p in parts])
    ts = np.concatenate([p.ts for p in parts])
    o = time_order(cpu, ts)
    del ts

    def col(name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in parts])[o]

    info.update({k: v for k, v in parts[0].meta.items() if k not in info and k != "parse"}, parse=parse)
    return EventTable(
        ts=col("ts"), cpu=cpu[o], pid=col("pid"), comm=comm[o], event=event[o], ctx=col("ctx"), nums=col("nums"),
        strs=strs[o], event_names=tuple(sorted(names, key=names.__getitem__)),
        strings=tuple(sorted(strings, key=strings.__getitem__)), meta=info)
