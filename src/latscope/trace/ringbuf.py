"""The kernel's ring-buffer pages (``per_cpu/cpuN/trace_pipe_raw``), decoded with numpy.

A page (a "sub-buffer", ``buffer_subbuf_size_kb``, 4 KiB unless changed) is
what ``events/header_page`` describes::

    u64  timestamp    trace-clock time the page's first delta is relative to
    u64  commit       bytes of event data; bit 31: events were lost before this
                      page, bit 30: their count (u64) is stored after the data
    data[]            events, 4-byte aligned

and every event starts with one 32-bit word, ``type_len`` (low 5 bits) and
``time_delta`` (high 27 bits, ns since the previous event)::

    type_len 1..28   data event of type_len * 4 bytes, right after the word
    type_len 0       data event; the next word is its length + 4, data after it
    29  padding      delta 0: the rest of the page is empty; else a discarded
                     event of (next word + 4) bytes, whose delta does not count
    30  time extend  delta += (next word << 27) + time_delta (8 bytes)
    31  time stamp   absolute time (next word << 27) + time_delta, without the 5
                     top bits, which come from the running time (8 bytes)

exactly as kernel/trace/ring_buffer.c reads them (rb_update_read_stamp). A
data event's payload starts with the common fields of its ``format`` file
(type id, flags, preempt count, pid) and then its own fields, at the offsets
the format file gives.

Pages are decoded all at once: one numpy step reads the next event of every
page, so a trace takes as many steps as the fullest page has events (a few
hundred), each over all pages still holding events.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import as_strided

from latscope.errors import FormatError

PAGE_HEADER = 16
TYPE_PADDING, TYPE_TIME_EXTEND, TYPE_TIME_STAMP = 29, 30, 31
TS_SHIFT = 27
MISSED_EVENTS = 1 << 31
MISSED_STORED = 1 << 30
COMMIT_MASK = (1 << 30) - 1
TS_MSB = np.uint64(0xF8 << 56)
#: Zero bytes after the payloads, so fixed-width windows never leave the buffer (latscope.trace.scan).
PAD = 256


@dataclass(frozen=True)
class PageLayout:
    """From ``events/header_page``: where the page's timestamp, commit and data are."""

    ts_offset: int = 0
    commit_offset: int = 8
    commit_size: int = 8
    data_offset: int = PAGE_HEADER


def parse_header_page(text: str) -> PageLayout:
    """The layout ``events/header_page`` describes (the fields latscope needs must be there)."""
    fields = {m.group(1): (int(m.group(2)), int(m.group(3)))
              for m in re.finditer(r"field:\s*[\w ]*?\b(\w+);\s*offset:(\d+);\s*size:(\d+);", text)}
    try:
        ts, commit, data = fields["timestamp"], fields["commit"], fields["data"]
    except KeyError as exc:
        raise FormatError(f"events/header_page has no {exc.args[0]} field: not a ring-buffer layout "
                          "latscope knows") from None
    if ts[1] != 8 or commit[1] not in (4, 8) or data[0] % 4:
        raise FormatError(f"events/header_page describes an unknown layout ({fields})")
    return PageLayout(ts[0], commit[0], commit[1], data[0])


@dataclass(frozen=True)
class Field:
    """One field of an event's format file."""

    name: str
    ctype: str
    offset: int
    size: int
    signed: bool

    @property
    def dynamic(self) -> bool:
        """A ``__data_loc`` field: a u32 holding (length << 16) | offset of the bytes in the event."""
        return self.ctype.startswith("__data_loc")

    @property
    def is_string(self) -> bool:
        return "char" in self.ctype and ("[" in self.ctype or self.dynamic)


@dataclass(frozen=True)
class EventFormat:
    """An event's ``format`` file: its id, name, fields and print format."""

    id: int
    system: str
    name: str
    fields: dict[str, Field]
    print_fmt: str = ""

    def __getitem__(self, name: str) -> Field:
        return self.fields[name]


