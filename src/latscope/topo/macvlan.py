"""Two macvlan devices in bridge mode on one parent in a third namespace, one moved into tx, one into rx."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from latscope.topo.build import building, netlink_errors
from latscope.topo.path import TopologyPath


@contextlib.contextmanager
def macvlan_path(token: str | None = None) -> Iterator[TopologyPath]:
    """tx: macvlan --(bridge mode, inside the macvlan driver)-- rx: macvlan, both on a parent in mid.

    The parent is one end of a veth pair that stays in the middle namespace
    (this kernel family need not have the dummy driver; a veth is always
    there). A macvlan has carrier while its parent has, and the parent while
    its peer is up, so both ends are brought up; neither is addressed.
    Frames between the two macvlans never touch the parent's wire.
    """
    with building("macvlan", token) as b:
        with netlink_errors("macvlan"):
            tx, rx, mid = b.namespace("tx"), b.namespace("rx"), b.namespace("mid")
            b.veth(("parent", mid, "p"), ("parent-peer", mid, "q"))
            b.up("parent", "parent-peer")
            parent = b.index("parent")
            for role, nsname, tag in (("tx", tx, "t"), ("rx", rx, "r")):
                b.link(role, mid, tag, "macvlan", into=nsname, link=parent, macvlan_mode="bridge")
            b.probe_addresses("tx", "rx")
            b.up("tx", "rx")
            b.wait_ready("parent", "tx", "rx")
            path = b.path("tx", "rx")
        yield path
