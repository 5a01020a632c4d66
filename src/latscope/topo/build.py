"""What the host topologies share: their namespaces, veth ends, addresses, readiness and description.

Every host topology (veth, bridge, macvlan, vxlan, xdp) is a few namespaces
named by latscope.netns (``latscope-<token>-<role>``) with links made over
netlink (pyroute2) inside them, never in the controller's namespace: a
killed run leaves only namespaces, which the next run reaps, and every link
and XDP program goes with its namespace. ``building`` removes them all in a
finally path.

Addresses come from the benchmarking ranges, IPv4 198.18.0.0/15 and IPv6
2001:2::/48 (RFC 2544 and RFC 5180: reserved for benchmarking, never
routed), so a test can never reach a real host.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from latscope import netns as ns
from latscope.errors import PrivilegeError, TopologyError
from latscope.privileges import can_build_namespaces
from latscope.topo.path import Side, TopologyPath

SENDER_ADDR4, RECEIVER_ADDR4, PREFIX4 = "198.18.0.1", "198.18.0.2", 30
SENDER_ADDR6, RECEIVER_ADDR6, PREFIX6 = "2001:2::1", "2001:2::2", 64
IFA_F_NODAD = 0x02
CARRIER_TIMEOUT_S = 5.0
#: Operational states of a device that carries frames: UP, or UNKNOWN for devices without a notion of it (vxlan).
READY_STATES = ("UP", "UNKNOWN")


def ifname(token: str, tag: str) -> str:
    """A device name unique across the run's namespaces (traces name devices): ``ls<token><tag>``."""
    return f"ls{token}{tag}"[:15]


@dataclass
class Device:
    """A device latscope made: where it is, what it is for, and what was asked of it."""

    role: str
    netns: str
    ifname: str
    peer: str | None = None
    #: Settings the builder chose that the kernel does not report back (program names, what it redirects to).
    settings: dict[str, Any] = field(default_factory=dict)
    addresses: list[str] = field(default_factory=list)


