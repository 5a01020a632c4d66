"""Hypervisor steal: each CPU's steal time, sampled every 10 ms while a run measures.

On a virtual machine the host may run something else on the physical CPU
under a vCPU; the guest's kernel sees no event for it, only a gap, and its
paravirt steal clock (``/proc/stat``, the 8th number of each ``cpuN`` line)
grows. ``StealCapture`` is a Capture (latscope.session): a thread of the
controller reads ``/proc/stat`` every ``INTERVAL_NS`` from before the workers
start until after they end, and leaves the per-CPU series in the run
directory as ``steal.parquet``:

    ts_ns   CLOCK_REALTIME of the sample (the probe's clock), int64
    cpuN    the CPU's steal time since boot in nanoseconds, int64 (one column per CPU)

``/proc/stat`` counts in USER_HZ ticks (10 ms with the usual 100): a
counter moves in steps of that size, so steal shorter than a tick shows
only when it completes one. The series is cumulative, so nothing is lost
between samples: the last sample minus the first is the steal of the
window, exactly as /proc/stat read at those two moments says.

Memory is bounded: the series holds at most ``MAX_SAMPLES`` samples; a
longer run keeps every other sample and samples half as often from then on
(the interval recorded in run.json is the final one).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from latscope.errors import FormatError, LatscopeError
from latscope.libc import set_thread_name
from latscope.process import lower_priority

STEAL_FILE = "steal.parquet"
INTERVAL_NS = 10_000_000
MAX_SAMPLES = 1 << 17
PROC_STAT = Path("/proc/stat")
FORMAT = "latscope-host-steal"
VERSION = 1


def user_hz() -> int:
    try:
        return int(os.sysconf("SC_CLK_TCK")) or 100
    except (ValueError, OSError):
        return 100


def parse_stat(data: bytes, hz: int) -> dict[int, int]:
    """CPU number -> steal since boot (ns) from /proc/stat's ``cpuN`` lines (no steal column: 0)."""
    out: dict[int, int] = {}
    for line in data.split(b"\n"):
        if not line.startswith(b"cpu"):
            if out:
                break
            continue
        name, _sp, rest = line.partition(b" ")
        if len(name) <= 3 or not name[3:].isdigit():
            continue
        cols = rest.split()
        ticks = int(cols[7]) if len(cols) > 7 else 0
        out[int(name[3:])] = ticks * 1_000_000_000 // hz
    return out


def read_steal(path: Path = PROC_STAT, hz: int | None = None) -> dict[int, int]:
    """Every CPU's steal since boot, in nanoseconds (its resolution is one USER_HZ tick)."""
    with open(path, "rb", buffering=0) as fh:
        return parse_stat(fh.read(), hz or user_hz())


@dataclass(frozen=True)
class StealSeries:
    """Cumulative steal per CPU over time: ``steal_ns[i, j]`` at ``ts_ns[i]`` for CPU ``cpus[j]``."""

    ts_ns: np.ndarray
    cpus: tuple[int, ...]
    steal_ns: np.ndarray
    resolution_ns: int = 10_000_000

    def __len__(self) -> int:
        return len(self.ts_ns)

    def grew(self, cpu: int, a: int, b: int, lag_ns: int = 0) -> int | None:
        """Steal on ``cpu`` between the last sample at or before ``a`` and the first at or after ``b + lag_ns``.

        The kernel accounts steal at the CPU's next tick after it happened:
        ``lag_ns`` reaches that far past the window (no further than the last
        sample). None when the series does not cover [a, b] or does not know the CPU.
        """
        if cpu not in self.cpus or len(self.ts_ns) == 0 or a < self.ts_ns[0] or b > self.ts_ns[-1]:
            return None
        j = self.cpus.index(cpu)
        i0 = int(np.searchsorted(self.ts_ns, a, side="right")) - 1
        i1 = int(np.searchsorted(self.ts_ns, min(b + lag_ns, int(self.ts_ns[-1])), side="left"))
        return int(self.steal_ns[i1, j] - self.steal_ns[i0, j])

    def summary(self) -> dict[str, Any]:
        """Per CPU: steal over the series' window (ns) and as a percentage of that window."""
        if len(self.ts_ns) < 2:
            return {"window_s": 0.0, "cpus": {}}
        window = int(self.ts_ns[-1] - self.ts_ns[0])
        grown = self.steal_ns[-1] - self.steal_ns[0]
        return {"window_s": round(window / 1e9, 3),
                "cpus": {str(c): {"steal_ns": int(g), "percent": round(100.0 * int(g) / window, 2) if window else 0.0}
                         for c, g in zip(self.cpus, grown, strict=True)}}


