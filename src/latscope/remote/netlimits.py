"""What a network agent lets a controller ask: the owner's limits, checked on every worker request.

A request names a worker role and gives its spec (latscope.probe.spec, as
JSON). The agent does not trust it: every field that could reach outside
the measurement (a file to write or read, a namespace to enter) is replaced
with the agent's own or refused, and the stream's rate, length, ports and
interfaces are held to the owner's limits. The checks go by field name, not
by role, so a role the probe learns later (a reflector) is held to the same
rules without changes here.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from latscope.units import MAX_DURATION_NS

#: How far ahead of the agent's clock a stream may be scheduled to start.
MAX_START_LEAD_NS = 120_000_000_000
#: Every running worker is stopped this long after --max-duration plus its start lead, whatever it does.
WATCHDOG_SLACK_S = 30.0
#: Spec fields naming files or namespaces on the agent's host: handled one by one, never taken as given.
HANDLED_PATHS = ("stream_log", "trace_marker", "key_file", "netns")
PATHLIKE_SUFFIXES = ("_file", "_path", "_dir", "_log", "_marker", "netns")
SENDING_ENDPOINTS = ("dest",)
#: Spec fields that are endpoints (probe.spec.Endpoint); other dicts with a "family" are too, but the hello.
ENDPOINTS = ("dest", "listen")
NOT_ENDPOINTS = ("hello",)
ENDPOINT_DEFAULTS: dict[str, Any] = {"family": "inet", "address": "127.0.0.1", "port": 48_500, "ifname": None,
                                     "mac": None, "ethertype": 0x88B5, "vid": None, "pcp": None}


class Refused(Exception):
    """A request the agent will not serve; the message is the one-line reason."""


@dataclass(frozen=True)
class Limits:
    """What the agent's owner allows (``latscope agent`` options)."""

    max_rate: int = 10_000
    max_duration_ns: int = 900 * 1_000_000_000
    interfaces: tuple[str, ...] = ()
    ports: tuple[tuple[int, int], ...] = ()
    #: Workers one measurement may run at once on this agent (both directions: a sender and a receiver).
    max_workers: int = 4

    def to_json(self) -> dict[str, Any]:
        return {"max_rate": self.max_rate, "max_duration_ns": self.max_duration_ns,
                "interfaces": list(self.interfaces), "ports": [list(p) for p in self.ports],
                "max_workers": self.max_workers}

    @property
    def max_packets(self) -> int:
        return self.max_rate * self.max_duration_ns // 1_000_000_000 + 1

    def watchdog_s(self) -> float:
        return (self.max_duration_ns + MAX_START_LEAD_NS) / 1e9 + WATCHDOG_SLACK_S