_FIELD = re.compile(r"field:(?P<decl>[^;]+);\s*offset:(?P<off>\d+);\s*size:(?P<size>\d+);\s*signed:(?P<sig>\d+);")


def parse_format(text: str, system: str = "") -> EventFormat:
    """Parse an event's ``format`` file."""
    name = re.search(r"^name:\s*(\S+)", text, re.MULTILINE)
    ident = re.search(r"^ID:\s*(\d+)", text, re.MULTILINE)
    if name is None or ident is None:
        raise FormatError("not an event format file (no name: or ID: line)")
    fields: dict[str, Field] = {}
    for m in _FIELD.finditer(text):
        decl = m.group("decl").strip()
        fm = re.match(r"^(?P<type>.*?)\s*\b(?P<name>\w+)\s*(?P<dim>\[[^\]]*\])?$", decl)
        if fm is None:
            continue
        ctype = fm.group("type") + (fm.group("dim") or "")
        fields[fm.group("name")] = Field(fm.group("name"), ctype, int(m.group("off")), int(m.group("size")),
                                         m.group("sig") == "1")
    pf = re.search(r"^print fmt:\s*(.*)$", text, re.MULTILINE)
    return EventFormat(int(ident.group(1)), system, name.group(1), fields, pf.group(1) if pf else "")


@dataclass
class Decoded:
    """The data events of a set of pages, in page order and, within a page, in buffer order."""

    #: Absolute byte offset of each event's payload in the pages buffer, and its length.
    offset: np.ndarray
    length: np.ndarray
    ts: np.ndarray          # uint64 trace-clock ns
    page: np.ndarray        # index of the page each event came from
    #: Per page: events the kernel lost just before it (-1: lost, count unknown; 0: none).
    lost: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    #: Pages whose events did not add up (a length running past the page's data).
    bad_pages: int = 0


def page_headers(pages: np.ndarray, layout: PageLayout = PageLayout()) -> tuple[np.ndarray, np.ndarray]:
    """(timestamp, commit) of each page of a (n, page_size) uint8 array."""
    ts = np.ascontiguousarray(pages[:, layout.ts_offset:layout.ts_offset + 8]).view("<u8").ravel()
    c = np.ascontiguousarray(pages[:, layout.commit_offset:layout.commit_offset + layout.commit_size])
    commit = c.view("<u8" if layout.commit_size == 8 else "<u4").ravel().astype(np.uint64)
    return ts, commit


