"""`latscope send`: the sending half, for a receiver on another host (`latscope recv`)."""

from __future__ import annotations

import click

from latscope.cli.common import NAME, TAG, check_memory, emit_json, json_option, tag_list, warn
from latscope.cli.progress import packet_progress
from latscope.cli.run import family_of, key_path, parse_base_time, probe_options, resolve_count, resolve_size
from latscope.errors import ConfigError
from latscope.probe.config import MAX_STREAM, REMOTE, MeasureConfig, host_and_port
from latscope.probe.spec import Endpoint
from latscope.units import format_us

#: Memory the sender holds per packet: its six preallocated columns, and their copies when it writes them.
SEND_BYTES_PER_PACKET = 100


@click.command()
@click.option("--dest", required=True,
              help="Receiver HOST, HOST:PORT or [IPV6]:PORT (the port here or in --port), or its MAC with --l2.")
@click.option("--iface", default=None, help="Interface to send --l2 frames from.")
@probe_options
@click.option("--cpu", type=int, default=None, help="Pin the sender to this CPU.")
@click.option("--prio", type=int, default=None, help="SCHED_FIFO priority.")
@click.option("--netns", default=None, help="Send from this named network namespace (entered with setns).")
@click.option("--stream", type=click.IntRange(0, MAX_STREAM), default=None,
              help="Stream id (default: random); `recv --stream` then takes only this sender's hello.")
@click.option("--name", type=NAME, default="", help="Run name, passed to the receiver.")
@click.option("--tag", "tags", type=TAG, multiple=True, callback=tag_list,
              help="Tag (repeatable), passed to the receiver.")
@json_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_context
def send(ctx: click.Context, dest, iface, period, count, duration, size, spin, base_time, ipv6, l2, ethertype, vid,
         pcp, port, tos, so_priority, txtime, no_mlock, no_hw, stream_log, key_file, cpu, prio, netns, stream, name,
         tags, as_json, quiet) -> None:
    """Send the periodic stream; the receiver stores the run (its parameters travel in the packets)."""
    from latscope.halves import send_stream

    family = family_of(ipv6, l2)
    key_file = key_path(key_file)
    size = resolve_size(size, key_file)
    extra = {"key_file": key_file} | ({"stream": stream} if stream is not None else {})
    if family == "packet":
        if not iface:
            raise ConfigError("--l2 needs --iface (the interface to send from)")
        endpoint = Endpoint("packet", "", 0, iface, dest, ethertype, vid, pcp)
    else:
        host, p = host_and_port(dest, port, "--dest")
        endpoint = Endpoint("inet6" if (family == "inet6" or ":" in host) else "inet", host, p)
    cfg = MeasureConfig(
        topology=REMOTE, family=endpoint.family, period_ns=period, count=resolve_count(count, duration, period),
        size=size, spin_ns=spin, base_time_ns=parse_base_time(base_time), port=endpoint.port or None,
        ethertype=ethertype, vid=vid, pcp=pcp, tos=tos, so_priority=so_priority, txtime_offset_ns=txtime,
        cpu_send=cpu, prio_send=prio, mlock=not no_mlock, hw_timestamps=not no_hw, stream_log=stream_log,
        name=name, tags=tuple(tags), **extra,
    )
    check_memory(cfg.count, SEND_BYTES_PER_PACKET)
    with packet_progress(cfg.count, cfg.duration_ns / 1e9, quiet, "sending") as on_progress:
        result = send_stream(cfg, endpoint, netns=netns, on_progress=on_progress)
    doc = {
        "sent": result.sent, "stream": result.stream, "send_failed": result.send_failed,
        "tx_timestamps": result.tx_timestamps,
        "base_time_ns": result.base_time_ns, "interrupted": result.interrupted, "scheduling": result.scheduling,
        "dest": dest, "period_ns": cfg.period_ns, "count": cfg.count,
    }
    if as_json:
        emit_json(doc)
    else:
        click.echo(f"sent {result.sent} packets to {dest} every {format_us(cfg.period_ns)} us "
                   f"({result.tx_timestamps} with kernel TX timestamps, {result.send_failed} sends failed)")
    if result.interrupted:
        warn("interrupted: the receiver keeps what arrived")
        ctx.exit(1)