class StealSampler:
    """A thread that reads /proc/stat every ``interval_ns`` until stopped (memory bounded by ``max_samples``)."""

    def __init__(self, interval_ns: int = INTERVAL_NS, stat: Path = PROC_STAT,
                 max_samples: int = MAX_SAMPLES) -> None:
        self.interval_ns = interval_ns
        self.stat = stat
        self.max_samples = max(4, max_samples)
        self.hz = user_hz()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ts: np.ndarray = np.zeros(0, np.int64)
        self._vals: np.ndarray = np.zeros((0, 0), np.int64)
        self._n = 0
        self.cpus: tuple[int, ...] = ()
        self.error: str | None = None
        self.late_samples = 0
        #: The sampling thread's scheduling policy (latscope.process.lower_priority).
        self.policy = ""

    def start(self) -> None:
        first = self._read()
        self.cpus = tuple(sorted(first[1]))
        self._ts = np.zeros(self.max_samples, np.int64)
        self._vals = np.zeros((self.max_samples, len(self.cpus)), np.int64)
        self._add(first)
        self._thread = threading.Thread(target=self._loop, name="latscope-steal", daemon=True)
        self._thread.start()

    def stop(self) -> StealSeries:
        """Stop the thread, take a last sample, return the series."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            if self.error is None:
                try:
                    self._add(self._read())
                except OSError as exc:
                    self.error = f"cannot read {self.stat}: {exc.strerror or exc}"
        return self.series()

    def series(self) -> StealSeries:
        n = self._n
        return StealSeries(self._ts[:n].copy(), self.cpus, self._vals[:n].copy(), 1_000_000_000 // self.hz)

    def _read(self) -> tuple[int, dict[int, int]]:
        with open(self.stat, "rb", buffering=0) as fh:
            a = time.clock_gettime_ns(time.CLOCK_REALTIME)
            data = fh.read()
            b = time.clock_gettime_ns(time.CLOCK_REALTIME)
        return (a + b) // 2, parse_stat(data, self.hz)

    def _add(self, sample: tuple[int, dict[int, int]]) -> None:
        if self._n == self.max_samples:
            # full: keep every other sample (the first and the latest stay), sample half as often
            keep = np.r_[0:self._n:2]
            if keep[-1] != self._n - 1:
                keep = np.r_[keep[:-1], self._n - 1]
            k = len(keep)
            self._ts[:k] = self._ts[keep]
            self._vals[:k] = self._vals[keep]
            self._n = k
            self.interval_ns *= 2
        ts, values = sample
        self._ts[self._n] = ts
        prev = self._vals[self._n - 1] if self._n else np.zeros(len(self.cpus), np.int64)
        # a CPU missing from a reading (taken offline) keeps its last value: the series never goes back
        self._vals[self._n] = [values.get(c, int(prev[j])) for j, c in enumerate(self.cpus)]
        self._n += 1

    def _loop(self) -> None:
        set_thread_name("latscope-steal")  # what a breakdown names when this thread delays a packet
        # An observer yields to what it observes, but must still sample on a loaded machine: nice 19, not
        # SCHED_IDLE, which the test suite's load starved down to a sample every 0.1 s. (Breakdowns still
        # name it in a few late packets, for silent time while it was current: host steal too short for the
        # 10 ms counter, or kernel work that could not be preempted.) A late sample is counted.
        self.policy = lower_priority(idle=False)
        deadline = time.monotonic_ns()
        while True:
            deadline += self.interval_ns
            wait = deadline - time.monotonic_ns()
            if wait < 0:
                self.late_samples += 1
                deadline = time.monotonic_ns()
                wait = 0
            if self._stop.wait(wait / 1e9):
                return
            try:
                self._add(self._read())
            except OSError as exc:
                self.error = f"cannot read {self.stat}: {exc.strerror or exc}"
                return


def write_series(series: StealSeries, path: Path, interval_ns: int) -> None:
    """The series as Parquet (ts_ns, cpu0, cpu1, ...), written atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from latscope.files import atomic_output

    cols = {"ts_ns": pa.array(series.ts_ns, pa.int64())}
    for j, c in enumerate(series.cpus):
        cols[f"cpu{c}"] = pa.array(series.steal_ns[:, j], pa.int64())
    meta = {"format": FORMAT, "version": str(VERSION), "resolution_ns": str(series.resolution_ns),
            "interval_ns": str(interval_ns), "source": "/proc/stat"}
    table = pa.table(cols).replace_schema_metadata(meta)
    with atomic_output(path) as fh:
        pq.write_table(table, fh, compression="zstd")


