"""Sender and receiver namespaces each with a veth whose other end is a port of a Linux bridge in a third."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from latscope.topo.build import building, netlink_errors
from latscope.topo.path import TopologyPath


@contextlib.contextmanager
def bridge_path(token: str | None = None) -> Iterator[TopologyPath]:
    """tx -- veth -- [br: bridge, STP off, forward delay 0] -- veth -- rx.

    With STP off and no forward delay a port forwards as soon as it is up;
    the build waits for every port to report the forwarding state.
    """
    with building("bridge", token) as b:
        with netlink_errors("bridge"):
            tx, rx, br = b.namespace("tx"), b.namespace("rx"), b.namespace("br")
            b.link("bridge", br, "br", "bridge", br_stp_state=0, br_forward_delay=0)
            b.veth(("tx", tx, "t"), ("tx-port", br, "tp"))
            b.veth(("rx", rx, "r"), ("rx-port", br, "rp"))
            bridge = b.index("bridge")
            b.set("tx-port", master=bridge)
            b.set("rx-port", master=bridge)
            b.probe_addresses("tx", "rx")
            b.up("bridge", "tx-port", "rx-port", "tx", "rx")
            b.wait_ready("tx-port", "rx-port", "tx", "rx", "bridge")
            path = b.path("tx", "rx")
        yield path
