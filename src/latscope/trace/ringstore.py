"""A page file (``ring.zst``) -> events.parquet, in bounded memory, decoded on every CPU.

The pages are read a chunk at a time (DECODE_PAGES pages, 8 MiB of 4 KiB
pages) and each chunk is decoded (latscope.trace.binary) in a worker
process, one per idle CPU (workers_for), while this process merges and
writes what the workers return (with one, it decodes them itself):

* a chunk's events come back split by CPU, each CPU's rows in buffer order,
  which is time order (the kernel stamps a CPU's buffer monotonically; this
  is checked, see below);
* per CPU, rows wait until every CPU that still has pages in the file has
  been decoded past them: with ``last[c]`` the time of the last row decoded
  of CPU c, the rows earlier than ``min(last[c])`` over those CPUs can come
  no later than any row still to come, so they are merged (the CPUs' sorted
  runs, concatenated CPU after CPU, by a stable sort: equal times by CPU,
  then buffer order, the order of ``binary.time_order``) and written as row
  groups, on a thread of their own while the next chunk is merged;
* the file's page count per CPU (stream.RingIndex: from the capture, or
  one pass over the file) says when a CPU has no pages left, so it holds
  nothing back; a CPU not decoded yet holds back only what is earlier than
  the timestamp of its first page's header (no event of it is earlier).

What is in memory at once: the chunks being decoded (workers + 1 of them
in flight, their pages and decoded rows), the rows waiting for the other
CPUs (what the slowest CPU's last decoded page is behind the others: in a
streamed capture, drained every 200 ms, about one chunk) and one slice
being written. None of it grows with the length of the run. A file whose
pages are stored CPU after CPU (a buffer read once at the end) keeps a
whole CPU's rows waiting: bounded by that buffer's size.

Should a CPU's rows ever come out of time order, the streaming merge stops
and the table is decoded at once and sorted (memory then grows with the
trace): the table is the same either way.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latscope.errors import TraceError
from latscope.trace import binary
from latscope.trace import stream as st
from latscope.trace.table import EventTable, TableWriter, empty_table, write_table

#: Pages decoded at a time by one worker: about 200,000 events. Larger chunks made more system time here
#: (every array a fresh mmap), smaller ones more steps of numpy per event.
DECODE_PAGES = 1 << 11
#: Worker processes at most (one per CPU this process may use, up to this).
MAX_WORKERS = 4


class Unsorted(Exception):
    """A CPU's events were not in time order in its buffer: the streaming merge cannot be exact."""


@dataclass
class _Job:
    """What a worker needs besides the pages (given once, inherited by forked workers)."""

    ring: binary.RingMeta
    kallsyms: binary.Kallsyms | None
    addresses: binary.AddressMix
    comm_fallback: bool


_JOB: _Job | None = None


def _init(job: _Job) -> None:
    global _JOB
    _JOB = job


def _decode(pages: np.ndarray, cpus: np.ndarray, job: _Job | None = None) -> tuple[
        list[tuple[int, EventTable]], dict[int, str], dict[str, Any]]:
    """One chunk: its rows per CPU (buffer order), the function names it resolved, its parse counts."""
    j = job or _JOB
    assert j is not None
    known = set(j.ring.symbols)
    t = binary.decode_table(pages, cpus, j.ring, kallsyms=j.kallsyms, comm_fallback=j.comm_fallback,
                            sort=False, addresses=j.addresses)
    names = {a: n for a, n in j.ring.symbols.items() if a not in known}
    return split_cpus(t), names, t.meta.get("parse", {})


def _take(t: EventTable, rows: np.ndarray | slice) -> EventTable:
    return EventTable(ts=t.ts[rows], cpu=t.cpu[rows], pid=t.pid[rows], comm=t.comm[rows], event=t.event[rows],
                      ctx=t.ctx[rows], nums=t.nums[rows], strs=t.strs[rows], event_names=t.event_names,
                      strings=t.strings)


def split_cpus(t: EventTable) -> list[tuple[int, EventTable]]:
    """(cpu, its rows in their given order) for each CPU of ``t``, CPUs ascending."""
    if len(t) == 0:
        return []
    lo, hi = int(t.cpu.min()), int(t.cpu.max())
    if lo == hi:
        return [(lo, t)]
    o = np.argsort(t.cpu, kind="stable")   # int16: a radix sort
    c = t.cpu[o]
    cuts = np.flatnonzero(c[1:] != c[:-1]) + 1
    bounds = [0, *cuts.tolist(), len(o)]
    return [(int(c[a]), _take(t, o[a:b])) for a, b in itertools.pairwise(bounds)]


