"""`latscope run`: sender and receiver across a topology, one command, one stored run."""

from __future__ import annotations

import math
import os
import time

import click

from latscope.cli.common import (
    DURATION,
    INT_OR_HEX,
    NAME,
    TAG,
    check_memory,
    emit_json,
    json_option,
    results_option,
    store_from,
    tag_list,
    warn,
)
from latscope.cli.progress import packet_progress
from latscope.errors import ConfigError, PrivilegeError
from latscope.privileges import CAP_SYS_ADMIN, can_build_namespaces, effective_caps
from latscope.probe.config import MAX_CPU_DMA_LATENCY_US, MeasureConfig
from latscope.probe.spec import DEFAULT_ETHERTYPE, DEFAULT_PORT
from latscope.report.document import run_document
from latscope.report.text import summary_text
from latscope.safetext import quote

#: Memory a run holds per packet at its peak: both halves' columns, the merged columns and the summary's copies.
RUN_BYTES_PER_PACKET = 600
CAP_DAC_OVERRIDE = 1


def probe_options(f):
    """Options of the packet stream, shared by `run` and `send`."""
    for opt in reversed([
        click.option("--period", type=DURATION, default="1ms", show_default=True, help="Interval between packets."),
        click.option("--count", type=click.IntRange(1), default=None, help="Packets to send [default: 60000]."),
        click.option("--duration", type=DURATION, default=None, help="Run length instead of --count (60s, 5m)."),
        click.option("--size", type=click.IntRange(1), default=64, show_default=True,
                     help="Payload bytes (UDP payload or Ethernet payload; at least 64)."),
        click.option("--spin", type=DURATION, default="0", help="Busy-wait this long before each deadline (50us)."),
        click.option("--base-time", "base_time", default=None,
                     help="Absolute start (CLOCK_REALTIME seconds, e.g. 1795605691.5); default: next whole period."),
        click.option("--ipv6", is_flag=True, help="UDP over IPv6."),
        click.option("--l2", is_flag=True, help="Raw Ethernet frames (AF_PACKET) instead of UDP."),
        click.option("--ethertype", type=INT_OR_HEX, default=DEFAULT_ETHERTYPE, show_default="0x88b5",
                     help="EtherType of --l2 frames."),
        click.option("--vid", type=int, default=None, help="802.1Q VLAN id of --l2 frames."),
        click.option("--pcp", type=int, default=None, help="802.1Q priority (PCP) of --l2 frames."),
        click.option("--port", type=int, default=None,
                     help=f"UDP port [default: {DEFAULT_PORT}; any free port on loopback]."),
        click.option("--tos", type=INT_OR_HEX, default=None, help="IP TOS / traffic class byte."),
        click.option("--so-priority", "so_priority", type=int, default=None, help="SO_PRIORITY of the socket."),
        click.option("--txtime", type=DURATION, default=None,
                     help="SO_TXTIME launch time = scheduled time + this offset (needs the ETF qdisc)."),
        click.option("--no-mlock", "no_mlock", is_flag=True, help="Do not lock memory (mlockall)."),
        click.option("--no-hw-timestamps", "no_hw", is_flag=True,
                     help="Leave NICs' hardware timestamping alone (default: switch it on where a device has it)."),
        click.option("--stream-log", "stream_log", is_flag=True,
                     help="Write a line per packet during the run (costs latency; for comparison only)."),
    ]):
        f = opt(f)
    return f


def resolve_count(count: int | None, duration: int | None, period: int) -> int:
    """--count, or --duration / --period, or the default of one minute at 1 kHz."""
    if count is not None and duration is not None:
        raise ConfigError("give --count or --duration, not both")
    if duration is not None:
        if duration < period:
            raise ConfigError("--duration is shorter than one --period")
        return duration // period
    return count if count is not None else 60_000


#: How far ahead --base-time may be: a start tomorrow is plausible, one in 3 million years a typo.
MAX_BASE_AHEAD_NS = 86_400 * 1_000_000_000


def parse_base_time(text: str | None, now_ns: int | None = None) -> int | None:
    """--base-time in seconds since the epoch (decimals allowed) or nanoseconds; in the next 24 hours."""
    if text is None:
        return None
    value = None
    if len(text) <= 40:
        try:
            value = int(text) if text.isdigit() and len(text) > 12 else float(text) * 1e9
        except ValueError:
            pass
    if value is None or not math.isfinite(value):
        raise ConfigError(f"--base-time {quote(text)}: expected seconds since the epoch, e.g. 1795605691.5")
    now = time.clock_gettime_ns(time.CLOCK_REALTIME) if now_ns is None else now_ns
    if value <= now:
        raise ConfigError("--base-time is in the past")
    if value > now + MAX_BASE_AHEAD_NS:
        raise ConfigError(f"--base-time {quote(text)} is more than 24 hours ahead")
    return round(value)


def family_of(ipv6: bool, l2: bool) -> str:
    if ipv6 and l2:
        raise ConfigError("--ipv6 and --l2 exclude each other")
    return "packet" if l2 else "inet6" if ipv6 else "inet"


