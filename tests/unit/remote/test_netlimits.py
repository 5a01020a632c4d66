"""What an agent lets a controller ask (remote.netlimits): rates, lengths, ports, interfaces, paths."""

from __future__ import annotations

from typing import Any

import pytest

from latscope.remote.netlimits import Limits, Refused, Usage, check_spec, parse_ports

NOW = 1_700_000_000_000_000_000


def sender(**over: Any) -> dict[str, Any]:
    doc = {"dest": {"family": "inet", "address": "198.18.0.2", "port": 48500}, "stream": 1,
           "period_ns": 1_000_000, "count": 1000, "key_file": None, "stream_log": None, "netns": None,
           "trace_marker": None, "hello": {"family": "inet", "host": "x"}}
    return {**doc, **over}


DEFAULT = Limits()


def check(doc: Any, limits: Limits = DEFAULT, usage: Usage | None = None, egress: str | None = "eth0",
          wid: str = "sender-1") -> dict[str, Any]:
    return check_spec(wid, doc, limits, usage or Usage(), scratch_log="/scratch/log", key_file="/etc/agent.key",
                      egress=lambda _a: egress, now_ns=NOW)


def test_within_the_limits_the_spec_passes_with_the_agents_paths() -> None:
    """A plain sender passes; a stream log and the key file become the agent's own."""
    spec = check(sender(stream_log="/etc/passwd", key_file="/root/.ssh/id_rsa"))
    assert spec["stream_log"] == "/scratch/log" and spec["key_file"] == "/etc/agent.key"
    assert spec["dest"]["ethertype"] == 0x88B5  # the probe's defaults filled in, as the worker will use them


@pytest.mark.parametrize("over, reason", [
    ({"period_ns": 50_000}, "20000 packets/s: over this agent's --max-rate 10000"),
    ({"count": 10_000_000}, "over this agent's --max-duration 900 s"),
    ({"netns": "x"}, "netns: the agent measures in its own"),
    ({"trace_marker": "/sys/kernel/tracing/trace_marker"}, "trace_marker: the agent does not trace"),
    ({"output_path": "/tmp/x"}, "output_path: the agent does not take paths"),
    ({"dest": {"family": "unix", "address": "/x", "port": 1}}, "unknown family"),
    ({"dest": {"family": "inet", "address": "example.com", "port": 1}}, "is not an IP address"),
    ({"dest": "198.18.0.2"}, "dest: not an endpoint"),
    ({"base_time_ns": NOW + 3_600_000_000_000}, "ahead of this agent's clock"),
    ({"period_ns": "1ms"}, "not a period"),
    ({"count": True}, "not a packet count"),
])
def test_refusals(over: dict[str, Any], reason: str) -> None:
    """Each way out of the limits is refused with its reason."""
    with pytest.raises(Refused, match=reason):
        check(sender(**over))


def test_the_rate_counts_every_running_worker() -> None:
    """Two streams of 6000/s on an agent of 10000/s: the second is refused, naming the first."""
    usage = Usage()
    check(sender(period_ns=166_667), usage=usage, wid="sender-1")
    with pytest.raises(Refused, match="with the 6000 packets/s already running"):
        check(sender(period_ns=166_667), usage=usage, wid="sender-2")


def test_ports_and_interfaces() -> None:
    """--allow-port ranges; --allow-interface holds the route a sender's packets take and named interfaces."""
    limits = Limits(ports=parse_ports(("48500-48510",)), interfaces=("eth1",))
    with pytest.raises(Refused, match="port 48600 is not in --allow-port"):
        check(sender(dest={"family": "inet", "address": "198.18.0.2", "port": 48600}), limits, egress="eth1")
    with pytest.raises(Refused, match="leaves by eth0, not an interface in --allow-interface"):
        check(sender(), limits, egress="eth0")
    with pytest.raises(Refused, match="leaves by no interface"):
        check(sender(), limits, egress=None)
    with pytest.raises(Refused, match="interface 'eth0' is not in --allow-interface"):
        check(sender(dest={"family": "inet", "address": "198.18.0.2", "port": 48500, "ifname": "eth0"}), limits,
              egress="eth1")
    assert check(sender(), limits, egress="eth1")["dest"]["port"] == 48500
    receiver = {"listen": {"family": "inet", "address": "0.0.0.0", "port": 48501}, "count": 1000}
    assert check(receiver, limits, egress=None, wid="receiver-1")["listen"]["port"] == 48501


def test_port_ranges_parse() -> None:
    """PORT and PORT-PORT; anything else is an error naming the value."""
    assert parse_ports(("1", "48500-48510")) == ((1, 1), (48500, 48510))
    for bad in ("0", "10-5", "x", "70000"):
        with pytest.raises(ValueError, match=bad):
            parse_ports((bad,))
