"""A VXLAN overlay between tx and rx across a veth underlay of their own."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from latscope.topo.build import building, netlink_errors
from latscope.topo.path import TopologyPath

#: The underlay: its own /30, apart from the probe's 198.18.0.0/30.
UNDERLAY_TX4, UNDERLAY_RX4, UNDERLAY_PREFIX4 = "198.18.1.1", "198.18.1.2", 30
VNI = 4242
VXLAN_PORT = 4789
UNDERLAY_MTU = 1500
#: Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14) headers.
VXLAN_OVERHEAD = 50


@contextlib.contextmanager
def vxlan_path(token: str | None = None) -> Iterator[TopologyPath]:
    """tx: vxlan --(UDP 4789 over tx: veth -- rx: veth)-- rx: vxlan, the probe's addresses on the vxlans.

    Each vxlan's one remote is the peer's underlay address (no multicast):
    its all-zeros forwarding entry sends broadcast (ARP), multicast (ND) and
    unknown unicast there. MTU 1450, so an encapsulated frame fits the
    underlay's 1500.
    """
    with building("vxlan", token) as b:
        with netlink_errors("vxlan"):
            tx, rx = b.namespace("tx"), b.namespace("rx")
            b.veth(("tx-underlay", tx, "ut"), ("rx-underlay", rx, "ur"))
            b.set("tx-underlay", mtu=UNDERLAY_MTU)
            b.set("rx-underlay", mtu=UNDERLAY_MTU)
            b.address("tx-underlay", UNDERLAY_TX4, UNDERLAY_PREFIX4)
            b.address("rx-underlay", UNDERLAY_RX4, UNDERLAY_PREFIX4)
            b.up("tx-underlay", "rx-underlay")
            for role, nsname, tag, local, remote in (("tx", tx, "t", UNDERLAY_TX4, UNDERLAY_RX4),
                                                     ("rx", rx, "r", UNDERLAY_RX4, UNDERLAY_TX4)):
                b.link(role, nsname, tag, "vxlan", vxlan_id=VNI, vxlan_port=VXLAN_PORT, vxlan_local=local,
                       vxlan_group=remote, vxlan_link=b.index(f"{role}-underlay"),
                       mtu=UNDERLAY_MTU - VXLAN_OVERHEAD)
            b.probe_addresses("tx", "rx")
            b.up("tx", "rx")
            b.wait_ready("tx-underlay", "rx-underlay", "tx", "rx")
            path = b.path("tx", "rx")
        yield path
