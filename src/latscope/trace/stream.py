"""Draining an instance's per-CPU ring buffers into a compressed file while the run goes on.

A reader thread wakes every ``interval_s``, reads each CPU's
``per_cpu/cpuN/trace_pipe_raw`` until it is empty (one page per read; the
page the kernel is still writing comes back as far as it is committed) and
appends the pages to ``trace/ring.zst``. The ring buffer then only has to
hold what arrives between two wake-ups, not the whole run, and the file
holds the kernel's own bytes: nothing is rendered or parsed during the run.

The thread runs under SCHED_IDLE (it gets a CPU only when nothing else
wants it, so it never preempts the probe), competes as an ordinary task
for a few seconds when a busy machine starves it (see Reader) and, when
given CPUs to keep off, is pinned to the others. Its memory is one page plus the compressor's
state, whatever the length of the run.

``ring.zst`` (zstd) is a 16-byte header -- magic ``LSRING01``, u32 format
version (1), u32 page size -- then one record per page read: u32 CPU, u32
flags (0), and the page's ``page size`` bytes, in the order they were read
(per CPU, the kernel's order).
"""

from __future__ import annotations

import errno
import os
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from latscope.errors import FormatError, TraceError
from latscope.files import atomic_output
from latscope.libc import set_thread_name
from latscope.process import lower_priority

MAGIC = b"LSRING01"
VERSION = 1
HEADER = struct.Struct("<8sII")
RECORD = struct.Struct("<II")
#: How often the reader drains the buffers during a run.
INTERVAL_S = 0.2
#: A wake-up this much later than due means the idle reader is being starved: it stops yielding ...
LATE_S = 0.5
#: ... for this long.
BOOST_S = 5.0


@dataclass
class RingIndex:
    """Per CPU of a page file: its pages, and the timestamp in the header of its first page (bytes 0-7 of
    the page, ``events/header_page``'s ``timestamp`` on every kernel): no event of the CPU is earlier."""

    pages: dict[int, int] = field(default_factory=dict)
    first_ts: dict[int, int] = field(default_factory=dict)

    def add(self, cpu: int, n: int, first_page: bytes | np.ndarray) -> None:
        if cpu not in self.first_ts:
            self.first_ts[cpu] = int.from_bytes(bytes(first_page[:8]), "little")
        self.pages[cpu] = self.pages.get(cpu, 0) + n


def write_header(fh: BinaryIO, page_size: int) -> None:
    fh.write(HEADER.pack(MAGIC, VERSION, page_size))


@dataclass
class ReaderStats:
    """What the reader did: pages and bytes per CPU, its own CPU time, drains."""

    pages: dict[int, int] = field(default_factory=dict)
    drains: int = 0
    cpu_s: float = 0.0
    max_drain_pages: int = 0
    max_drain_s: float = 0.0
    boosts: int = 0
    boosted_s: float = 0.0
    policy: str = ""
    affinity: list[int] | None = None

    def as_json(self, page_size: int) -> dict[str, Any]:
        total = sum(self.pages.values())
        return {"pages": {str(c): n for c, n in sorted(self.pages.items())}, "bytes": total * page_size,
                "drains": self.drains, "cpu_s": round(self.cpu_s, 3), "max_drain_pages": self.max_drain_pages,
                "max_drain_s": round(self.max_drain_s, 4), "policy": self.policy, "affinity": self.affinity,
                "boosts": self.boosts, "boosted_s": round(self.boosted_s, 3)}


