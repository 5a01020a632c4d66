"""The VM topology as the probe sees it: the host side in a namespace, the guest side behind an agent."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from latscope.errors import PrivilegeError
from latscope.privileges import can_build_namespaces
from latscope.topo.path import Side, TopologyPath
from latscope.topo.vm import net as vmnet
from latscope.topo.vm.guest import Guest, running_guest
from latscope.topo.vm.options import VmOptions


def vm_path(guest: Guest) -> TopologyPath:
    """Sender on the host, receiver in the guest (the forward direction); legs swap them for reverse."""
    host = Side(guest.net.netns, guest.net.host_if, vmnet.HOST_ADDR4, vmnet.HOST_ADDR6, guest.net.host_mac)
    inside = Side(None, guest.hello.get("ifname"), vmnet.GUEST_ADDR4, vmnet.GUEST_ADDR6, guest.net.guest_mac,
                  agent=guest.link)
    return TopologyPath("vm", host, inside, {"kind": f"vm:{guest.net.variant}", "namespaces": [guest.net.netns],
                                             "interfaces": list(guest.net.devices), "accel": guest.accel},
                        guest=guest)


@contextlib.contextmanager
def vm_topology(opts: VmOptions | None, token: str | None = None, notify: Any = None) -> Iterator[TopologyPath]:
    if not can_build_namespaces():
        raise PrivilegeError("--topology vm needs root (a namespace, a tap device and QEMU)")
    with running_guest(opts or VmOptions(), token=token, notify=notify) as guest:
        yield vm_path(guest)