@dataclass
class Merger:
    """Per-CPU runs of rows in, time-ordered slices of rows out (to ``emit``), holding back what must wait."""

    #: Called with (rows, which of them in which order, the strings, the event names).
    emit: Callable[[EventTable, np.ndarray, tuple[str, ...], tuple[str, ...]], None]
    #: Pages of each CPU still to be decoded.
    left: dict[int, int]
    #: No event of a CPU is earlier than this (its first page's header time), for CPUs not decoded yet.
    floor: dict[int, int] = field(default_factory=dict)
    strings: dict[str, int] = field(default_factory=dict)
    names: dict[str, int] = field(default_factory=dict)
    waiting: dict[int, list[EventTable]] = field(default_factory=dict)
    last: dict[int, int] = field(default_factory=dict)
    #: Rows before this time have been emitted ...
    emitted_before: int = np.iinfo(np.int64).min
    #: ... the latest of them at this time.
    emitted_max: int | None = None
    peak_waiting: int = 0

    def add(self, parts: list[tuple[int, EventTable]], pages: dict[int, int]) -> None:
        """A chunk's rows per CPU (ids into each part's own tables) and its pages per CPU."""
        for cpu, t in parts:
            if len(t) == 0:
                continue
            ts = t.ts
            if bool(np.any(ts[1:] < ts[:-1])) or int(ts[0]) < max(self.last.get(cpu, self.emitted_before),
                                                                    self.floor.get(cpu, self.emitted_before)):
                raise Unsorted(f"CPU {cpu}'s events are not in time order")
            self.waiting.setdefault(cpu, []).append(self._global_ids(t))
            self.last[cpu] = int(ts[-1])
        for cpu, n in pages.items():
            self.left[cpu] = self.left.get(cpu, 0) - n
        self.peak_waiting = max(self.peak_waiting, sum(len(x) for v in self.waiting.values() for x in v))
        self._flush(final=False)

    def finish(self) -> None:
        self._flush(final=True)

    def _global_ids(self, t: EventTable) -> EventTable:
        def lut(table: tuple[str, ...], into: dict[str, int]) -> np.ndarray:
            return np.array([into.setdefault(s, len(into)) for s in table] + [-1], np.int32)

        s, e = lut(t.strings, self.strings), lut(t.event_names, self.names)
        return EventTable(ts=t.ts, cpu=t.cpu, pid=t.pid, comm=s[t.comm], event=e[t.event].astype(np.int16),
                          ctx=t.ctx, nums=t.nums, strs=s[np.where(t.strs < 0, len(t.strings), t.strs)],
                          event_names=(), strings=())

    def _flush(self, final: bool) -> None:
        if final:
            bound = np.iinfo(np.int64).max
        else:
            busy = [c for c, n in self.left.items() if n > 0]
            if any(c not in self.last and c not in self.floor for c in busy):
                return   # a CPU with pages to come and nothing known of their times: they may be the earliest
            bound = min((self.last.get(c, self.floor.get(c, 0)) for c in busy), default=np.iinfo(np.int64).max)
        cpus = [c for c in sorted(self.waiting) if self.waiting[c]]
        if not cpus:
            return
        # every waiting row in one table, CPU after CPU (one copy); each CPU's rows before the bound go out
        pieces = [p for c in cpus for p in self.waiting[c]]
        src = pieces[0] if len(pieces) == 1 else _concat(pieces)
        runs, start = [], 0
        for c in cpus:
            n = sum(len(p) for p in self.waiting[c])
            k = n if final else int(np.searchsorted(src.ts[start:start + n], bound, side="left"))
            runs.append((start, k))
            self.waiting[c] = [_take(src, slice(start + k, start + n))] if k < n else []
            start += n
        rows = [np.arange(a, a + k) for a, k in runs if k]
        if not rows:
            return
        self.emitted_before = max(self.emitted_before, bound)
        pick = rows[0] if len(rows) == 1 else np.concatenate(rows)
        ts = src.ts[pick]
        if len(rows) > 1:
            # sorted runs, CPU after CPU: a stable sort merges them (measured here 5 times faster than a
            # merge by searchsorted) and keeps ties in CPU order, then buffer order
            pick = pick[np.argsort(ts, kind="stable")]
            ts = src.ts[pick]
        # Whatever the page counts said, a slice must start after the previous one ended (ties included:
        # equal times split across two slices could break the CPU order of ties).
        if self.emitted_max is not None and int(ts[0]) <= self.emitted_max:
            raise Unsorted("a slice of events began before the previous one ended")
        self.emitted_max = int(ts[-1])
        strings = tuple(sorted(self.strings, key=self.strings.__getitem__))
        names = tuple(sorted(self.names, key=self.names.__getitem__))
        self.emit(src, pick, strings, names)