class Build:
    """The namespaces and devices of one topology while it is built and used."""

    def __init__(self, kind: str, token: str) -> None:
        self.kind = kind
        self.token = token
        self.namespaces: list[str] = []
        self.devices: dict[str, Device] = {}

    # -- making things ------------------------------------------------------------------------------------------

    def namespace(self, role: str) -> str:
        """Create the namespace of ``role`` (tx, rx, br, mid), with its loopback up."""
        name = ns.name(self.token, role)
        ns.create(name)
        self.namespaces.append(name)
        with ns.rtnl(name) as net:
            net.link("set", index=net.link_lookup(ifname="lo")[0], state="up")
        return name

    def veth(self, a: tuple[str, str, str], b: tuple[str, str, str]) -> tuple[Device, Device]:
        """A veth pair between (role, namespace, tag) ``a`` and ``b``, made inside ``a``'s namespace."""
        (a_role, a_ns, a_tag), (b_role, b_ns, b_tag) = a, b
        a_if, b_if = ifname(self.token, a_tag), ifname(self.token, b_tag)
        peer: dict[str, Any] = {"ifname": b_if}
        if b_ns != a_ns:
            peer["net_ns_fd"] = b_ns
        with ns.rtnl(a_ns) as net:
            net.link("add", ifname=a_if, kind="veth", peer=peer)
        da = self.devices[a_role] = Device(a_role, a_ns, a_if, peer=b_role)
        db = self.devices[b_role] = Device(b_role, b_ns, b_if, peer=a_role)
        return da, db

    def link(self, role: str, nsname: str, tag: str, kind: str, *, into: str | None = None,
             settings: dict[str, Any] | None = None, **attrs: Any) -> Device:
        """A device of ``kind`` made in ``nsname`` (on its devices there), then living in ``into`` if given."""
        name = ifname(self.token, tag)
        extra = {"net_ns_fd": into} if into and into != nsname else {}
        with ns.rtnl(nsname) as net:
            net.link("add", ifname=name, kind=kind, **attrs, **extra)
        dev = self.devices[role] = Device(role, into or nsname, name, settings=dict(settings or {}))
        return dev

    def index(self, role: str) -> int:
        dev = self.devices[role]
        with ns.rtnl(dev.netns) as net:
            found = net.link_lookup(ifname=dev.ifname)
        if not found:
            raise TopologyError(f"{dev.ifname} vanished from {dev.netns}")
        return int(found[0])

    def set(self, role: str, **attrs: Any) -> None:
        """``ip link set`` of ``role``'s device: state="up", master=..., mtu=..., xdp=..."""
        dev = self.devices[role]
        with ns.rtnl(dev.netns) as net:
            net.link("set", index=net.link_lookup(ifname=dev.ifname)[0], **attrs)

    def up(self, *roles: str) -> None:
        for role in roles:
            self.set(role, state="up")

    def address(self, role: str, addr4: str, prefix4: int, addr6: str | None = None, prefix6: int = PREFIX6) -> None:
        """Give ``role``'s device an IPv4 (and IPv6, without duplicate address detection) address."""
        dev = self.devices[role]
        with ns.rtnl(dev.netns) as net:
            idx = net.link_lookup(ifname=dev.ifname)[0]
            net.addr("add", index=idx, address=addr4, prefixlen=prefix4)
            dev.addresses.append(f"{addr4}/{prefix4}")
            if addr6:
                net.addr("add", index=idx, address=addr6, prefixlen=prefix6, flags=IFA_F_NODAD)
                dev.addresses.append(f"{addr6}/{prefix6}")

    def probe_addresses(self, sender: str, receiver: str) -> None:
        """The probe's addresses: 198.18.0.1/30 and 2001:2::1/64 on ``sender``, .2 and ::2 on ``receiver``."""
        self.address(sender, SENDER_ADDR4, PREFIX4, SENDER_ADDR6)
        self.address(receiver, RECEIVER_ADDR4, PREFIX4, RECEIVER_ADDR6)

    def tx_checksum(self, role: str, on: bool) -> None:
        """Switch TX checksum offload of ``role``'s device (an ethtool ioctl inside its namespace)."""
        import socket

        from latscope.env import ethtool

        dev = self.devices[role]

        def switch() -> bool | None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                ethtool.set_tx_checksum(sock, dev.ifname, on)
                return ethtool.tx_checksum(sock, dev.ifname)

        try:
            now = ns.in_namespace(dev.netns, switch)
        except OSError as exc:
            raise TopologyError(f"cannot switch TX checksum offload of {dev.ifname}: {exc.strerror or exc}") from None
        dev.settings["tx_checksum_offload"] = now

    # -- waiting and describing ----------------------------------------------------------------------------------

    def wait_ready(self, *roles: str, timeout_s: float = CARRIER_TIMEOUT_S) -> None:
        """Block until every device of ``roles`` has carrier and is operationally up (bridge ports: forwarding)."""
        deadline = time.monotonic() + timeout_s
        for role in roles:
            dev = self.devices[role]
            with ns.rtnl(dev.netns) as net:
                idx = net.link_lookup(ifname=dev.ifname)[0]
                while True:
                    link = net.get_links(idx)[0]
                    port = _bridge_port_state(link)
                    if (link.get_attr("IFLA_OPERSTATE") in READY_STATES and link.get_attr("IFLA_CARRIER") == 1
                            and port in (None, BR_STATE_FORWARDING)):
                        break
                    if time.monotonic() > deadline:
                        raise TopologyError(f"link {dev.ifname} in {dev.netns} did not come up within "
                                            f"{timeout_s:.0f} s")
                    time.sleep(0.01)

    def side(self, role: str, addr4: str | None, addr6: str | None) -> Side:
        """What a probe half needs of its end: namespace, device, addresses, MAC."""
        dev = self.devices[role]
        with ns.rtnl(dev.netns) as net:
            mac = net.get_links(net.link_lookup(ifname=dev.ifname)[0])[0].get_attr("IFLA_ADDRESS")
        return Side(dev.netns, dev.ifname, addr4, addr6, mac)

    def describe(self) -> dict[str, Any]:
        """The run.json description: every device with its kind, namespace, settings (as the kernel reports
        them where it does), MTU, MAC and addresses."""
        devices: dict[str, Any] = {}
        by_index: dict[tuple[str, int], str] = {}
        links: dict[str, Any] = {}
        for role, dev in self.devices.items():
            with ns.rtnl(dev.netns) as net:
                link = net.get_links(net.link_lookup(ifname=dev.ifname)[0])[0]
            links[role] = link
            by_index[(dev.netns, link["index"])] = role
        for role, dev in self.devices.items():
            link = links[role]
            info = link.get_attr("IFLA_LINKINFO")
            kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
            data = info.get_attr("IFLA_INFO_DATA") if info is not None else None
            entry: dict[str, Any] = {
                "ifname": dev.ifname, "kind": kind, "namespace": dev.netns, "mtu": link.get_attr("IFLA_MTU"),
                "mac": link.get_attr("IFLA_ADDRESS"), "addresses": list(dev.addresses),
            }
            if dev.peer:
                entry["peer"] = dev.peer
            master = link.get_attr("IFLA_MASTER")
            if master:
                entry["master"] = by_index.get((dev.netns, master), master)
            settings = {**_kernel_settings(kind, data, dev.netns, by_index), **dev.settings}
            xdp = _xdp_attached(link)
            if xdp:
                settings["xdp"] = {**xdp, **settings.get("xdp", {})}
            if settings:
                entry["settings"] = settings
            devices[role] = entry
        addresses = [a for dev in self.devices.values() for a in dev.addresses]
        return {"kind": self.kind, "namespaces": list(self.namespaces),
                "interfaces": [d.ifname for d in self.devices.values()], "addresses": addresses,
                "devices": devices}

    def path(self, sender: str, receiver: str, *, ipv6: bool = True) -> TopologyPath:
        """The finished path: the sender at ``sender``'s device, the receiver at ``receiver``'s."""
        return TopologyPath(
            self.kind,
            self.side(sender, SENDER_ADDR4, SENDER_ADDR6 if ipv6 else None),
            self.side(receiver, RECEIVER_ADDR4, RECEIVER_ADDR6 if ipv6 else None),
            self.describe(),
        )