def read_series(path: Path) -> StealSeries:
    """A run's steal.parquet (FormatError when it is not one, or of a newer version)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise FormatError(f"{path}: not a readable steal series ({exc})") from None
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    if meta.get("format") != FORMAT or "ts_ns" not in table.column_names:
        raise FormatError(f"{path}: not a latscope steal series")
    if int(meta.get("version", "0")) > VERSION:
        raise FormatError(f"{path}: steal series version {meta['version']} is newer than this latscope reads "
                          f"({VERSION})")
    names = [n for n in table.column_names if n.startswith("cpu") and n[3:].isdigit()]
    cpus = tuple(int(n[3:]) for n in names)
    ts = table.column("ts_ns").to_numpy().astype(np.int64)
    vals = np.stack([table.column(n).to_numpy().astype(np.int64) for n in names], axis=1) if names \
        else np.zeros((len(ts), 0), np.int64)
    return StealSeries(ts, cpus, vals, int(meta.get("resolution_ns", "10000000")))


class StealCapture:
    """A Capture (latscope.session): the steal series of every run, in ``steal.parquet`` and run.json.

    A failure to sample (no /proc/stat) is recorded, never fatal to the run.
    """

    def __init__(self, interval_ns: int = INTERVAL_NS, stat: Path = PROC_STAT) -> None:
        self.sampler = StealSampler(interval_ns, stat)
        self.started = False
        self.start_error: str | None = None

    def start(self, workdir: Path, path: Any) -> dict[str, Any]:
        try:
            self.sampler.start()
            self.started = True
        except OSError as exc:
            self.start_error = f"cannot read {self.sampler.stat}: {exc.strerror or exc}"
        return {}

    def stop(self, workdir: Path) -> dict[str, Any]:
        if not self.started:
            return {"record": {"host_steal": {"error": self.start_error}}}
        self.started = False
        series = self.sampler.stop()
        info: dict[str, Any] = {
            "source": str(self.sampler.stat), "file": STEAL_FILE, "samples": len(series),
            "interval_ns": self.sampler.interval_ns, "resolution_ns": series.resolution_ns,
            "late_samples": self.sampler.late_samples, "cpus": list(series.cpus), "policy": self.sampler.policy,
        }
        if self.sampler.error:
            info["error"] = self.sampler.error
        try:
            write_series(series, workdir / STEAL_FILE, self.sampler.interval_ns)
        except (LatscopeError, OSError) as exc:
            # recorded in run.json, as a failed trace is: the packets are what the run must keep
            info["error"] = str(exc)
            info["file"] = None
        summary = series.summary()
        return {"record": {"host_steal": info}, "summary": {"host_steal": summary}}

    def close(self) -> None:
        if self.started:
            self.started = False
            self.sampler.stop()
