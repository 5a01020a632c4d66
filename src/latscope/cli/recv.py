"""`latscope recv`: the receiving half; it stores the run when the sender's stream ends."""

from __future__ import annotations

import click

from latscope.cli.common import (
    DURATION,
    INT_OR_HEX,
    NAME,
    TAG,
    emit_json,
    json_option,
    results_option,
    store_from,
    tag_list,
    warn,
)
from latscope.cli.progress import packet_progress
from latscope.cli.run import key_path
from latscope.errors import ConfigError
from latscope.probe.auth import load_key
from latscope.probe.config import MAX_STREAM, host_and_port
from latscope.probe.spec import DEFAULT_ETHERTYPE, DEFAULT_PORT, Endpoint
from latscope.report.document import run_document
from latscope.report.text import summary_text


@click.command()
@click.option("--port", type=int, default=None, help=f"UDP port to listen on [default: {DEFAULT_PORT}].")
@click.option("--bind", "bind_addr", default=None, metavar="HOST[:PORT]",
              help="Address to listen on: HOST, HOST:PORT or [IPV6]:PORT (the port here or in --port) "
                   "[default: all, IPv4; :: with --ipv6].")
@click.option("--ipv6", is_flag=True, help="Listen for UDP over IPv6.")
@click.option("--l2", is_flag=True, help="Receive raw Ethernet frames.")
@click.option("--iface", default=None,
              help="Interface for --l2; with UDP, the device to switch hardware timestamping on for.")
@click.option("--ethertype", type=INT_OR_HEX, default=DEFAULT_ETHERTYPE, show_default="0x88b5")
@click.option("--vid", type=int, default=None, help="Only accept --l2 frames tagged with this VLAN id.")
@click.option("--cpu", type=int, default=None, help="Pin the receiver to this CPU.")
@click.option("--prio", type=int, default=None, help="SCHED_FIFO priority.")
@click.option("--no-mlock", "no_mlock", is_flag=True, help="Do not lock memory.")
@click.option("--no-hw-timestamps", "no_hw", is_flag=True, help="Leave the NIC's hardware timestamping alone.")
@click.option("--netns", default=None, help="Listen in this named network namespace (entered with setns).")
@click.option("--timeout", type=DURATION, default="0", help="Give up if no packet arrives this long (0: wait).")
@click.option("--idle-timeout", "idle_timeout", type=DURATION, default="5s", show_default=True,
              help="End the run when packets stop this long without the sender's end packet.")
@click.option("--stream", type=click.IntRange(0, MAX_STREAM), default=None,
              help="Take only the hello of this stream id (`send --stream`; default: the first valid hello).")
@click.option("--key-file", "key_file", default=None, metavar="FILE",
              help="Accept only packets authenticated with the secret in FILE (the sender's --key-file).")
@click.option("--stream-log", "stream_log", is_flag=True, help="Write a line per packet during the run.")
@click.option("--name", type=NAME, default="", help="Run name (default: the sender's).")
@click.option("--tag", "tags", type=TAG, multiple=True, callback=tag_list,
              help="Tag (repeatable; default: the sender's).")
@results_option
@json_option
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@click.pass_context
def recv(ctx: click.Context, port, bind_addr, ipv6, l2, iface, ethertype, vid, cpu, prio, no_mlock, no_hw, netns, timeout,
         idle_timeout, stream, key_file, stream_log, name, tags, results, as_json, quiet) -> None:
    """Receive a stream from `latscope send`, then save and summarise the run."""
    from latscope.halves import ReceiveConfig, receive_stream

    key_file = key_path(key_file)
    if key_file is not None:
        load_key(key_file)  # a bad key file is a usage error before anything starts
    if l2:
        if ipv6:
            raise ConfigError("--ipv6 and --l2 exclude each other")
        if not iface:
            raise ConfigError("--l2 needs --iface")
        if bind_addr is not None:
            raise ConfigError("--bind is for UDP; --l2 listens on --iface")
        listen = Endpoint("packet", "", port or DEFAULT_PORT, iface, None, ethertype, vid, None)
    else:
        if vid is not None:
            raise ConfigError("--vid needs --l2")
        host, listen_port = host_and_port(bind_addr or ("::" if ipv6 else "0.0.0.0"), port, "--bind")
        family = "inet6" if ipv6 or ":" in host else "inet"
        if ipv6 and ":" not in host:
            raise ConfigError(f"--ipv6 listens on an IPv6 address, --bind gives {host!r}")
        listen = Endpoint(family, host, listen_port, iface)
    rcfg = ReceiveConfig(listen=listen, cpu=cpu, prio=prio, mlock=not no_mlock, hw_timestamps=not no_hw, netns=netns,
                         first_timeout_ns=timeout, idle_timeout_ns=idle_timeout, stream=stream,
                         stream_log=stream_log, name=name, tags=tuple(tags), key_file=key_file)
    store = store_from(results)

    def ready() -> None:
        if not quiet:
            click.echo(f"latscope: listening on {_where(listen)}", err=True)

    with packet_progress(0, 0, True) as on_progress:
        outcome = receive_stream(rcfg, store, on_progress=on_progress, on_ready=ready)
    for w in outcome.warnings:
        warn(w)
    if as_json:
        emit_json(run_document(outcome.run, outcome.summary))
    else:
        click.echo(summary_text(outcome.summary, outcome.run.run_id, outcome.run.record.status))
    if outcome.interrupted:
        ctx.exit(1)


def _where(ep: Endpoint) -> str:
    if ep.family == "packet":
        return f"{ep.ifname} EtherType 0x{ep.ethertype:04x}"
    return f"[{ep.address}]:{ep.port}" if ":" in ep.address else f"{ep.address}:{ep.port}"