def decode_pages(pages: np.ndarray, layout: PageLayout = PageLayout()) -> Decoded:
    """Walk every page's events at once; return the data events with their timestamps."""
    if pages.ndim != 2 or pages.dtype != np.uint8 or pages.shape[1] % 4:
        raise ValueError("pages must be a (n, page_size) uint8 array, page_size a multiple of 4")
    n, size = pages.shape
    if n == 0:
        z = np.zeros(0, np.int64)
        return Decoded(z, z, np.zeros(0, np.uint64), z, z)
    page_ts, commit = page_headers(pages, layout)
    data_len = (commit & np.uint64(COMMIT_MASK)).astype(np.int64)
    capacity = size - layout.data_offset
    bad = data_len > capacity
    data_len = np.minimum(data_len, capacity)
    lost = np.zeros(n, np.int64)
    missed = (commit & np.uint64(MISSED_EVENTS)) != 0
    lost[missed] = -1
    stored = missed & ((commit & np.uint64(MISSED_STORED)) != 0) & (data_len + 8 <= capacity)
    if stored.any():
        rows = np.flatnonzero(stored)
        at = layout.data_offset + data_len[rows]
        cnt = np.zeros(len(rows), np.uint64)
        for k in range(8):
            cnt |= pages[rows, at + k].astype(np.uint64) << np.uint64(8 * k)
        lost[rows] = cnt.astype(np.int64)
    # One extra zero word per page so reading "the next word" never leaves the page.
    words = np.zeros((n, size // 4 + 2), np.uint32)
    words[:, :size // 4] = np.ascontiguousarray(pages).view("<u4")
    flat = words.ravel()
    stride = words.shape[1]
    end_all = layout.data_offset + data_len
    # The pages still holding events, and their state, kept compacted (filtered together each step).
    act = np.flatnonzero(end_all > layout.data_offset)
    p = np.full(len(act), layout.data_offset, np.int64)    # byte offset in the page
    e = end_all[act]
    t = page_ts[act].copy()
    base = act * stride
    out_off, out_len, out_ts, out_page, out_step = [], [], [], [], []
    step = 0
    while len(act):
        wi = base + (p >> 2)
        w = flat[wi]
        type_len = (w & 31).astype(np.int64)
        delta = (w >> 5).astype(np.uint64)
        if not np.any((type_len == 0) | (type_len > 28)):
            # every page's next event is a data event of type_len words: the common step
            length = type_len * 4 + 4
            t += delta
            over = p + length > e
            keep = ~over
            kp = act[keep] if over.any() else act
            if len(kp):
                out_off.append(kp * size + (p + 4)[keep] if len(kp) < len(act) else kp * size + p + 4)
                out_len.append((type_len * 4)[keep] if len(kp) < len(act) else type_len * 4)
                out_ts.append(t[keep] if len(kp) < len(act) else t.copy())
                out_page.append(kp)
                out_step.append(np.full(len(kp), step, np.int64))
            if len(kp) < len(act):
                bad[act[over]] = True
            p = np.where(over, e, p + length)
        else:
            arr0 = flat[wi + 1].astype(np.int64)
            length = np.where(type_len == 0, arr0 + 4, type_len * 4 + 4)
            is_pad = type_len == TYPE_PADDING
            null = is_pad & (delta == 0)
            length = np.where(is_pad, arr0 + 4, length)
            ext = type_len >= TYPE_TIME_EXTEND
            length = np.where(ext, 8, length)
            data = type_len <= 28
            big = (arr0.astype(np.uint64) << np.uint64(TS_SHIFT)) + delta
            t = np.where(data, t + delta, t)
            t = np.where(type_len == TYPE_TIME_EXTEND, t + big, t)
            absolute = type_len == TYPE_TIME_STAMP
            if absolute.any():
                t = np.where(absolute, _fix_abs(big, t), t)
            payload = np.where(type_len == 0, p + 8, p + 4)
            plen = np.where(type_len == 0, arr0 - 4, type_len * 4)
            over = (p + length > e) | (length <= 0)
            keep = data & ~over
            if keep.any():
                kp = act[keep]
                out_off.append(kp * size + payload[keep])
                out_len.append(plen[keep])
                out_ts.append(t[keep])
                out_page.append(kp)
                out_step.append(np.full(len(kp), step, np.int64))
            bad[act[over & ~null]] = True
            p = np.where(null | over, e, p + length)
        still = p < e
        if not still.all():
            act, p, e, t, base = act[still], p[still], e[still], t[still], base[still]
        step += 1
    if not out_off:
        z = np.zeros(0, np.int64)
        return Decoded(z, z, np.zeros(0, np.uint64), z, lost, int(bad.sum()))
    page = np.concatenate(out_page)
    order = np.lexsort((np.concatenate(out_step), page))
    return Decoded(np.concatenate(out_off)[order], np.concatenate(out_len)[order],
                   np.concatenate(out_ts)[order], page[order], lost, int(bad.sum()))


def _fix_abs(abs_ts: np.ndarray, running: np.ndarray) -> np.ndarray:
    """An absolute stamp's 5 top bits from the running time (kernel: rb_fix_abs_ts)."""
    msb = running & TS_MSB
    fixed = abs_ts | msb
    wrap = (msb != 0) & (fixed < running)
    return np.where(msb != 0, np.where(wrap, fixed + np.uint64(1 << 59), fixed), abs_ts)


# -- reading fields out of the payloads -------------------------------------

class Payloads:
    """Field access over the payloads of many events of one page buffer, column by column."""

    def __init__(self, pages: np.ndarray) -> None:
        flat = np.ascontiguousarray(pages).ravel()
        pad = (-len(flat)) % 4 + PAD
        self.bytes = np.concatenate([flat, np.zeros(pad, np.uint8)])
        self.words = self.bytes.view("<u4")

    def uint(self, at: np.ndarray, size: int) -> np.ndarray:
        """Unsigned little-endian integers of ``size`` bytes at byte offsets ``at`` (as uint64)."""
        if size not in (1, 2, 4, 8):
            raise ValueError(f"unsupported field size {size}")
        if len(at) and size <= 4:
            # payloads start 4-byte aligned, so a field's offset within its word is usually the same in
            # every event: then a field that does not cross a word is one gather and a shift
            r = int(at[0]) & 3
            if r + size <= 4 and not np.any((at & 3) != r):
                v = self.words[at >> 2]
                if r:
                    v = v >> np.uint32(8 * r)
                if size < 4:
                    v = v & np.uint32((1 << (8 * size)) - 1)
                return v.astype(np.uint64)
        wi = at // 4
        shift = ((at % 4) * 8).astype(np.uint64)
        lo = self.words[wi].astype(np.uint64)
        hi = self.words[wi + 1].astype(np.uint64)
        if size == 8:
            if np.any(shift):
                # 8-byte fields of these events are 4-byte aligned; anything else is read byte-wise
                out = np.zeros(len(at), np.uint64)
                for k in range(8):
                    out |= self.bytes[at + k].astype(np.uint64) << np.uint64(8 * k)
                return out
            return lo | (hi << np.uint64(32))
        v = (lo | (hi << np.uint64(32))) >> shift
        return v & np.uint64((1 << (8 * size)) - 1)

    def value(self, at: np.ndarray, f: Field) -> np.ndarray:
        """The field's value as int64 (signed fields sign-extended; u64 keeps its bit pattern)."""
        size = min(f.size, 8)
        v = self.uint(at, size)
        if size == 8:
            return v.view(np.int64)
        if f.signed:
            sign = np.uint64(1 << (8 * size - 1))
            return (v.astype(np.int64) ^ np.int64(int(sign))) - np.int64(int(sign))
        return v.astype(np.int64)

    def strings(self, at: np.ndarray, length: np.ndarray, table: dict[str, int], max_len: int = 256) -> np.ndarray:
        """Id in ``table`` of the NUL-terminated text at each offset (at most ``length`` bytes)."""
        n = len(at)
        if n == 0:
            return np.zeros(0, np.int32)
        length = np.clip(length, 0, max_len)
        width = max(1, int(length.max()))
        start = np.minimum(at, len(self.bytes) - width)
        mat = as_strided(self.bytes, shape=(len(self.bytes) - width + 1, width),
                         strides=(1, 1), writeable=False)[start]
        # cut at the first NUL (and at the length), so what follows does not make equal strings differ
        cut = (mat == 0) | (np.arange(width)[None, :] >= length[:, None])
        if cut.any():
            mat[np.logical_or.accumulate(cut, axis=1)] = 0
        return intern_rows(mat, table)


def intern_rows(mat: np.ndarray, table: dict[str, int]) -> np.ndarray:
    """Id in ``table`` of each row of a (n, width) uint8 matrix, as text up to its first NUL.

    Equal rows are grouped in C (Arrow's hash-based dictionary encoding), so
    Python decodes each distinct string once.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    n, width = mat.shape
    mat = np.ascontiguousarray(mat)
    arr = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n, [None, pa.py_buffer(mat)])
    encoded = pc.dictionary_encode(arr)
    ids = np.empty(len(encoded.dictionary), np.int32)
    for j, raw in enumerate(encoded.dictionary.to_pylist()):
        ids[j] = table.setdefault(raw.split(b"\0", 1)[0].decode("utf-8", "replace"), len(table))
    return ids[encoded.indices.to_numpy(zero_copy_only=False)]
