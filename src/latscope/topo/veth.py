"""Two network namespaces joined by a veth pair, addressed from the benchmarking ranges.

IPv4 uses 198.18.0.0/15 and IPv6 2001:2::/48 (RFC 2544 and RFC 5180: reserved
for benchmarking, never routed), so a test can never reach a real host.
Everything is created with netlink and removed in a finally path.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

from latscope.errors import PrivilegeError, TopologyError
from latscope.privileges import can_build_namespaces
from latscope.topo.base import Side, TopologyPath
from latscope.topo import netns as ns

SENDER_ADDR4, RECEIVER_ADDR4, PREFIX4 = "198.18.0.1", "198.18.0.2", 30
SENDER_ADDR6, RECEIVER_ADDR6, PREFIX6 = "2001:2::1", "2001:2::2", 64
IFA_F_NODAD = 0x02


@contextlib.contextmanager
def veth_pair(token: str | None = None, carrier_timeout_s: float = 5.0) -> Iterator[TopologyPath]:
    """Create ``<prefix>-tx`` and ``<prefix>-rx`` with a veth between them; remove both afterwards."""
    if not can_build_namespaces():
        raise PrivilegeError(
            "--topology veth needs root (network namespaces); use --topology loopback to measure without root"
        )
    from pyroute2 import IPRoute, NetNS
    from pyroute2.netlink.exceptions import NetlinkError

    ns.reap_stale()
    token = token or ns.owner_token()
    tx_ns, rx_ns = ns.name(token, "tx"), ns.name(token, "rx")
    tx_if, rx_if = f"ls{token}t"[:15], f"ls{token}r"[:15]
    created: list[str] = []
    try:
        for name in (tx_ns, rx_ns):
            ns.create(name)
            created.append(name)
        try:
            with IPRoute() as ipr:
                ipr.link("add", ifname=tx_if, kind="veth", peer={"ifname": rx_if, "net_ns_fd": rx_ns})
                ipr.link("set", index=ipr.link_lookup(ifname=tx_if)[0], net_ns_fd=tx_ns)
            sides = []
            for nsname, ifname, a4, a6 in ((tx_ns, tx_if, SENDER_ADDR4, SENDER_ADDR6),
                                           (rx_ns, rx_if, RECEIVER_ADDR4, RECEIVER_ADDR6)):
                with NetNS(nsname) as net:
                    idx = net.link_lookup(ifname=ifname)[0]
                    net.link("set", index=net.link_lookup(ifname="lo")[0], state="up")
                    net.addr("add", index=idx, address=a4, prefixlen=PREFIX4)
                    net.addr("add", index=idx, address=a6, prefixlen=PREFIX6, flags=IFA_F_NODAD)
                    net.link("set", index=idx, state="up")
                    mac = net.get_links(idx)[0].get_attr("IFLA_ADDRESS")
                sides.append(Side(nsname, ifname, a4, a6, mac))
            _wait_carrier(tx_ns, tx_if, carrier_timeout_s)
            _wait_carrier(rx_ns, rx_if, carrier_timeout_s)
        except NetlinkError as exc:
            code = exc.code if isinstance(exc.code, int) else 0
            raise TopologyError(f"cannot build the veth topology: {os.strerror(code) if code else exc}") from None
        yield TopologyPath(
            "veth",
            sides[0],
            sides[1],
            {
                "kind": "veth",
                "namespaces": [tx_ns, rx_ns],
                "interfaces": [tx_if, rx_if],
                "addresses": [f"{SENDER_ADDR4}/{PREFIX4}", f"{RECEIVER_ADDR4}/{PREFIX4}"],
            },
        )
    finally:
        for name in reversed(created):
            ns.remove(name)


def _wait_carrier(nsname: str, ifname: str, timeout_s: float) -> None:
    from pyroute2 import NetNS

    deadline = time.monotonic() + timeout_s
    with NetNS(nsname) as net:
        idx = net.link_lookup(ifname=ifname)[0]
        while time.monotonic() < deadline:
            link = net.get_links(idx)[0]
            if link.get_attr("IFLA_OPERSTATE") == "UP" and link.get_attr("IFLA_CARRIER") == 1:
                return
            time.sleep(0.01)
    raise TopologyError(f"link {ifname} in {nsname} did not come up within {timeout_s:.0f} s")

