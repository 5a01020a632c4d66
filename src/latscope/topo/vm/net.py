"""The host side of a guest's network, inside one namespace latscope owns.

    sender/receiver (host side)          QEMU (root namespace, holds the fd)
        lsNh 198.18.0.1 ==veth== lsNb --+-- bridge lsNbr -- tap lsNtap   (vm, vm:bridge)
                                        +-- macvtap lsNmv (mode bridge)  (vm:macvtap)

Both variants put the same veth between the host's worker and the guest's
device, so they differ only in the switch under test. The tap is opened here
(in a thread that entered the namespace) and handed to QEMU as a file
descriptor, so QEMU itself stays in the root namespace; /dev/tapN of a
macvtap is named by its ifindex *inside* the namespace.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

from latscope import netns as ns
from latscope.errors import TopologyError
from latscope.netns import in_namespace

HOST_ADDR4, GUEST_ADDR4, PREFIX4 = "198.18.0.1", "198.18.0.2", 30
HOST_ADDR6, GUEST_ADDR6, PREFIX6 = "2001:2::1", "2001:2::2", 64
GUEST_MAC = "52:54:00:4c:53:02"
VARIANTS = ("bridge", "macvtap")
TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI, IFF_VNET_HDR = 0x0002, 0x1000, 0x4000
IFA_F_NODAD = 0x02


@dataclass(frozen=True)
class HostNet:
    """What was built: the namespace, the host-side interface, the guest's device and the fd for QEMU."""

    netns: str
    host_if: str
    host_mac: str
    guest_mac: str
    tap_fd: int
    variant: str
    devices: tuple[str, ...]


def _open_tap(ifname: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", ifname.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR))
    except OSError:
        os.close(fd)
        raise
    return fd


def _free_tap_index() -> int:
    """An interface index whose /dev/tapN does not exist (the range avoids the small indexes namespaces use)."""
    rng = random.SystemRandom()
    for _ in range(100):
        n = rng.randrange(20_000, 1_000_000)
        if not os.path.exists(f"/dev/tap{n}"):
            return n
    raise TopologyError("no free /dev/tapN name for the macvtap")


def _open_macvtap(index: int, timeout_s: float = 2.0) -> int:
    # devtmpfs makes the node as soon as the link exists; give it a moment.
    path = f"/dev/tap{index}"
    deadline = time.monotonic() + timeout_s
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return os.open(path, os.O_RDWR | os.O_CLOEXEC)


@contextlib.contextmanager
def host_network(variant: str = "bridge", token: str | None = None) -> Iterator[HostNet]:
    """Build the namespace and its links for ``variant``; remove all of it (and close the fd) afterwards."""
    if variant not in VARIANTS:
        raise TopologyError(f"unknown VM network {variant!r} (choose from {', '.join(VARIANTS)})")
    from pyroute2.netlink.exceptions import NetlinkError

    ns.reap_stale()
    token = token or ns.owner_token()
    nsname = ns.name(token, "vm")
    short = token[-7:]
    host_if, sw_if, br_if = f"ls{short}h", f"ls{short}b", f"ls{short}br"
    guest_if = f"ls{short}tap" if variant == "bridge" else f"ls{short}mv"
    fd = -1
    ns.create(nsname)
    try:
        try:
            with ns.rtnl(nsname) as net:
                net.link("set", index=net.link_lookup(ifname="lo")[0], state="up")
                net.link("add", ifname=host_if, kind="veth", peer={"ifname": sw_if})
                hidx = net.link_lookup(ifname=host_if)[0]
                sidx = net.link_lookup(ifname=sw_if)[0]
                net.addr("add", index=hidx, address=HOST_ADDR4, prefixlen=PREFIX4)
                net.addr("add", index=hidx, address=HOST_ADDR6, prefixlen=PREFIX6, flags=IFA_F_NODAD)
                if variant == "bridge":
                    net.link("add", ifname=br_if, kind="bridge", br_stp_state=0, br_forward_delay=0)
                    bidx = net.link_lookup(ifname=br_if)[0]
                    net.link("set", index=sidx, master=bidx)
                else:
                    # /dev/tapN is named by the ifindex, in the one /dev of all namespaces: a fresh
                    # namespace's macvtap would get the same small index as another run's (and open
                    # its device). An index of our own choosing, free in /dev, keeps them apart.
                    net.link("add", ifname=guest_if, kind="macvtap", link=sidx, macvtap_mode="bridge",
                             index=_free_tap_index())
            if variant == "bridge":
                fd = in_namespace(nsname, _open_tap, guest_if)
            with ns.rtnl(nsname) as net:
                gidx = net.link_lookup(ifname=guest_if)[0]
                if variant == "bridge":
                    net.link("set", index=gidx, master=net.link_lookup(ifname=br_if)[0])
                    guest_mac = GUEST_MAC
                else:
                    guest_mac = net.get_links(gidx)[0].get_attr("IFLA_ADDRESS")
                names = [host_if, sw_if, guest_if] + ([br_if] if variant == "bridge" else [])
                for name in names:
                    net.link("set", index=net.link_lookup(ifname=name)[0], state="up")
                host_mac = net.get_links(hidx)[0].get_attr("IFLA_ADDRESS")
            if variant == "macvtap":
                fd = _open_macvtap(gidx)
        except NetlinkError as exc:
            code = exc.code if isinstance(exc.code, int) else 0
            raise TopologyError(f"cannot build the VM network: {os.strerror(code) if code else exc}") from None
        except OSError as exc:
            raise TopologyError(f"cannot open the guest's tap device: {exc.strerror or exc}") from None
        _wait_up(nsname, host_if)
        yield HostNet(nsname, host_if, host_mac, guest_mac, fd, variant, tuple(names))
    finally:
        if fd >= 0:
            os.close(fd)
        ns.remove(nsname)


def _wait_up(nsname: str, ifname: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    with ns.rtnl(nsname) as net:
        idx = net.link_lookup(ifname=ifname)[0]
        while time.monotonic() < deadline:
            if net.get_links(idx)[0].get_attr("IFLA_OPERSTATE") == "UP":
                return
            time.sleep(0.01)
    raise TopologyError(f"link {ifname} in {nsname} did not come up within {timeout_s:.0f} s")
