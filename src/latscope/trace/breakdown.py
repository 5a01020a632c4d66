"""The breakdown of a run (or of a trace someone captured): late packets, their stages, culprits.

Pure functions from an EventTable (and the run's samples when there is a
run) to a ``Breakdown`` record; reading files is in ``load_*``, rendering
in latscope.trace.report and latscope.trace.perfetto.

Which packets are late is decided on one metric (``--metric``):

* ``e2e`` (default): rx_user_ns - sched_ns, from the scheduled send time to
  the receiver holding the packet in user space. It is the only one of the
  run's metrics that contains every stage, so a task that keeps the
  receiver off its CPU makes packets late in it; ``latency`` (rx_best -
  send_ns) ends at the kernel's receive timestamp and cannot see that.
* ``latency``: the run's headline metric, for delays on the path itself.
* ``trace``: receiver marker minus sender marker, for traces without a run.
"""

from __future__ import annotations

import gzip
import lzma
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latscope.env.steal import STEAL_FILE, StealSeries, read_series
from latscope.errors import ConfigError, FormatError, TraceError
from latscope.files import open_regular, reason
from latscope.store.samples import MISSING, Samples
from latscope.trace import attribution as attr
from latscope.trace import model
from latscope.trace.model import Timeline
from latscope.trace.stagemodel import StageModel
from latscope.trace.stages import (
    ONE_HOST,
    Packets,
    by_send_calls,
    locate,
    markers,
    trace_pids,
)
from latscope.trace.table import EventTable, read_table

METRICS = ("e2e", "latency", "trace")
#: Events without which packets cannot be followed (any one of each group will do).
NEEDED = (("sched_switch",), ("sched_waking",), ("sys_enter_sendto", "sys_enter_sendmsg"),
          ("sys_exit_recvmsg", "sys_exit_recvfrom"), ("net_dev_queue",), ("netif_receive_skb",), ("sk_data_ready",))
MAX_EXPLAINED = 5000


@dataclass(frozen=True)
class Options:
    metric: str = "e2e"
    threshold_ns: int | None = None
    sender_pid: int | None = None
    receiver_pid: int | None = None
    top: int = 10


@dataclass(frozen=True)
class Breakdown:
    """Everything a breakdown report shows."""

    metric: str
    threshold_ns: float
    threshold_source: str
    packets: int
    traced: int
    late_count: int
    late_untraced: int
    late: tuple[attr.LatePacket, ...]
    baselines: tuple[attr.Baseline, ...]
    culprits: tuple[attr.Ranked, ...]
    dominant: dict[str, int]
    collateral: int
    sender_pid: int
    receiver_pid: int
    trace: dict[str, Any]
    warnings: tuple[str, ...] = ()
    run_id: str | None = None
    timeline: model.Timeline | None = field(default=None, repr=False, compare=False)
    packets_detail: Packets | None = field(default=None, repr=False, compare=False)
    #: The path's stages (one host, or across a hypervisor: latscope.trace.vmpath).
    model: StageModel = ONE_HOST
    #: Across a hypervisor: direction, QEMU's threads, the guest trace and its clock mapping.
    vm: dict[str, Any] | None = None
    guest_timeline: Timeline | None = field(default=None, repr=False, compare=False)


# -- loading --------------------------------------------------------------

def load_run_table(run_path: Path, recorded: dict[str, Any] | None = None) -> EventTable:
    """A run's parsed trace (trace/events.parquet), decoded again from trace/ring.zst (or parsed again
    from an older run's trace/trace.txt.zst) if need be.

    ``recorded`` is the run.json ``trace`` record, whose error (if storing the trace failed) is quoted.
    """
    tdir = run_path / "trace"
    table_path = tdir / "events.parquet"
    if table_path.exists():
        try:
            return read_table(table_path)
        except FormatError:
            if not (tdir / "trace.txt.zst").exists() and not (tdir / "ring.zst").exists():
                raise
    if (tdir / "ring.zst").exists() and (tdir / "ring.json").exists():
        from latscope.trace.capture import load_ring

        return load_ring(tdir)
    for name in ("trace.txt.zst", "trace.txt"):
        if (tdir / name).exists():
            # Files of the store are read only when regular (a FIFO would hang the read).
            try:
                fh, _size = open_regular(tdir / name)
            except OSError as exc:
                raise FormatError(f"{tdir / name}: cannot read ({reason(exc)})") from None
            fh.close()
            return load_trace_file(tdir / name)
    if recorded and recorded.get("error"):
        raise TraceError(f"run {run_path.name} was traced but its trace could not be stored: {recorded['error']}")
    raise TraceError(f"run {run_path.name} has no kernel trace: record one with `latscope run --trace`, "
                     f"or pass a trace you captured with --trace FILE")