def parse_ports(texts: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    """``48500`` or ``48500-48510`` (repeatable) -> inclusive ranges; ValueError with the bad one."""
    out = []
    for text in texts:
        lo, _, hi = text.partition("-")
        try:
            a, b = int(lo), int(hi or lo)
        except ValueError:
            raise ValueError(f"--allow-port {text!r}: expected PORT or PORT-PORT") from None
        if not 1 <= a <= b <= 65535:
            raise ValueError(f"--allow-port {text!r}: ports are 1..65535, low to high")
        out.append((a, b))
    return tuple(out)


@dataclass
class Usage:
    """The packet rates of the workers the current measurement runs on this agent, by worker id."""

    rates: dict[str, float] = field(default_factory=dict)


def _int(doc: dict[str, Any], key: str, lo: int, hi: int, what: str) -> int | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise Refused(f"{key} {str(value)[:40]!r}: {what}")
    return value


def check_spec(wid: str, doc: Any, limits: Limits, usage: Usage, *, scratch_log: str, key_file: str,
               egress: Callable[[str], str | None], now_ns: int | None = None) -> dict[str, Any]:
    """The spec the worker will run (``doc`` with the agent's own paths), or Refused with the reason."""
    if not isinstance(doc, dict):
        raise Refused("the spec is not a JSON object")
    spec = dict(doc)
    for key, value in spec.items():
        if key not in HANDLED_PATHS and key.endswith(PATHLIKE_SUFFIXES) and value is not None:
            raise Refused(f"{key}: the agent does not take paths from a controller")
    if spec.get("netns") is not None:
        raise Refused("netns: the agent measures in its own network namespace")
    if spec.get("trace_marker") is not None:
        raise Refused("trace_marker: the agent does not trace")
    if spec.get("stream_log"):
        spec["stream_log"] = scratch_log
    if spec.get("key_file"):
        # Packet authentication with the key the controller proved it holds: the agent's own file.
        spec["key_file"] = key_file
    for key, value in list(spec.items()):
        if key in ENDPOINTS or (isinstance(value, dict) and "family" in value and key not in NOT_ENDPOINTS):
            if not isinstance(value, dict):
                raise Refused(f"{key}: not an endpoint")
            # Fields left out take the probe's defaults (probe.spec.Endpoint): check what will be used.
            spec[key] = value = {**ENDPOINT_DEFAULTS, **value}
            check_endpoint(key, value, limits, egress)
    max_ns = limits.max_duration_ns
    period = _int(spec, "period_ns", 1, MAX_DURATION_NS, "not a period")
    count = _int(spec, "count", 1, 1 << 62, "not a packet count")
    rate = 0.0
    if period is not None:
        rate = 1e9 / period
        others = sum(usage.rates.values())
        if rate + others > limits.max_rate:
            also = f" (with the {others:.0f} packets/s already running)" if others else ""
            raise Refused(f"a period of {period} ns is {rate:.0f} packets/s{also}: over this agent's --max-rate "
                          f"{limits.max_rate}")
        if count is not None and count * period > max_ns:
            raise Refused(f"{count} packets every {period} ns take {count * period / 1e9:.0f} s: over this agent's "
                          f"--max-duration {max_ns / 1e9:.0f} s")
    if count is not None and count > limits.max_packets:
        raise Refused(f"count {count}: over the {limits.max_packets} packets of --max-rate x --max-duration")
    now = time.clock_gettime_ns(time.CLOCK_REALTIME) if now_ns is None else now_ns
    base = _int(spec, "base_time_ns", 0, 1 << 63, "not a time")
    if base is not None and base > now + MAX_START_LEAD_NS:
        raise Refused(f"base_time_ns is {(base - now) / 1e9:.0f} s ahead of this agent's clock "
                      f"(at most {MAX_START_LEAD_NS // 1_000_000_000} s)")
    _int(spec, "start_delay_ns", 0, MAX_START_LEAD_NS, "too long a start delay")
    for key in ("idle_timeout_ns", "first_timeout_ns", "grace_ns"):
        _int(spec, key, 0, max_ns, f"at most --max-duration ({max_ns / 1e9:.0f} s)")
    if spec.get("memory_bytes") is not None:
        spec["memory_bytes"] = None  # the receiver sizes itself on this host's free memory
    usage.rates[wid] = rate
    return spec


def check_endpoint(key: str, ep: dict[str, Any], limits: Limits,
                   egress: Callable[[str], str | None]) -> None:
    """An endpoint's family, port and interfaces against the limits (a sender's route included)."""
    family = ep.get("family")
    if family not in ("inet", "inet6", "packet"):
        raise Refused(f"{key}: unknown family {str(family)[:20]!r}")
    ifname = ep.get("ifname")
    if ifname is not None and not isinstance(ifname, str):
        raise Refused(f"{key}: malformed ifname")
    if limits.interfaces:
        if ifname is not None and ifname not in limits.interfaces:
            raise Refused(f"{key}: interface {ifname!r} is not in --allow-interface")
        if family == "packet" and ifname is None:
            raise Refused(f"{key}: raw Ethernet without an interface")
    if family == "packet":
        return
    port = ep.get("port")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise Refused(f"{key}: malformed port")
    if limits.ports and not any(lo <= port <= hi for lo, hi in limits.ports):
        raise Refused(f"{key}: port {port} is not in --allow-port")
    address = ep.get("address")
    try:
        ipaddress.ip_address(str(address))
    except ValueError:
        raise Refused(f"{key}: {str(address)[:60]!r} is not an IP address") from None
    if key in SENDING_ENDPOINTS and limits.interfaces:
        out = egress(str(address))
        if out not in limits.interfaces:
            raise Refused(f"{key}: the route to {address} leaves by {out or 'no interface'}, not an interface "
                          "in --allow-interface")
