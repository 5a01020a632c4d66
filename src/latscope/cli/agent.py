"""`latscope agent`: serve measurement requests from controllers (`run --from/--to`) on this host."""

from __future__ import annotations

import datetime as _dt
import os
import signal
import sys
import threading
from typing import Any

import click

from latscope.cli.common import DURATION
from latscope.errors import ConfigError


@click.command()
@click.option("--listen", required=True, metavar="ADDR:PORT",
              help="Where controllers connect: 198.18.0.2:48501, 0.0.0.0:48501, [::]:48501 (port default 48501).")
@click.option("--key-file", "key_file", required=True, metavar="FILE",
              help="The pre-shared key controllers must prove (and packets are authenticated with); not readable "
                   "by other users.")
@click.option("--max-rate", "max_rate", type=click.IntRange(1, 1_000_000), default=10_000, show_default=True,
              help="Packets per second this agent sends at most, all its workers together.")
@click.option("--max-duration", "max_duration", type=DURATION, default="15m", show_default=True,
              help="Longest stream a controller may ask for; a worker still running well past it is stopped.")
@click.option("--allow-interface", "interfaces", multiple=True, metavar="IF",
              help="Interfaces the workers may use (repeatable): the route to a sender's destination must leave "
                   "by one, and an interface a request names must be one [default: any].")
@click.option("--allow-port", "ports", multiple=True, metavar="PORT[-PORT]",
              help="UDP ports the workers may send to or listen on (repeatable) [default: any].")
def agent(listen: str, key_file: str, max_rate: int, max_duration: int, interfaces: tuple[str, ...],
          ports: tuple[str, ...]) -> None:
    """Serve measurement requests from authenticated controllers (`latscope run --from/--to`) until stopped.

    Each connection must prove the --key-file key (HMAC-SHA256 challenge-response, both ways; see
    docs/agent.md). The agent runs only latscope's own sender and receiver workers, one measurement at a
    time, within the limits above; every refusal is one line on stderr. SIGTERM or SIGINT stops it, and
    the workers it runs.
    """
    from latscope.probe.auth import load_key
    from latscope.probe.config import parse_hostport
    from latscope.remote.netagent import AgentServer
    from latscope.remote.netlimits import Limits, parse_ports
    from latscope.remote.netlink import AGENT_PORT

    key_file = os.path.abspath(key_file)
    key = load_key(key_file)
    host, port = parse_hostport(listen, AGENT_PORT)
    try:
        allowed = parse_ports(ports)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if max_duration < 1_000_000_000:
        raise ConfigError("--max-duration must be at least 1s")
    limits = Limits(max_rate=max_rate, max_duration_ns=max_duration, interfaces=tuple(interfaces), ports=allowed)
    lock = threading.Lock()

    def log(text: str) -> None:
        stamp = _dt.datetime.now().astimezone().isoformat(timespec="milliseconds")
        with lock:
            print(f"{stamp} latscope agent: {text}", file=sys.stderr, flush=True)

    try:
        server = AgentServer((host, port), key, key_file, limits, log)
    except OSError as exc:
        raise ConfigError(f"--listen {listen}: {exc.strerror or exc}") from None

    me = os.getpid()

    def stop(signum: int, _frame: Any) -> None:
        if os.getpid() != me:
            # A fork of ours that has not exec'd yet (pyroute2 forks to make a namespace while the environment
            # is collected) ends as the signal says, without touching the server.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        log(f"{signal.Signals(signum).name}: stopping")
        server.stop()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)
    addr, bound = server.address
    where = f"[{addr}]:{bound}" if ":" in addr else f"{addr}:{bound}"
    log(f"listening on {where} (pid {os.getpid()}; --max-rate {max_rate}, --max-duration "
        f"{max_duration / 1e9:g}s" + (f", interfaces {','.join(interfaces)}" if interfaces else "")
        + (f", ports {','.join(ports)}" if ports else "") + ")")
    server.serve()
    log("stopped")