def load_trace_file(path: Path) -> EventTable:
    """A trace text file: the kernel's format or trace-cmd report output (plain, .gz, .xz or .zst)."""
    from latscope.trace.parse_text import parse_kernel_text
    from latscope.trace.parse_tracecmd import parse_tracecmd_report

    data = read_maybe_compressed(path)
    fmt = detect_format(data[:1 << 16])
    meta = {"source": str(path)}
    if fmt == "trace-cmd":
        return parse_tracecmd_report(data, meta=meta)
    if fmt == "ftrace-text":
        return parse_kernel_text(data, meta=meta)
    if fmt == "empty":
        return parse_kernel_text(b"", meta=meta)
    raise FormatError(f"{path}: not a kernel trace in text form (expected the tracefs `trace` file or "
                      f"`trace-cmd report` output; a binary trace.dat must go through `trace-cmd report` first)")


def read_maybe_compressed(path: Path) -> bytes:
    try:
        head = path.open("rb").read(6)
        if head.startswith(b"\x28\xb5\x2f\xfd"):
            import pyarrow as pa

            with pa.input_stream(str(path), compression="zstd") as fh:
                return fh.read()
        if head.startswith(b"\x1f\x8b"):
            return gzip.decompress(path.read_bytes())
        if head.startswith(b"\xfd7zXZ"):
            return lzma.decompress(path.read_bytes())
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise FormatError(f"{path}: cannot read ({exc})") from None


def detect_format(head: bytes) -> str:
    """ftrace-text, trace-cmd, empty or unknown, from the first lines."""
    if b"\0" in head[:4096] or head.startswith(b"\x17\x08\x44tracing"):
        return "unknown"
    text = head.decode("utf-8", "replace")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or all(ln.startswith("#") for ln in lines):
        return "empty"
    if lines[0].startswith(("cpus=", "version =")):
        return "trace-cmd"
    import re

    event = re.compile(r"-\d+\s+\[\d+\]\s+(\S{4,6}\s+)?\d+(\.\d+)?: ")
    for ln in lines[:200]:
        if ln.startswith("#") or not event.search(ln):
            continue
        if re.search(r"\]\s+[^\s\d]\S{3,5}\s+\d+(\.\d+)?: ", ln):
            return "ftrace-text"
        return "trace-cmd"
    return "unknown"


# -- analysis -------------------------------------------------------------

def round_trip(config: dict[str, Any]) -> str | None:
    """Why a run of ``config`` (run.json's) cannot be broken down from its markers, or None."""
    if config.get("mode") == "rtt":
        return ("a round trip (--mode rtt): its probes write no per-packet trace markers, so the breakdown "
                "cannot follow its packets")
    return None


def load_run_steal(run_path: Path) -> StealSeries | None:
    """The run's host steal series (steal.parquet), None for runs recorded without one."""
    path = run_path / STEAL_FILE
    if not path.exists():
        return None
    return read_series(path)


def analyse_run(run_path: Path, recorded: dict[str, Any] | None, samples: Samples | None,
                options: Options = Options(), *, run_id: str | None = None, overruns: int | None = None,
                steal: StealSeries | None = None, whole: bool = False) -> Breakdown:
    """The breakdown of a stored run's own trace: ``analyse`` of its events.

    Unless ``whole``, a run whose events.parquet has markers and a recorded
    clock offset is read by windows (latscope.trace.window): the rows that
    locate every packet and those around the late packets, which the run's
    samples name before the trace is read. The result is that of the whole
    table; when a late packet's checkpoints turn out to lie outside its
    window, the whole table is read instead.
    """
    table_path = run_path / "trace" / "events.parquet"
    if not whole and samples is not None and len(samples) and options.metric in ("e2e", "latency") \
            and table_path.exists():
        bd = _analyse_windows(table_path, samples, options, run_id=run_id, overruns=overruns, steal=steal)
        if bd is not None:
            return bd
    table = load_run_table(run_path, recorded)
    return analyse(table, samples, options, run_id=run_id, overruns=overruns, steal=steal)