@click.command()
@click.option("--topology", type=click.Choice(["veth", "loopback", "none"]), default=None,
              help="Path under test [default: veth as root, else loopback].")
@click.option("--dest", default=None, help="HOST:PORT of the receiver for --topology none.")
@probe_options
@click.option("--cpu-send", "cpu_send", type=int, default=None, help="Pin the sender to this CPU.")
@click.option("--cpu-recv", "cpu_recv", type=int, default=None, help="Pin the receiver to this CPU.")
@click.option("--prio-send", "prio_send", type=int, default=None, help="SCHED_FIFO priority of the sender.")
@click.option("--prio-recv", "prio_recv", type=int, default=None, help="SCHED_FIFO priority of the receiver.")
@click.option("--cpu-dma-latency", "cpu_dma_latency", type=click.IntRange(0, MAX_CPU_DMA_LATENCY_US), default=None,
              metavar="US",
              help="Hold /dev/cpu_dma_latency at US microseconds during the run (0: no deep C-states).")
@click.option("--name", type=NAME, default="", help="A name for the run (show and compare accept it).")
@click.option("--tag", "tags", type=TAG, multiple=True, callback=tag_list,
              help="A tag (repeatable), e.g. --tag bridge --tag stress.")
@click.option("--trace", "trace", is_flag=True,
              help="Record kernel events during the run (for `latscope breakdown`; needs root).")
@click.option("--trace-events", "trace_events", default=None, metavar="CHANGES",
              help="Add or remove traced events: +GROUP[:EVENT],-GROUP[:EVENT] (e.g. -block,+kvm:kvm_exit).")
@results_option
@json_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_context
def run(ctx: click.Context, topology, dest, period, count, duration, size, spin, base_time, ipv6, l2, ethertype,
        vid, pcp, port, tos, so_priority, txtime, no_mlock, no_hw, stream_log, cpu_send, cpu_recv, prio_send, prio_recv,
        cpu_dma_latency, name, tags, trace, trace_events, results, as_json, quiet) -> None:
    """Measure one-way latency: a periodic packet stream across a topology, saved as a run."""
    from latscope.session import measure

    root = can_build_namespaces()
    if topology is None:
        topology = "none" if dest else ("veth" if root else "loopback")
    if topology == "veth" and not root:
        raise PrivilegeError("--topology veth needs root (network namespaces); "
                             "run as root or use --topology loopback")
    cfg = MeasureConfig(
        topology=topology, family=family_of(ipv6, l2), period_ns=period,
        count=resolve_count(count, duration, period), size=size, spin_ns=spin,
        base_time_ns=parse_base_time(base_time), port=port, dest=dest, ethertype=ethertype, vid=vid, pcp=pcp,
        tos=tos, so_priority=so_priority, txtime_offset_ns=txtime, cpu_send=cpu_send, cpu_recv=cpu_recv,
        prio_send=prio_send, prio_recv=prio_recv, mlock=not no_mlock, hw_timestamps=not no_hw,
        cpu_dma_latency_us=cpu_dma_latency,
        stream_log=stream_log, name=name,
        tags=tuple(tags),
    )
    check_memory(cfg.count, RUN_BYTES_PER_PACKET)
    store = store_from(results)
    captures = trace_captures(trace, trace_events, cfg, quiet)
    with packet_progress(cfg.count, cfg.duration_ns / 1e9, quiet) as on_progress:
        outcome = measure(cfg, store, on_progress=on_progress, captures=captures)
    for w in outcome.warnings:
        warn(w)
    if as_json:
        emit_json(run_document(outcome.run, outcome.summary))
    else:
        click.echo(summary_text(outcome.summary, outcome.run.run_id, outcome.run.record.status))
    if outcome.interrupted:
        warn(f"run interrupted ({outcome.stop_reason}); {outcome.summary['packets']['received']} packets saved "
             f"as {outcome.run.run_id}")
        ctx.exit(1)


def trace_captures(trace: bool, trace_events: str | None, cfg: MeasureConfig, quiet: bool = False) -> tuple:
    """The kernel-trace capture when --trace (or --trace-events) was given."""
    if not trace and trace_events is None:
        return ()
    # Writing tracefs takes root's file access and CAP_SYS_ADMIN (to mount it where it is absent).
    caps = effective_caps()
    if not caps & (1 << CAP_SYS_ADMIN) or not (caps & (1 << CAP_DAC_OVERRIDE) or os.geteuid() == 0):
        raise PrivilegeError("--trace needs root (it records into a tracefs instance); run as root, or without "
                             "--trace")
    from latscope.cli.common import stderr_is_tty
    from latscope.trace.capture import TraceCapture
    from latscope.trace.events import resolve

    resolve(trace_events)  # a bad --trace-events fails before anything is set up
    pinned = (cfg.cpu_send, cfg.cpu_recv)
    probe_cpus = tuple(c for c in pinned if c is not None) if all(c is not None for c in pinned) else None
    notify = None if quiet or not stderr_is_tty() else (lambda text: click.echo(f"latscope: {text}", err=True))
    return (TraceCapture(count=cfg.count, duration_ns=cfg.duration_ns, event_changes=trace_events,
                         probe_cpus=probe_cpus, notify=notify),)