class PageSink:
    """Appends pages to ``ring.zst`` (zstd through pyarrow), which appears under its name when closed."""

    def __init__(self, path: Path, page_size: int) -> None:
        import pyarrow as pa

        self.path, self.page_size = path, page_size
        #: Pages written per CPU and the first one's timestamp (what latscope.trace.ringstore's merge needs).
        self.index = RingIndex()
        self._cm = atomic_output(path)
        raw = self._cm.__enter__()
        self._done = False
        try:
            self._out = pa.CompressedOutputStream(raw, "zstd")
            write_header(self._out, page_size)
        except BaseException:
            self.close(keep=False)
            raise

    def write(self, cpu: int, page: bytes) -> None:
        self._out.write(RECORD.pack(cpu, 0))
        self._out.write(page)
        self.index.add(cpu, 1, page)

    def close(self, keep: bool = True) -> None:
        """Finish the file (``keep=False``: discard it); safe to call twice."""
        if self._done:
            return
        self._done = True
        try:
            if hasattr(self, "_out") and not self._out.closed:
                self._out.close()
        finally:
            if keep:
                self._cm.__exit__(None, None, None)
            else:
                err = TraceError("page file discarded")
                self._cm.__exit__(TraceError, err, None)


class CpuPipes:
    """The per-CPU ``trace_pipe_raw`` files of an instance, opened non-blocking."""

    def __init__(self, instance_path: Path, cpus: list[int], page_size: int) -> None:
        self.page_size = page_size
        self.fds: dict[int, int] = {}
        try:
            for c in cpus:
                self.fds[c] = os.open(instance_path / "per_cpu" / f"cpu{c}" / "trace_pipe_raw",
                                      os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            self.close()
            raise TraceError(f"cannot open the ring buffer of CPU {c}: {exc.strerror}") from None

    def drain(self, cpu: int, limit: int | None = None) -> Iterator[bytes]:
        """Pages of ``cpu`` until its buffer is empty (or ``limit`` pages)."""
        fd, n = self.fds[cpu], 0
        while limit is None or n < limit:
            try:
                page = os.read(fd, self.page_size)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EINTR):
                    return
                raise TraceError(f"reading the ring buffer of CPU {cpu} failed: {exc.strerror}") from None
            if not page:
                return
            if len(page) < self.page_size:
                page = page + bytes(self.page_size - len(page))
            n += 1
            yield page

    def close(self) -> None:
        for fd in self.fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds.clear()