def _analyse_windows(path: Path, samples: Samples, options: Options, *, run_id: str | None,
                     overruns: int | None, steal: StealSeries | None) -> Breakdown | None:
    """``analyse`` of only the rows the breakdown needs; None when the table cannot be read that way."""
    from latscope.trace import window

    try:
        sc = window.scan(path)
    except FormatError:
        return None  # load_run_table decides: decode the ring again, or say what is wrong
    off = sc.meta.get("to_realtime_ns")
    s_pid, r_pid = sc.marker_pids()
    sender = options.sender_pid if options.sender_pid is not None else s_pid
    receiver = options.receiver_pid if options.receiver_pid is not None else r_pid
    if off is None or len(sc) == 0 or s_pid < 0 or sender < 0 or receiver < 0:
        return None
    values = _metric_values(samples, options.metric)
    valid = ~np.isnan(values)
    threshold, _source = _threshold(values[valid], options.threshold_ns)
    late = np.flatnonzero(valid & (values > threshold))
    bounds = window.packet_windows(samples, late, -int(off))
    if bounds is None:
        return None
    lo, hi = bounds
    bd = analyse(sc.read(sc.path_rows(sender, receiver) | sc.window_rows(lo, hi)), samples, options, run_id=run_id, overruns=overruns, steal=steal)
    pk = bd.packets_detail
    if pk is None or len(pk) != len(samples):
        return None
    # Every late packet that could be explained (traced; packets are the samples' rows, in order) has its
    # checkpoints inside its window, with the margin the lookups need; the explained ones are among them.
    traced = (pk.rows[late, 2] >= 0) & (pk.rows[late, 11] >= 0)
    if not window.covers(lo[traced] + int(off), hi[traced] + int(off), pk.times[late][traced]):
        return None
    return bd


def _metric_values(samples: Samples, metric: str) -> np.ndarray:
    """The run's metric per packet (NaN where it has none): what late is judged on."""
    if metric == "latency":
        from latscope.analysis.metrics import latency

        return latency(samples)
    from latscope.analysis.metrics import e2e

    return e2e(samples)


def analyse(table: EventTable, samples: Samples | None = None, options: Options = Options(), *,
            run_id: str | None = None, overruns: int | None = None, steal: StealSeries | None = None) -> Breakdown:
    """Break the late packets of a trace (and run) down into stages and culprits.

    ``steal``: the run's host steal series; with it, silent gaps are named ``hypervisor (steal)`` or
    ``unexplained gap`` (latscope.trace.attribution).
    """
    if options.metric not in METRICS:
        raise ConfigError(f"--metric must be one of {', '.join(METRICS)}")
    warnings: list[str] = list(table.meta.get("warnings", []))
    if len(table) == 0:
        raise TraceError("the trace is empty: no events were recorded (was tracing on during the run?)")
    table, mapping = _to_probe_clock(table, samples, warnings)
    tl = model.build(table)
    s_pid, r_pid = trace_pids(tl)
    sender = options.sender_pid if options.sender_pid is not None else s_pid
    receiver = options.receiver_pid if options.receiver_pid is not None else r_pid
    if sender < 0 or receiver < 0:
        raise TraceError("the trace has no latscope markers; give --packet-pid PID (the sender) and "
                         "--receiver-pid PID, or record with `latscope run --trace`, whose sender and receiver "
                         "write one marker per packet")
    probe: dict[str, np.ndarray] = {}
    if _has_tx_markers(tl):
        seq, probe, values, metric = _packets(tl, samples, options.metric, warnings)
        pk = locate(tl, seq, probe, sender, receiver)
    else:
        # no markers: every send call of the sender is a packet, judged from send call to receive return
        seq, stand_in, probe = by_send_calls(tl, sender)
        pk = locate(tl, seq, probe, sender, receiver, txm=stand_in)
        values = (pk.times[:, 12] - pk.times[:, 0]).astype(np.float64)
        values[(pk.times[:, 12] == MISSING) | (pk.times[:, 0] == MISSING)] = np.nan
        metric = "trace"
        warnings.append("no latscope markers: each send call of the sender is a packet, measured from the call "
                        "to the receiver's return from its receive call")
    durations = pk.durations()
    spans = metric_spans(probe)
    if spans is not None:
        durations = attr.clip_to_spans(pk.times, durations, spans)
    traced = (pk.rows[:, 2] >= 0) & (pk.rows[:, 11] >= 0)
    valid = ~np.isnan(values)
    threshold, source = _threshold(values[valid], options.threshold_ns)
    late = valid & (values > threshold)
    normal = valid & ~late & traced
    present = pk.times[:, 1:] != MISSING
    base = attr.baselines(durations, normal, present, clipped=spans is not None)
    late_idx = np.flatnonzero(late & traced)
    late_idx = late_idx[np.argsort(-values[late_idx], kind="stable")]
    if len(late_idx) > MAX_EXPLAINED:
        warnings.append(f"{len(late_idx)} late packets: the {MAX_EXPLAINED} worst are broken down")
        late_idx = late_idx[:MAX_EXPLAINED]
    explained = [attr.explain(tl, pk, int(i), float(values[i]), durations, base, steal=steal,
                              span=span_at(spans, int(i))) for i in late_idx]
    subset = table.meta.get("subset")
    names = set(subset["event_names"] if subset else table.event_names)
    missing = [" or ".join(group) for group in NEEDED if all(e not in names for e in group)]
    if missing:
        warnings.append(f"the trace has no {', '.join(missing)} events: packets cannot be followed through "
                        "every stage (record with latscope's default events)")
    untraced = int((late & ~traced).sum())
    if untraced:
        warnings.append(f"{untraced} late packets are not (fully) in the trace and are not broken down")
    info = trace_info(table, tl, mapping, overruns, warnings)
    info["host_steal"] = None if steal is None else {
        "samples": len(steal), "resolution_ns": steal.resolution_ns,
        "covers_trace": bool(len(steal) and steal.ts_ns[0] <= tl.start_ns and steal.ts_ns[-1] >= tl.end_ns)}
    dominant = Counter(p.dominant_stage for p in explained)
    return Breakdown(
        metric=metric, threshold_ns=float(threshold), threshold_source=source, packets=int(valid.sum()),
        traced=int(traced.sum()), late_count=int(late.sum()), late_untraced=untraced, late=tuple(explained),
        baselines=tuple(base), culprits=tuple(attr.rank(explained)),
        dominant=dict(dominant.most_common()), collateral=int(sum(p.collateral_of is not None for p in explained)),
        sender_pid=sender, receiver_pid=receiver, trace=info, warnings=tuple(warnings), run_id=run_id,
        timeline=tl, packets_detail=pk,
    )