def _concat(parts: list[EventTable]) -> EventTable:
    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in parts])

    return EventTable(ts=cat("ts"), cpu=cat("cpu"), pid=cat("pid"), comm=cat("comm"), event=cat("event"),
                      ctx=cat("ctx"), nums=cat("nums"), strs=cat("strs"), event_names=(), strings=())


def workers_for(n: int | None = None, load: float | None = None) -> int:
    """Decoding processes: ``n``, else one per idle CPU this process may run on (at most MAX_WORKERS).

    Idle: the CPUs allowed less the 1-minute load average, rounded. Worker
    processes cost about a quarter more CPU than decoding here (moving pages
    and rows between processes), which pays only when they get CPUs of their
    own: on this 2-CPU machine with one CPU taken by other work, one process
    stored a minute's trace in 2.3-3.0 s, two workers in 3.0-3.6 s. With one,
    the chunks are decoded in this process (no workers).
    """
    if n is not None:
        return max(1, n)
    allowed = len(os.sched_getaffinity(0))
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:
            load = 0.0
    return max(1, min(MAX_WORKERS, allowed, round(allowed - load)))


def store_ring(path: Path, ring: binary.RingMeta, out: Path, *, meta: dict[str, Any] | None = None,
               kallsyms: binary.Kallsyms | None = None, addresses: binary.AddressMix | None = None,
               index: st.RingIndex | None = None, chunk_pages: int = DECODE_PAGES,
               workers: int | None = None, comm_fallback: bool = True) -> dict[str, Any]:
    """Decode the page file ``path`` into the events.parquet ``out``; return the table's metadata.

    ``index``: the file's pages per CPU and their first timestamps, when the
    writer kept them (PageSink.index; else the file is read once more for them). Function names resolved
    with ``kallsyms`` are added to ``ring.symbols``. Pointer fields are mixed
    with ``addresses`` (a fresh key when None). ``meta`` goes into the
    table's metadata with the decoder's (format, parse counts) and, under
    ``store``, how the table was made (workers, chunks, rows held back at most).
    """
    mix = addresses or binary.AddressMix()
    info = dict(meta or {})
    if index is None:
        index = st.ring_index(path)
    if kallsyms is not None:
        _ = kallsyms.addrs   # read once, before the workers are forked (they inherit it)
    job = _Job(ring, kallsyms, mix, comm_fallback)
    nworkers = workers_for(workers)
    if nworkers > 1:
        _warm_up(path, job)
    start_meta = {**info, "format": "ftrace-binary", "ts_resolution_ns": 1, "ts_source": "binary",
                  "pointers": "mixed"}
    try:
        return _stream(path, out, job, start_meta, index, chunk_pages, nworkers)
    except Unsorted as exc:
        table = decode_all(path, ring, kallsyms=kallsyms, addresses=mix, meta=start_meta, chunk_pages=chunk_pages,
                           comm_fallback=comm_fallback)
        table.meta["store"] = {"streamed": False, "why": str(exc)}
        write_table(table, out)
        return table.meta


