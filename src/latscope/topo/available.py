"""Whether this machine can build a topology, and why not: asked of the kernel, cheaply, before any run.

``available(kind)`` is the one answer `run` (refusing before anything is set
up), `doctor` (listing every topology) and a campaign planner (refusing
impossible levels) share. The host topologies are tried for real, in
miniature, inside a scratch namespace that is removed again: a veth pair,
then the device the topology needs on it (a bridge, a macvlan in bridge
mode, a vxlan), or for xdp an XDP program loaded and attached in driver
mode. The answer per kind is kept for the life of the process.
"""

from __future__ import annotations

import functools
import os
import platform
import shutil
from pathlib import Path

from latscope.errors import LatscopeError
from latscope.privileges import can_build_namespaces

TOPOLOGIES = ("veth", "loopback", "none", "vm", "vm:bridge", "vm:macvtap", "bridge", "macvlan", "vxlan", "xdp",
              "ovs")
#: Built from namespaces and links on this host, with netlink.
HOST_TOPOLOGIES = ("veth", "bridge", "macvlan", "vxlan", "xdp")
#: The kernel option behind each kind, named when the kernel refuses it.
CONFIG = {"veth": "CONFIG_VETH", "bridge": "CONFIG_BRIDGE", "macvlan": "CONFIG_MACVLAN", "vxlan": "CONFIG_VXLAN",
          "xdp": "CONFIG_BPF_SYSCALL and XDP in veth", "ovs": "CONFIG_OPENVSWITCH"}
MODULES_ROOT = Path("/lib/modules")
SYS_MODULE = Path("/sys/module")


def available(kind: str) -> str | None:
    """None when this machine can build topology ``kind``, else the reason it cannot (one line)."""
    if kind not in TOPOLOGIES:
        return f"unknown topology (choose from {', '.join(TOPOLOGIES)})"
    if kind in ("loopback", "none"):
        return None
    if kind == "ovs":
        return ovs_reason()
    if not can_build_namespaces():
        return "needs root (network namespaces)"
    if kind == "vm" or kind.startswith("vm:"):
        return vm_reason()
    return _kernel_refuses(kind)


def ovs_reason(sys_module: Path = SYS_MODULE, modules_root: Path = MODULES_ROOT) -> str:
    """Why there is no ovs topology here: no openvswitch module in this kernel, or no builder in latscope."""
    release = platform.release()
    mod_dir = modules_root / release
    listed = False
    for name in ("modules.builtin", "modules.dep"):
        try:
            listed = listed or "/openvswitch.ko" in (mod_dir / name).read_text()
        except OSError:
            continue
    if not (sys_module / "openvswitch").exists() and not listed:
        return f"no openvswitch module in this kernel {release} ({CONFIG['ovs']}: not loaded, built in or installed)"
    return "latscope has no Open vSwitch builder yet (the kernel module is there)"


def vm_reason() -> str | None:
    """What a VM topology needs before latscope even tries: QEMU and /dev/net/tun (doctor's `vm` check: more)."""
    if shutil.which("qemu-system-x86_64") is None:
        return "no qemu-system-x86_64 (install qemu-system-x86; ./dev setup does)"
    if not os.path.exists("/dev/net/tun"):
        return "no /dev/net/tun"
    return None


@functools.cache
def _kernel_refuses(kind: str) -> str | None:
    """Build ``kind``'s characteristic device in a scratch namespace; the reason if the kernel refuses."""
    from pyroute2.netlink.exceptions import NetlinkError

    from latscope import netns as ns

    step = "a veth pair"
    try:
        with ns.scratch("check") as name, ns.rtnl(name) as net:
            net.link("add", ifname="c0", kind="veth", peer={"ifname": "c1"})
            c0, c1 = net.link_lookup(ifname="c0")[0], net.link_lookup(ifname="c1")[0]
            if kind == "bridge":
                step = "a bridge with STP off and forward delay 0"
                net.link("add", ifname="b0", kind="bridge", br_stp_state=0, br_forward_delay=0)
                net.link("set", index=c1, master=net.link_lookup(ifname="b0")[0])
            elif kind == "macvlan":
                step = "a macvlan in bridge mode"
                net.link("add", ifname="m0", kind="macvlan", link=c0, macvlan_mode="bridge")
            elif kind == "vxlan":
                step = "a vxlan"
                net.link("add", ifname="x0", kind="vxlan", vxlan_id=1, vxlan_port=4789, vxlan_link=c0,
                         vxlan_local="198.18.1.1", vxlan_group="198.18.1.2")
            elif kind == "xdp":
                step = "an XDP program attached in driver mode"
                _xdp_attaches(net, c0, c1)
    except NetlinkError as exc:
        code = exc.code if isinstance(exc.code, int) else 0
        return f"the kernel cannot make {step}: {os.strerror(code) if code else exc} ({CONFIG.get(kind, '')})"
    except LatscopeError as exc:
        return str(exc)
    except OSError as exc:
        return f"cannot try {step}: {exc.strerror or exc}"
    return None


def _xdp_attaches(net: object, c0: int, c1: int) -> None:
    """Load the redirect and pass programs xdp uses and attach one in driver mode (raises what fails)."""
    from latscope.topo import bpf
    from latscope.topo.xdp import XDP_FLAGS_DRV_MODE

    fds = []
    try:
        fds.append(bpf.load_xdp(bpf.redirect_program(c1), "latscope_check"))
        fds.append(bpf.load_xdp(bpf.pass_program(), "latscope_check"))
        net.link("set", index=c0,  # type: ignore[attr-defined]
                 xdp={"attrs": [("IFLA_XDP_FD", fds[0]), ("IFLA_XDP_FLAGS", XDP_FLAGS_DRV_MODE)]})
    finally:
        for fd in fds:
            os.close(fd)