BR_STATE_FORWARDING = 3


def _bridge_port_state(link: Any) -> int | None:
    """The STP state of a bridge port (IFLA_INFO_SLAVE_DATA), None when ``link`` is no bridge port."""
    info = link.get_attr("IFLA_LINKINFO")
    if info is None or info.get_attr("IFLA_INFO_SLAVE_KIND") != "bridge":
        return None
    data = info.get_attr("IFLA_INFO_SLAVE_DATA")
    state = data.get_attr("IFLA_BRPORT_STATE") if data is not None else None
    return int(state) if state is not None else None


def _kernel_settings(kind: str | None, data: Any, netns: str, by_index: dict[tuple[str, int], str]) -> dict[str, Any]:
    """What the kernel reports of the settings latscope chose, per kind."""
    if data is None:
        return {}
    get = data.get_attr
    if kind == "bridge":
        return {"stp_state": get("IFLA_BR_STP_STATE"), "forward_delay": get("IFLA_BR_FORWARD_DELAY"),
                "vlan_filtering": get("IFLA_BR_VLAN_FILTERING")}
    if kind == "macvlan":
        return {"mode": get("IFLA_MACVLAN_MODE")}
    if kind == "vxlan":
        link = get("IFLA_VXLAN_LINK")
        return {"vni": get("IFLA_VXLAN_ID"), "port": get("IFLA_VXLAN_PORT"), "remote": get("IFLA_VXLAN_GROUP"),
                "local": get("IFLA_VXLAN_LOCAL"), "underlay": by_index.get((netns, link), link),
                "learning": get("IFLA_VXLAN_LEARNING")}
    return {}


def _xdp_attached(link: Any) -> dict[str, Any]:
    """The XDP program the kernel reports on ``link`` (IFLA_XDP): its id and attach mode, or {}."""
    xdp = link.get_attr("IFLA_XDP")
    if xdp is None:
        return {}
    mode = xdp.get_attr("IFLA_XDP_ATTACHED")
    if not mode:
        return {}
    return {"prog_id": xdp.get_attr("IFLA_XDP_PROG_ID"), "attached": {"xdp": "drv", "xdpgeneric": "skb",
                                                                 "xdpoffload": "hw"}.get(mode, mode)}


@contextlib.contextmanager
def building(kind: str, token: str | None = None) -> Iterator[Build]:
    """A Build of topology ``kind`` whose namespaces (and with them every device) go when the block ends."""
    if not can_build_namespaces():
        raise PrivilegeError(f"--topology {kind} needs root (network namespaces); use --topology loopback to "
                             "measure without root")
    ns.reap_stale()
    b = Build(kind, token or ns.owner_token())
    try:
        yield b
    finally:
        for name in reversed(b.namespaces):
            ns.remove(name)


@contextlib.contextmanager
def netlink_errors(kind: str) -> Iterator[None]:
    """Netlink refusals while building ``kind`` as one TopologyError naming the errno."""
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        yield
    except NetlinkError as exc:
        code = exc.code if isinstance(exc.code, int) else 0
        raise TopologyError(f"cannot build the {kind} topology: {os.strerror(code) if code else exc}") from None
