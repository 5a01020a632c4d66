"""Two network namespaces joined by a veth pair, addressed from the benchmarking ranges."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from latscope.topo.build import (
    CARRIER_TIMEOUT_S,
    RECEIVER_ADDR4,
    RECEIVER_ADDR6,
    SENDER_ADDR4,
    SENDER_ADDR6,
    building,
    netlink_errors,
)
from latscope.topo.path import TopologyPath

__all__ = ["RECEIVER_ADDR4", "RECEIVER_ADDR6", "SENDER_ADDR4", "SENDER_ADDR6", "veth_pair"]


@contextlib.contextmanager
def veth_pair(token: str | None = None, carrier_timeout_s: float = CARRIER_TIMEOUT_S) -> Iterator[TopologyPath]:
    """Namespaces ``<prefix>-tx`` and ``<prefix>-rx`` with a veth between them; both removed afterwards."""
    with building("veth", token) as b:
        with netlink_errors("veth"):
            tx, rx = b.namespace("tx"), b.namespace("rx")
            b.veth(("tx", tx, "t"), ("rx", rx, "r"))
            b.probe_addresses("tx", "rx")
            b.up("tx", "rx")
            b.wait_ready("tx", "rx", timeout_s=carrier_timeout_s)
            path = b.path("tx", "rx")
        yield path
