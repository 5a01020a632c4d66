"""`latscope monitor`: the endless measurement, rolled into one Parquet file per interval.

The sender and receiver workers write each packet into shared-memory rings
(probe.ring); this controller polls them every POLL_S, hands over every seq
scheduled more than HAND_OVER_NS ago (a packet later than that is refused by
the receiver and stored as lost), joins the two halves' slots (probe.merge),
and appends the rows to the open interval's file (store.partitions). At an
interval's end the file is committed (renamed into place whole), its summary
row written, and the Prometheus gauges and --max limits evaluated.

Memory is bounded by the rings (RING_SECONDS of packets, 80 bytes each, shared
with the workers), one row group of buffered rows (store.partitions
ROW_GROUP_ROWS) and fixed-size histograms, whatever the run's length.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from latscope import testhooks
from latscope.analysis.check import Limit, judge
from latscope.contract import FLAG_DUPLICATE, FLAG_LOST, FLAG_REORDERED, FLAG_SEND_FAILED, MISSING
from latscope.env.clock import check_host
from latscope.env.steal import read_steal
from latscope.errors import CaptureError, ConfigError
from latscope.files import held_lock, reason
from latscope.leftovers import reap
from latscope.monitor.histogram import Distribution, prometheus_counts
from latscope.monitor.metrics import MetricsState, serve
from latscope.probe import controller, merge
from latscope.probe import ring as R
from latscope.probe.config import MeasureConfig
from latscope.probe.ringloop import ENDLESS
from latscope.probe.spec import ReceiverSpec
from latscope.session import endpoints, sender_spec
from latscope.store.layout import new_run_id
from latscope.store.partitions import (
    SamplesWriter,
    intervals_path,
    last_stored,
    reap_temporaries,
    safe_host,
    samples_path,
    write_interval_row,
)
from latscope.topo import open_topology

POLL_S = 0.2
#: A packet may arrive this long after its scheduled time and still be stored as received.
HAND_OVER_NS = 1_000_000_000
#: The rings hold this much of the stream: the controller may stall this long less HAND_OVER_NS.
RING_SECONDS = 20
MIN_RING_SLOTS = 1 << 14
#: How often the host's steal is read for the exporter.
STEAL_EVERY_S = 1.0
SHM = Path("/dev/shm")
#: Topologies a monitor can measure on: both halves on this host.
UNSUPPORTED = ("none", "agents")

Log = Callable[[str], None]


@dataclass(frozen=True)
class MonitorConfig:
    """What `latscope monitor` was asked to do."""

    directory: Path
    measure: MeasureConfig
    interval_ns: int = 3600 * 1_000_000_000
    host: str = field(default_factory=lambda: os.uname().nodename)
    limits: tuple[Limit, ...] = ()
    metrics_port: int | None = None
    metrics_addr: str = "127.0.0.1"


def ring_slots(period_ns: int) -> int:
    """Slots per ring: RING_SECONDS of packets, a power of two, at least MIN_RING_SLOTS."""
    need = max(MIN_RING_SLOTS, RING_SECONDS * 1_000_000_000 // period_ns)
    return 1 << (need - 1).bit_length()


def memory_bound_bytes(period_ns: int) -> int:
    """The rings' size: the part of the monitor's memory that grows with the packet rate."""
    return R.ring_bytes(R.SENDER_COLUMNS, ring_slots(period_ns)) + R.ring_bytes(R.RECEIVER_COLUMNS,
                                                                               ring_slots(period_ns))


@dataclass
class _Interval:
    """The open interval: its bounds, its file, and what its rows showed so far."""

    start_ns: int
    end_ns: int
    writer: SamplesWriter
    first_seq: int
    dist: Distribution = field(default_factory=Distribution)
    packets: int = 0
    received: int = 0
    lost: int = 0
    reordered: int = 0
    duplicates: int = 0
    sent: int = 0
    first_sched_ns: int | None = None
    last_sched_ns: int | None = None


@dataclass(frozen=True)
class MonitorOutcome:
    """How a monitor ended: files committed, seqs stored, why it stopped."""

    run_id: str
    files: int
    first_seq: int
    next_seq: int
    stop_reason: str
    notes: tuple[str, ...] = ()


@contextlib.contextmanager
def _lock(directory: Path, host: str, stream: int) -> Iterator[None]:
    """One monitor per directory, host and stream: a second would store the same seqs twice."""
    with held_lock(directory / f".monitor-{safe_host(host)}-{stream}.lock",
                   f"another latscope monitor writes stream {stream} of host {host} into {directory}",
                   f"cannot use {directory}"):
        yield


@contextlib.contextmanager
def _scratch() -> Iterator[Path]:
    """The rings' directory in /dev/shm (named as a run's worker directory, so a killed monitor's is reaped)."""
    root = SHM if SHM.is_dir() else Path(tempfile.gettempdir())
    path = Path(tempfile.mkdtemp(prefix=f"latscope-work-{os.getpid()}-", dir=root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class _RingView:
    """The controller's numpy view of a ring file."""

    def __init__(self, path: Path, columns: tuple[str, ...], slots: int) -> None:
        self.slots, self.mask = slots, slots - 1
        mm = np.memmap(path, dtype=np.int64, mode="r+")
        self.header = mm[:R.HEADER_SLOTS]
        self.cols = {name: mm[R.HEADER_SLOTS + i * slots:R.HEADER_SLOTS + (i + 1) * slots]
                     for i, name in enumerate(columns)}

    def take(self, a: int, b: int) -> dict[str, np.ndarray]:
        """Copies of slots for seqs [a, b) (not across the ring's end), then reset to MISSING / 0."""
        lo, hi = a & self.mask, ((b - 1) & self.mask) + 1
        out = {}
        for name, col in self.cols.items():
            out[name] = col[lo:hi].copy()
            col[lo:hi] = 0 if name == "flags" else MISSING
        return out


class Monitor:
    """The controller of one monitor: start, poll and hand over until stopped, finish the open file."""

    def __init__(self, cfg: MonitorConfig, log: Log) -> None:
        self.cfg = cfg
        self.log = log
        m = cfg.measure
        self.period = m.period_ns
        self.stream = m.stream & 0x7FFFFFFF
        self.run_id = new_run_id()
        self.slots = ring_slots(self.period)
        self.lag = max(1, HAND_OVER_NS // self.period)
        self.metrics = MetricsState({"host": cfg.host, "stream": str(self.stream)})
        self.interval: _Interval | None = None
        self.files = 0
        self.next_seq = 0
        self.first_seq = 0
        self.base_ns = 0
        self.foreign_seen = 0
        self.late_seen = 0
        self.notes: list[str] = []
        self._last_steal = 0.0

    # -- the whole run -------------------------------------------------------------------------

    def run(self) -> MonitorOutcome:
        cfg = self.cfg
        if cfg.measure.topology in UNSUPPORTED or cfg.measure.topology.startswith("vm"):
            raise ConfigError(f"monitor measures on a topology it builds on this host, not {cfg.measure.topology!r}")
        if cfg.interval_ns < 10 * self.period or cfg.interval_ns < 1_000_000_000:
            raise ConfigError("--interval must be at least 1s and at least 10 periods")
        with _lock(cfg.directory, cfg.host, self.stream):
            for note in reap(None).notes():
                self._note(note)
            for p in reap_temporaries(cfg.directory, cfg.host):
                self._note(f"removed the unfinished file {p} of a monitor that was killed")
            tail = last_stored(cfg.directory, cfg.host, self.stream)
            self.first_seq = self.next_seq = tail.last_seq + 1 if tail is not None else 0
            if tail is not None:
                self._note(f"continuing stream {self.stream} at seq {self.first_seq} "
                           f"(the last stored is in {tail.path})")
            server = None
            if cfg.metrics_port is not None:
                try:
                    server = serve(self.metrics, cfg.metrics_port, cfg.metrics_addr)
                except OSError as exc:
                    raise ConfigError(f"--metrics-port {cfg.metrics_port} on {cfg.metrics_addr}: "
                                      f"{reason(exc)}") from None
            try:
                reason_ = self._measure()
            finally:
                if server is not None:
                    server.shutdown()
                    server.server_close()
        return MonitorOutcome(self.run_id, self.files, self.first_seq, self.next_seq, reason_, tuple(self.notes))

    def _measure(self) -> str:
        cfg, m = self.cfg, self.cfg.measure
        self._clock()
        self.metrics.update(up_since_s=time.time())
        with controller.StopRequest() as stop, open_topology(m.topology) as topo, _scratch() as work:
            if topo.guest is not None or topo.kind in UNSUPPORTED:
                raise ConfigError(f"monitor cannot measure on topology {m.topology!r}")
            tx_ep, rx_ep = endpoints(m, topo)
            s_path, r_path = work / "sender.ring", work / "receiver.ring"
            R.create_ring(str(s_path), R.SENDER_COLUMNS, self.slots)
            R.create_ring(str(r_path), R.RECEIVER_COLUMNS, self.slots)
            sring = _RingView(s_path, R.SENDER_COLUMNS, self.slots)
            rring = _RingView(r_path, R.RECEIVER_COLUMNS, self.slots)
            for ring in (sring, rring):
                ring.header[R.H_WATERMARK] = self.first_seq
            send = replace(sender_spec(m, tx_ep, netns=topo.sender.netns, run_id=self.run_id),
                           ring=str(s_path), ring_slots=self.slots, first_seq=self.first_seq, count=1)
            recv = ReceiverSpec(listen=rx_ep, stream=self.stream, count=None, nonce=send.nonce, cpu=m.cpu_recv,
                                prio=m.prio_recv, mlock=m.mlock, netns=topo.receiver.netns,
                                idle_timeout_ns=ENDLESS, first_timeout_ns=0, hw_timestamps=m.hw_timestamps,
                                key_file=m.key_file, ring=str(r_path), ring_slots=self.slots)
            progress = controller.progress_file(work)
            workers: list[controller.Worker] = []
            try:
                rx = controller.spawn("receiver", recv, work, progress)
                workers.append(rx)
                port = rx.wait_ready(20.0)
                if port and send.dest.port != port:
                    send = replace(send, dest=replace(send.dest, port=port))
                tx = controller.spawn("sender", send, work, progress)
                workers.append(tx)
                self.log(f"monitoring stream {self.stream} on {m.topology} every {self.period} ns into "
                         f"{cfg.directory} (run {self.run_id}, from seq {self.first_seq})")
                why = self._loop(stop, tx, rx, sring, rring)
                self._finish(stop, tx, rx, sring, rring)
            except BaseException:
                if self.interval is not None:
                    self.interval.writer.abort()
                    self.interval = None
                raise
            finally:
                for w in workers:
                    w.kill()
            testhooks.hold("monitor-stored")
            return why

    def _note(self, text: str) -> None:
        self.notes.append(text)
        self.log(text)

    # -- polling and handing over ---------------------------------------------------------------

    def _loop(self, stop: controller.StopRequest, tx: controller.Worker, rx: controller.Worker,
              sring: _RingView, rring: _RingView) -> str:
        pending = self.first_seq
        while True:
            if stop.requested:
                stop.act()
                return f"stopped by {stop.name}"
            for w in (tx, rx):
                if not w.alive():
                    _arrays, info = controller.collect_half(w)
                    raise CaptureError(f"the {w.role} ended: "
                                       + (info.get("error") or info.get("died") or "without being asked"))
            self._hand_over(pending, sring, rring)
            done = max(int(sring.header[R.H_DONE]), self.first_seq)
            if done - self.next_seq > self.slots - self.lag:
                raise CaptureError(f"the monitor fell {done - self.next_seq} packets behind its ring of "
                                   f"{self.slots}: slots were overwritten before they were stored")
            pending = max(self.next_seq, done - self.lag)
            # The workers refuse what is below the watermark from now on; the slots are copied next poll.
            sring.header[R.H_WATERMARK] = pending
            rring.header[R.H_WATERMARK] = pending
            self._steal()
            time.sleep(POLL_S)

    def _finish(self, stop: controller.StopRequest, tx: controller.Worker, rx: controller.Worker,
                sring: _RingView, rring: _RingView) -> None:
        """Stop the sender, give its last packets HAND_OVER_NS to arrive, stop the receiver, store the rest."""
        tx.signal(signal.SIGTERM)
        tx.wait(5.0)
        deadline = time.monotonic() + HAND_OVER_NS / 1e9
        while time.monotonic() < deadline and rx.alive():
            time.sleep(0.05)
        rx.signal(signal.SIGTERM)
        rx.wait(5.0)
        for w in (tx, rx):
            w.kill()
        done = max(int(sring.header[R.H_DONE]), self.first_seq)
        self._hand_over(done, sring, rring)
        if self.interval is not None:
            self._close_interval(partial=True, rring=rring)

    def _hand_over(self, until: int, sring: _RingView, rring: _RingView) -> None:
        """Store every seq below ``until`` not stored yet, interval by interval."""
        if until <= self.next_seq:
            return
        if not self.base_ns:
            self.base_ns = int(sring.header[R.H_BASE_TIME])
            if not self.base_ns:
                return
        while self.next_seq < until:
            a = self.next_seq
            sched_a = self.base_ns + (a - self.first_seq) * self.period
            iv_start = sched_a // self.cfg.interval_ns * self.cfg.interval_ns
            iv_end = iv_start + self.cfg.interval_ns
            end_seq = self.first_seq + -(-(iv_end - self.base_ns) // self.period)
            b = min(until, end_seq, a + self.slots - (a & (self.slots - 1)))
            if self.interval is None:
                path = samples_path(self.cfg.directory, self.cfg.host, iv_start, self.stream, a)
                self.interval = _Interval(iv_start, iv_end, SamplesWriter(path, self.run_id), a)
            self._store(a, b, sring.take(a, b), rring.take(a, b))
            self.next_seq = b
            if b == end_seq:
                self._close_interval(partial=False, rring=rring)

    def _store(self, a: int, b: int, s_arr: dict[str, np.ndarray], r_arr: dict[str, np.ndarray]) -> None:
        iv = self.interval
        assert iv is not None
        cols, _counts = merge.merge(s_arr, r_arr, {}, self.stream)
        cols["seq"] = cols["seq"] + a
        iv.writer.add(cols)
        flags = cols["flags"]
        rx = np.where(cols["rx_hw_ns"] != MISSING, cols["rx_hw_ns"], cols["rx_sw_ns"])
        ok = (rx != MISSING) & (cols["send_ns"] != MISSING)
        lat = rx[ok] - cols["send_ns"][ok]
        iv.dist.add(lat)
        counts = {
            "packets_sent": int(np.count_nonzero((flags & FLAG_SEND_FAILED) == 0)),
            "packets_received": int(np.count_nonzero(cols["rx_user_ns"] != MISSING)),
            "packets_lost": int(np.count_nonzero(flags & FLAG_LOST)),
            "packets_reordered": int(np.count_nonzero(flags & FLAG_REORDERED)),
            "packets_duplicated": int(np.count_nonzero(flags & FLAG_DUPLICATE)),
            "send_failed": int(np.count_nonzero(flags & FLAG_SEND_FAILED)),
        }
        iv.packets += b - a
        iv.sent += counts["packets_sent"]
        iv.received += counts["packets_received"]
        iv.lost += counts["packets_lost"]
        iv.reordered += counts["packets_reordered"]
        iv.duplicates += counts["packets_duplicated"]
        sched = cols["sched_ns"]
        if iv.first_sched_ns is None:
            iv.first_sched_ns = int(sched[0])
        iv.last_sched_ns = int(sched[-1])
        self.metrics.add_block(prometheus_counts(lat), int(lat.sum()) if len(lat) else 0, counts)

    def _close_interval(self, *, partial: bool, rring: _RingView) -> None:
        iv = self.interval
        assert iv is not None
        self.interval = None
        iv.writer.commit()
        self.files += 1
        foreign, late = int(rring.header[R.H_FOREIGN]), int(rring.header[R.H_LATE])
        d_foreign, d_late = foreign - self.foreign_seen, late - self.late_seen
        self.foreign_seen, self.late_seen = foreign, late
        self.metrics.add_block(_no_buckets(), 0,
                               {"packets_foreign": d_foreign, "packets_late": d_late})
        start = max(iv.start_ns, iv.first_sched_ns or iv.start_ns)
        end = min(iv.end_ns, (iv.last_sched_ns or iv.start_ns) + self.period) if partial else iv.end_ns
        d = iv.dist
        pct = {q: d.percentile(v) for q, v in (("p50", 50), ("p90", 90), ("p99", 99), ("p999", 99.9),
                                                ("p9999", 99.99))}
        row = {"run_id": self.run_id, "stream": self.stream, "interval_start_ns": start, "interval_end_ns": end,
               "first_seq": iv.first_seq, "last_seq": iv.first_seq + iv.packets - 1, "packets": iv.packets,
               "received": iv.received, "lost": iv.lost, "reordered": iv.reordered, "duplicates": iv.duplicates,
               "foreign": d_foreign, "late": d_late, "p50_ns": pct["p50"], "p99_ns": pct["p99"],
               "p999_ns": pct["p999"], "max_ns": d.max_ns}
        write_interval_row(intervals_path(self.cfg.directory, self.cfg.host, iv.start_ns, self.stream,
                                          iv.first_seq), row)
        self.metrics.update(interval={**{k: _s(pct[k]) for k in ("p50", "p99", "p999")}, "max": _s(d.max_ns),
                                      "end": end / 1e9}, files=self.files)

        def us(v: int | None) -> float | None:
            return None if v is None else v / 1000.0

        summary = {"packets": {"sent": iv.sent, "lost": iv.lost},
                   "latency_us": {**{k: us(v) for k, v in pct.items()}, "max": us(d.max_ns), "min": us(d.min_ns),
                                  "avg": d.total_ns / d.n / 1000.0 if d.n else None}}
        verdicts = judge(list(self.cfg.limits), summary)
        limits = {}
        for v in verdicts:
            actual = math.nan if v.actual is None else (v.actual / 1e6 if v.limit.unit == "us" else v.actual)
            limits[v.limit.text] = (actual, v.limit.value, not v.ok)
            if not v.ok:
                shown = "no data" if v.actual is None else f"{v.actual:.3f} {v.limit.unit}"
                self.log(f"limit broken: --max {v.limit.text} in the interval from seq {iv.first_seq}: {shown}")
        self.metrics.update(limits=limits)
        p999 = "-" if pct["p999"] is None else f"{pct['p999'] / 1000:.3f}"
        self.log(f"stored {iv.writer.path.relative_to(self.cfg.directory)}: {iv.packets} packets, "
                 f"lost {iv.lost}, p99.9 {p999} us")
        self._clock()

    # -- environment figures ----------------------------------------------------------------------

    def _clock(self) -> None:
        doc = check_host()
        bound = doc.get("bound_ns")
        self.metrics.update(clock_synchronised=0.0 if bound is None else 1.0,
                            clock_bound_s=math.nan if bound is None else bound / 1e9)

    def _steal(self) -> None:
        now = time.monotonic()
        if now - self._last_steal < STEAL_EVERY_S:
            return
        self._last_steal = now
        try:
            steal = read_steal()
        except (OSError, ValueError, IndexError):
            return
        self.metrics.update(steal_s={cpu: ns / 1e9 for cpu, ns in steal.items()})


def _no_buckets() -> np.ndarray:
    from latscope.monitor.histogram import PROM_BOUNDS_NS

    return np.zeros(len(PROM_BOUNDS_NS) + 1, np.int64)


def _s(ns: int | None) -> float:
    return math.nan if ns is None else ns / 1e9


def run_monitor(cfg: MonitorConfig, log: Log) -> MonitorOutcome:
    """Monitor until a stop signal; the outcome (files committed, seqs stored)."""
    return Monitor(cfg, log).run()


__all__ = ["HAND_OVER_NS", "MonitorConfig", "MonitorOutcome", "memory_bound_bytes", "ring_slots", "run_monitor"]
