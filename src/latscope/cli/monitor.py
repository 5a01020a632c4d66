"""`latscope monitor DIR`: measure without end, one Parquet file per interval, Prometheus metrics."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import click

from latscope.analysis.check import Limit, parse_limit
from latscope.cli.common import DURATION
from latscope.cli.run import key_path, resolve_size
from latscope.errors import ConfigError, PrivilegeError
from latscope.privileges import can_build_namespaces
from latscope.probe import wire
from latscope.probe.config import MeasureConfig
from latscope.safetext import printable
from latscope.topo.available import TOPOLOGIES

#: Statistics an interval gives (the monitor keeps histograms, not every latency: no stddev, no p99.999).
MONITOR_STATS = ("min", "avg", "max", "p50", "p90", "p99", "p999", "p9999")
LOCAL = [t for t in TOPOLOGIES if t not in ("none", "agents") and not t.startswith("vm")]


def monitor_limit(text: str) -> Limit:
    """A --max limit as `check` parses it, if the monitor can judge it (latency statistics and loss)."""
    lim = parse_limit(text, "max")
    if lim.metric != "loss" and (lim.metric != "latency" or lim.stat not in MONITOR_STATS):
        raise ConfigError(f"--max {text!r}: monitor judges latency (min, avg, max, p50, p90, p99, p99.9, "
                          "p99.99) and loss limits")
    return lim


def _log(line: str) -> None:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    click.echo(f"{stamp} latscope monitor: {printable(line)}", err=True)


@click.command()
@click.argument("directory", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@click.option("--topology", type=click.Choice(LOCAL), default="veth", show_default=True,
              help="Path under test, built on this host as `run` builds it.")
@click.option("--interval", type=DURATION, default="1h", show_default=True,
              help="Length of each samples file (aligned to the clock: 1h files start on the hour); at least 1s.")
@click.option("--period", type=DURATION, default="1ms", show_default=True, help="Interval between packets.")
@click.option("--size", type=int, default=None,
              help=f"Payload bytes, {wire.MIN_SIZE}..{wire.MAX_SIZE} [default and least: {wire.MIN_SIZE}; "
                   f"{wire.MIN_SIZE_MAC} with --key-file].")
@click.option("--stream", type=click.IntRange(0, 0x7FFFFFFF), default=1, show_default=True,
              help="Stream id: names the files; a restart continues the stream's seqs.")
@click.option("--host", "host", default=None,
              help="The host=... partition [default: this host's name].")
@click.option("--ipv6", is_flag=True, help="UDP over IPv6.")
@click.option("--spin", type=DURATION, default="0", help="Busy-wait this long before each deadline (50us).")
@click.option("--cpu-send", "cpu_send", type=int, default=None, help="Pin the sender to this CPU.")
@click.option("--cpu-recv", "cpu_recv", type=int, default=None, help="Pin the receiver to this CPU.")
@click.option("--prio-send", "prio_send", type=int, default=None, help="SCHED_FIFO priority of the sender.")
@click.option("--prio-recv", "prio_recv", type=int, default=None, help="SCHED_FIFO priority of the receiver.")
@click.option("--no-mlock", "no_mlock", is_flag=True, help="Do not lock memory (mlockall).")
@click.option("--no-hw-timestamps", "no_hw", is_flag=True,
              help="Leave NICs' hardware timestamping alone (default: switch it on where a device has it).")
@click.option("--key-file", "key_file", default=None, metavar="FILE",
              help="Authenticate every packet with the secret in FILE (HMAC-SHA256).")
@click.option("--max", "maxima", multiple=True, metavar="STAT=VALUE",
              help="Alert limit per interval, as in `check`: p99.9=150us, max=1ms, loss=0, loss=0.1%. Repeatable.")
@click.option("--metrics-port", "metrics_port", type=click.IntRange(0, 65535), default=None,
              help="Serve Prometheus metrics on this port (/metrics).")
@click.option("--metrics-addr", "metrics_addr", default="127.0.0.1", show_default=True,
              help="Address the metrics server binds to.")
def monitor(directory: Path, topology: str, interval: int, period: int, size: int | None, stream: int,
            host: str | None, ipv6: bool, spin: int, cpu_send: int | None, cpu_recv: int | None,
            prio_send: int | None, prio_recv: int | None, no_mlock: bool, no_hw: bool, key_file: str | None,
            maxima: tuple[str, ...], metrics_port: int | None, metrics_addr: str) -> None:
    """Measure without end on a local topology: one Parquet file per interval, Prometheus metrics, alert limits."""
    from latscope.monitor.runner import MonitorConfig, run_monitor

    limits = tuple(monitor_limit(t) for t in maxima)
    if topology != "loopback" and not can_build_namespaces():
        raise PrivilegeError(f"--topology {topology} builds network namespaces, which needs root; "
                             "--topology loopback works without")
    key = key_path(key_file)
    measure = MeasureConfig(topology=topology, family="inet6" if ipv6 else "inet", period_ns=period,
                            size=resolve_size(size, key), spin_ns=spin, stream=stream, cpu_send=cpu_send,
                            cpu_recv=cpu_recv, prio_send=prio_send, prio_recv=prio_recv, mlock=not no_mlock,
                            hw_timestamps=not no_hw, key_file=key, count=1)
    cfg = MonitorConfig(directory=directory.absolute(), measure=measure, interval_ns=interval,
                        host=host or os.uname().nodename, limits=limits, metrics_port=metrics_port,
                        metrics_addr=metrics_addr)
    outcome = run_monitor(cfg, _log)
    _log(f"{outcome.stop_reason}: {outcome.files} files, seqs {outcome.first_seq}..{outcome.next_seq - 1} "
         f"stored (run {outcome.run_id})")