def read_all(instance_path: Path, cpus: list[int], page_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Everything left in the buffers (consumed): ((n, page_size) uint8 pages, the CPU of each)."""
    pipes = CpuPipes(instance_path, cpus, page_size)
    try:
        chunks, owners = [], []
        for c in cpus:
            for page in pipes.drain(c):
                chunks.append(page)
                owners.append(c)
    finally:
        pipes.close()
    pages = np.frombuffer(b"".join(chunks), np.uint8).reshape(-1, page_size) if chunks else \
        np.zeros((0, page_size), np.uint8)
    return pages, np.asarray(owners, np.int16)


class Reader(threading.Thread):
    """Drains the buffers into a PageSink every ``interval_s`` until ``finish()``.

    It runs under SCHED_IDLE, and so waits while any other task wants the
    CPU. When that makes it late (it woke more than LATE_S after it was due)
    or a drain found a CPU's buffer at least a quarter full, it competes as
    an ordinary task (SCHED_OTHER, nice 0) for the next BOOST_S seconds,
    then yields again: a busy machine must not starve it into losing events.
    """

    def __init__(self, pipes: CpuPipes, sink: PageSink, *, interval_s: float = INTERVAL_S,
                 avoid_cpus: set[int] | None = None, buffer_pages: int | None = None) -> None:
        super().__init__(name="latscope-trace-reader", daemon=True)
        self.pipes, self.sink, self.interval_s = pipes, sink, interval_s
        self.avoid_cpus = avoid_cpus or set()
        #: Pages in one drain of one CPU that count as "the buffer is filling up".
        self.danger_pages = max(4, (buffer_pages or 0) // 4) if buffer_pages else None
        self.stats = ReaderStats()
        self.error: BaseException | None = None
        self._halt = threading.Event()
        self._boosted_until: float | None = None
        self._boost_start = 0.0

    def run(self) -> None:
        set_thread_name("latscope-trace")  # what a breakdown names when this thread delays a packet
        t0 = time.thread_time()
        try:
            self._lower_priority()
            due = time.monotonic()
            while not self._halt.is_set():
                now = time.monotonic()
                late = now - due > LATE_S
                most = self.drain_once()
                self._adjust(now, late or (self.danger_pages is not None and most >= self.danger_pages))
                due = time.monotonic() + self.interval_s
                self._halt.wait(self.interval_s)
        except (TraceError, OSError) as exc:
            self.error = exc
        finally:
            self.stats.cpu_s += time.thread_time() - t0

    def _adjust(self, now: float, danger: bool) -> None:
        if danger:
            if self._boosted_until is None:
                try:
                    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
                    self.stats.boosts += 1
                    self._boost_start = now
                except OSError:
                    return
            self._boosted_until = now + BOOST_S
        elif self._boosted_until is not None and now > self._boosted_until:
            try:
                os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            except OSError:
                return
            self.stats.boosted_s += now - self._boost_start
            self._boosted_until = None

    def _lower_priority(self) -> None:
        self.stats.policy = lower_priority()
        allowed = os.sched_getaffinity(0)
        spare = allowed - self.avoid_cpus
        if self.avoid_cpus and spare:
            os.sched_setaffinity(0, spare)
            self.stats.affinity = sorted(spare)

    def drain_once(self) -> int:
        """Drain every CPU once; return the most pages one CPU had."""
        t = time.monotonic()
        n = most = 0
        for cpu in list(self.pipes.fds):
            k = 0
            for page in self.pipes.drain(cpu):
                self.sink.write(cpu, page)
                k += 1
            self.stats.pages[cpu] = self.stats.pages.get(cpu, 0) + k
            n += k
            most = max(most, k)
        self.stats.drains += 1
        self.stats.max_drain_pages = max(self.stats.max_drain_pages, most)
        self.stats.max_drain_s = max(self.stats.max_drain_s, time.monotonic() - t)
        return most

    def finish(self) -> None:
        """Stop the thread (after its current drain); the caller drains what is left."""
        self._halt.set()
        self.join()
        if self._boosted_until is not None:
            self.stats.boosted_s += time.monotonic() - self._boost_start
            self._boosted_until = None


def read_ring(path: Path, chunk_pages: int = 1 << 15) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The pages of a ``ring.zst``, in chunks: ((n, page_size) uint8 pages, the CPU of each page)."""
    import pyarrow as pa

    try:
        raw = pa.input_stream(str(path), compression="zstd")
    except (OSError, pa.ArrowException) as exc:
        raise FormatError(f"{path}: cannot read ({exc})") from None
    with raw:
        try:
            head = raw.read(HEADER.size)
            if len(head) < HEADER.size:
                raise FormatError(f"{path}: not a latscope ring-buffer file (too short)")
            magic, version, page_size = HEADER.unpack(head)
            if magic != MAGIC:
                raise FormatError(f"{path}: not a latscope ring-buffer file")
            if version > VERSION:
                raise FormatError(f"{path}: ring-buffer file version {version} is newer than this latscope "
                                  f"reads ({VERSION})")
            if page_size < 64 or page_size % 4 or page_size > 1 << 24:
                raise FormatError(f"{path}: implausible page size {page_size}")
            rec = RECORD.size + page_size
            while True:
                data = raw.read(rec * chunk_pages)
                if not data:
                    return
                whole = len(data) // rec
                if whole == 0:
                    raise FormatError(f"{path}: ends inside a page record")
                arr = np.frombuffer(data, np.uint8, whole * rec).reshape(whole, rec)
                cpus = arr[:, :4].copy().view("<u4").ravel().astype(np.int16)
                yield arr[:, RECORD.size:], cpus
                if whole * rec != len(data):
                    raise FormatError(f"{path}: ends inside a page record")
        except (OSError, pa.ArrowException) as exc:
            raise FormatError(f"{path}: corrupt or unreadable ({exc})") from None


def ring_index(path: Path) -> RingIndex:
    """The RingIndex of a ``ring.zst`` (one pass over the file)."""
    out = RingIndex()
    for pages, cpus in read_ring(path):
        for c in np.unique(cpus).tolist():
            at = np.flatnonzero(cpus == c)
            out.add(c, len(at), pages[at[0]])
    return out