def trace_info(table: EventTable, tl: model.Timeline, mapping: str, overruns: int | None,
               warnings: list[str], what: str = "the trace") -> dict[str, Any]:
    """The breakdown's ``trace`` facts; lost and unreadable events added to ``warnings``."""
    lost = int(overruns if overruns is not None else table.meta.get("overruns", 0) or 0)
    parse = table.meta.get("parse", {})
    lost_events = int(parse.get("lost_events_total", 0)) + int(parse.get("overwritten", 0))
    if lost or lost_events:
        warnings.append(f"{what} lost events ({max(lost, lost_events)} overwritten or dropped): stages next to "
                        "the losses may be missing and culprits there undercounted")
    if parse.get("unparsed"):
        warnings.append(f"{parse['unparsed']} lines of {what} could not be read (first at line "
                        f"{(parse.get('unparsed_examples') or [{}])[0].get('line', '?')})")
    if parse.get("garbled_fields"):
        warnings.append(f"{parse['garbled_fields']} events of {what} had unreadable arguments")
    # read by windows (latscope.trace.window): the whole table's figures, not those of the rows read
    subset = table.meta.get("subset")
    return {
        "events": subset["events"] if subset else len(table), "cpus": tl.ncpu, "span_s": round((tl.end_ns - tl.start_ns) / 1e9, 6),
        "format": table.meta.get("format"), "clock": table.meta.get("clock"), "clock_mapping": mapping,
        "overruns": max(lost, lost_events), "lost_events": lost_events,
        "ts_resolution_ns": table.meta.get("ts_resolution_ns"), "source": table.meta.get("source"),
        "event_counts": subset["event_counts"] if subset else table.counts(),
    }


def _has_tx_markers(tl: model.Timeline) -> bool:
    return len(markers(tl, "tx")[0]) > 0


