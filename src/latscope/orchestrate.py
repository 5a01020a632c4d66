"""`latscope run --from A --to B`: one measurement between two hosts' agents, from one command.

Each of A and B is ``HOST[:PORT]`` of a `latscope agent` or ``local`` (this
host runs that half itself). The controller connects to each agent and both
prove the key (remote.netauth), asks each for its hello and environment,
runs the clock checks, then hands the session a path whose sides are the
agents' links: the session runs a half on an agent as it runs a half in a
guest (probe workers started over the link, their files sent back), and
stores the run, with both hosts' part in ``environment.hosts``.

The data stream goes to the address the controller reached the receiving
agent at; a ``local`` side is reached at this host's address on its
connection to the other agent.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from latscope.errors import CaptureError, ConfigError
from latscope.probe.auth import load_key
from latscope.probe.config import MeasureConfig
from latscope.remote.netlink import AgentLink, connect
from latscope.session import Outcome, ProgressFn, measure_all
from latscope.store.layout import ResultsStore
from latscope.topo.path import Side, TopologyPath

LOCAL = "local"
#: Clock exchanges with each agent over its control connection (a few milliseconds each).
CLOCK_EXCHANGES = 16
ENVIRONMENT_TIMEOUT_S = 120.0


@dataclass
class Host:
    """One end of the measurement: an agent's link, or this host (``local``)."""

    role: str                      # "from" or "to"
    where: str                     # as given: HOST:PORT or local
    link: AgentLink | None
    hello: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] | None = None
    address: str = ""

    def doc(self) -> dict[str, Any]:
        """The host in run.json (environment.topology and extra.agents): who, where, which address."""
        return {"agent": self.where if self.link is None else self.link.where, "host": self.hello.get("host"),
                "kernel": self.hello.get("kernel"), "version": self.hello.get("version"), "address": self.address}


def check_agents(cfg: MeasureConfig, src: str | None, dst: str | None) -> None:
    """What `run --from/--to` needs before connecting: two ends, not both local, a key to prove."""
    if (src is None) != (dst is None):
        raise ConfigError("--from and --to go together: each HOST:PORT of an agent, or local")
    if src == LOCAL and dst == LOCAL:
        raise ConfigError("--from local --to local: both halves on this host is `latscope run` without --from/--to")
    if cfg.key_file is None:
        raise ConfigError("--from/--to need --key-file: agents serve only controllers that prove the key")


def clock_checks(hosts: dict[str, Host]) -> dict[str, Any]:
    """The clock checks before a run between agents, stored in environment.hosts.clock.

    Per host: its own synchronisation (``sync``: env.clock.check_host run on
    that host: adjtimex, chrony, ptp4l), and for an agent its clock against
    the controller's over the control connection (remote.clock: offset and
    its hard bound). session.check_clocks bounds the run's clock error from
    the hosts' ``sync`` (and, with --require-sync, round trips between them).
    """
    from latscope.env.clock import check_host

    out: dict[str, Any] = {}
    for role, host in hosts.items():
        if host.link is None:
            out[role] = {"local": True, "sync": check_host()}
            continue
        doc: dict[str, Any] = {}
        try:
            doc["offset_to_controller"] = host.link.exchange(CLOCK_EXCHANGES).to_json()
            doc["sync"] = host.link.request("clock", timeout_s=30).header.get("clock")
        except CaptureError as exc:
            doc["error"] = str(exc)
        out[role] = doc
    return out


def _open(role: str, where: str, key: bytes, notify: Callable[[str], None] | None) -> Host:
    if where == LOCAL:
        u = os.uname()
        from latscope import __version__

        return Host(role, LOCAL, None, {"host": u.nodename, "kernel": u.release, "version": __version__})
    link = connect(where, key)
    try:
        hello = link.hello()
        if hello.get("agent") != "latscope":
            raise CaptureError(f"agent {link.where}: not a latscope agent")
        if hello.get("busy"):
            raise CaptureError(f"agent {link.where} is busy: a measurement for {hello['busy']} is running")
        if notify is not None:
            notify(f"agent {link.where} ({hello.get('host')}): collecting its environment")
        env = link.request("environment", timeout_s=ENVIRONMENT_TIMEOUT_S).header.get("environment")
    except BaseException:
        link.close()
        raise
    return Host(role, where, link, hello, env if isinstance(env, dict) else {})


def _side(host: Host, family: str) -> Side:
    addr = ipaddress.ip_address(host.address.split("%")[0])
    if family == "inet6" and addr.version == 4:
        raise ConfigError(f"--ipv6: the {host.role} host is reached over IPv4 ({host.address}); give its agent "
                          "as an IPv6 address")
    if family == "inet" and addr.version == 6:
        if addr.ipv4_mapped is not None:
            return Side(None, None, str(addr.ipv4_mapped), None, agent=host.link)
        raise ConfigError(f"the {host.role} host is reached over IPv6 ({host.address}): add --ipv6")
    v4 = addr.version == 4
    return Side(None, None, host.address if v4 else None, None if v4 else host.address, agent=host.link)


@contextlib.contextmanager
def agents_path(cfg: MeasureConfig, src: str, dst: str,
                notify: Callable[[str], None] | None = None) -> Any:
    """The path between the two hosts for the duration of the block; the links closed afterwards."""
    check_agents(cfg, src, dst)
    assert cfg.key_file is not None
    key = load_key(cfg.key_file)
    with contextlib.ExitStack() as links:
        hosts: dict[str, Host] = {}
        for role, where in (("from", src), ("to", dst)):
            hosts[role] = _open(role, where, key, notify)
            if hosts[role].link is not None:
                links.callback(hosts[role].link.close)  # type: ignore[union-attr]
        a, b = hosts["from"], hosts["to"]
        a.address = a.link.peer_address() if a.link is not None else b.link.local_address()  # type: ignore[union-attr]
        b.address = b.link.peer_address() if b.link is not None else a.link.local_address()  # type: ignore[union-attr]
        clock = clock_checks(hosts)
        description = {"kind": "agents", "from": a.doc(), "to": b.doc()}
        doc = {role: {**h.doc(), "environment": h.environment if h.link is not None else "environment.before"}
               for role, h in hosts.items()}
        doc["clock"] = clock
        yield TopologyPath("agents", _side(a, cfg.family), _side(b, cfg.family), description, hosts=doc)


def measure_between(cfg: MeasureConfig, store: ResultsStore, src: str, dst: str, *,
                    on_progress: ProgressFn | None = None,
                    notify: Callable[[str], None] | None = None) -> list[Outcome]:
    """Measure between the hosts ``src`` and ``dst`` (agents or local); one stored run per direction."""
    with agents_path(cfg, src, dst, notify) as path:
        return measure_all(cfg, store, path=path, on_progress=on_progress, notify=notify)