def _stream(path: Path, out: Path, job: _Job, start_meta: dict[str, Any], index: st.RingIndex,
            chunk_pages: int, nworkers: int) -> dict[str, Any]:
    writer = TableWriter(out, start_meta)
    parses: list[dict[str, Any]] = []
    chunks = 0
    t0, c0, k0 = time.monotonic(), time.process_time(), _children_cpu_s()
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="latscope-events-writer") as wpool:
            last_write: list[Future[None]] = []

            def write(src: EventTable, pick: np.ndarray, strings: tuple[str, ...], names: tuple[str, ...]) -> None:
                t = _take(src, pick)
                writer.write(EventTable(ts=t.ts, cpu=t.cpu, pid=t.pid, comm=t.comm, event=t.event, ctx=t.ctx,
                                        nums=t.nums, strs=t.strs, event_names=names, strings=strings))

            def emit(src: EventTable, pick: np.ndarray, strings: tuple[str, ...], names: tuple[str, ...]) -> None:
                # gathered and written on the writer thread (numpy and Arrow let go of the GIL)
                if last_write:
                    last_write.pop().result()
                last_write.append(wpool.submit(write, src, pick, strings, names))

            merger = Merger(emit, dict(index.pages), dict(index.first_ts))

            def take(result: tuple[list[tuple[int, EventTable]], dict[int, str], dict[str, Any]],
                     pages: dict[int, int]) -> None:
                parts, names, parse = result
                job.ring.symbols.update(names)
                parses.append(parse)
                merger.add(parts, pages)

            def page_counts(cpus: np.ndarray) -> dict[int, int]:
                u, n = np.unique(cpus, return_counts=True)
                return dict(zip(u.tolist(), n.tolist(), strict=True))

            if nworkers == 1:
                for pages, cpus in st.read_ring(path, chunk_pages):
                    take(_decode(pages, cpus, job), page_counts(cpus))
                    chunks += 1
            else:
                ctx = multiprocessing.get_context("fork")
                with ProcessPoolExecutor(nworkers, mp_context=ctx, initializer=_init, initargs=(job,)) as pool:
                    inflight: deque[tuple[Future[Any], dict[int, int]]] = deque()
                    try:
                        for pages, cpus in st.read_ring(path, chunk_pages):
                            inflight.append((pool.submit(_decode, pages, cpus), page_counts(cpus)))
                            chunks += 1
                            while len(inflight) > nworkers:
                                fut, counts = inflight.popleft()
                                take(fut.result(), counts)
                        while inflight:
                            fut, counts = inflight.popleft()
                            take(fut.result(), counts)
                    except BaseException:
                        pool.shutdown(wait=True, cancel_futures=True)
                        raise
            merger.finish()
            if last_write:
                last_write.pop().result()
        meta = {**start_meta, "parse": binary.sum_parse(parses),
                "store": {"streamed": True, "workers": nworkers, "chunks": chunks, "chunk_pages": chunk_pages,
                          "max_rows_waiting": merger.peak_waiting, "s": round(time.monotonic() - t0, 3),
                          "cpu_s": round(time.process_time() - c0, 3),
                          "workers_cpu_s": round(_children_cpu_s() - k0, 3)}}
        meta["parse"].setdefault("pages", 0)
        meta["parse"].setdefault("events", 0)
        writer.close(meta)
        return meta
    except BrokenProcessPool as exc:
        writer.abort()
        raise TraceError(f"a process decoding the trace died ({exc})") from None
    except BaseException:
        writer.abort()
        raise


def _warm_up(path: Path, job: _Job) -> None:
    """Decode a few pages here, before the workers are forked: what the decoder imports and compiles on
    first use (pyarrow.compute alone takes 0.4-0.8 s to import) is then done once, not once per worker."""
    import pyarrow.compute  # noqa: F401

    for pages, cpus in st.read_ring(path, 16):
        binary.decode_table(pages, cpus, job.ring, comm_fallback=job.comm_fallback, sort=False,
                            addresses=job.addresses)
        break


def _children_cpu_s() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def decode_all(path: Path, ring: binary.RingMeta, *, kallsyms: binary.Kallsyms | None = None,
               addresses: binary.AddressMix | None = None, meta: dict[str, Any] | None = None,
               chunk_pages: int = DECODE_PAGES, comm_fallback: bool = True) -> EventTable:
    """The whole EventTable of a page file in memory, in time order (decoded a chunk at a time)."""
    mix = addresses or binary.AddressMix()
    parts = [binary.decode_table(pages, cpus, ring, kallsyms=kallsyms, meta=meta, comm_fallback=comm_fallback,
                                 sort=False, addresses=mix)
             for pages, cpus in st.read_ring(path, chunk_pages)]
    if not parts:
        return empty_table({**(meta or {}), "parse": {"pages": 0, "events": 0}})
    return binary.concat(parts, meta)