def _to_probe_clock(table: EventTable, samples: Samples | None, warnings: list[str]) -> tuple[EventTable, str]:
    """Shift trace time onto the probe's CLOCK_REALTIME."""
    off = table.meta.get("to_realtime_ns")
    if off is not None:
        return table.shifted(int(off)), str(table.meta.get("clock_mapping", "recorded"))
    if samples is None or len(samples) == 0:
        return table, "none (trace only)"
    tl = model.build(table)
    seq, rows = markers(tl, "tx")
    if len(seq):
        send = samples["send_ns"]
        sseq = samples["seq"]
        pos = np.searchsorted(sseq, seq)
        ok = (pos < len(sseq)) & (sseq[np.minimum(pos, len(sseq) - 1)] == seq)
        pos, rows = pos[ok], rows[ok]
        good = send[pos] != MISSING
        if good.any():
            # the marker is written just before send_ns is read: the smallest gap is the clock offset
            off = int(np.min(send[pos][good] - table.ts[rows][good]))
            warnings.append("trace time mapped onto the run by its markers (no recorded clock offset): stage "
                            "times next to the probe's own timestamps are good to a few microseconds")
            return table.shifted(off), "estimated from markers"
    warnings.append("the trace cannot be aligned with the run (no markers): using the trace alone")
    return table, "none"


def _packets(tl: model.Timeline, samples: Samples | None, metric: str,
             warnings: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray, str]:
    """(seq, probe columns aligned with seq, metric value per packet, metric actually used)."""
    tx_seq, tx_rows = markers(tl, "tx")
    rx_seq, rx_rows = markers(tl, "rx")
    t = tl.table
    if samples is not None and len(samples):
        seq = samples["seq"].astype(np.int64)
        probe = {k: samples[k] for k in ("sched_ns", "wake_ns", "rx_user_ns")}
        if metric == "trace":
            values = _marker_metric(seq, tx_seq, tx_rows, rx_seq, rx_rows, t)
        else:
            values = _metric_values(samples, metric)
        if metric == "latency":
            from latscope.analysis.metrics import rx_best

            probe["span_start"], probe["span_end"] = samples["send_ns"], rx_best(samples)
        return seq, probe, values, metric
    if metric != "trace":
        warnings.append(f"no run samples: late packets are judged on the markers (metric 'trace'), not {metric}")
    seq = np.union1d(tx_seq, rx_seq).astype(np.int64)
    values = _marker_metric(seq, tx_seq, tx_rows, rx_seq, rx_rows, t)
    tx_t = _at(seq, tx_seq, t.ts[tx_rows] if len(tx_rows) else np.zeros(0, np.int64))
    rx_t = _at(seq, rx_seq, t.ts[rx_rows] if len(rx_rows) else np.zeros(0, np.int64))
    return seq, {"sched_ns": tx_t, "wake_ns": tx_t, "rx_user_ns": rx_t}, values, "trace"


def metric_spans(probe: dict[str, np.ndarray]) -> np.ndarray | None:
    """(n, 2) start and end of each packet's metric where it covers only part of the path (``latency``)."""
    if "span_start" not in probe:
        return None
    return np.column_stack([np.asarray(probe["span_start"], np.int64), np.asarray(probe["span_end"], np.int64)])


def span_at(spans: np.ndarray | None, i: int) -> tuple[int, int] | None:
    """Packet ``i``'s span from ``metric_spans``, None without one."""
    if spans is None or spans[i, 0] == MISSING or spans[i, 1] == MISSING:
        return None
    return int(spans[i, 0]), int(spans[i, 1])


def _at(seq: np.ndarray, keys: np.ndarray, vals: np.ndarray) -> np.ndarray:
    out = np.full(len(seq), MISSING, np.int64)
    if len(keys) == 0:
        return out
    pos = np.searchsorted(keys, seq)
    ok = (pos < len(keys)) & (keys[np.minimum(pos, len(keys) - 1)] == seq)
    out[ok] = vals[pos[ok]]
    return out


def _marker_metric(seq, tx_seq, tx_rows, rx_seq, rx_rows, t) -> np.ndarray:
    tx = _at(seq, tx_seq, t.ts[tx_rows] if len(tx_rows) else np.zeros(0, np.int64))
    rx = _at(seq, rx_seq, t.ts[rx_rows] if len(rx_rows) else np.zeros(0, np.int64))
    ok = (tx != MISSING) & (rx != MISSING)
    out = np.full(len(seq), np.nan)
    out[ok] = (rx[ok] - tx[ok]).astype(np.float64)
    return out


def _threshold(values: np.ndarray, given: int | None) -> tuple[float, str]:
    if given is not None:
        return float(given), "--threshold"
    if len(values) == 0:
        return float("inf"), "p99"
    return float(np.percentile(values, 99)), "p99"

