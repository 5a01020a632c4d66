"""Two veths joined by XDP redirect programs in a middle namespace instead of a bridge.

    tx: t --veth-- s1 [mid] r1 --veth-- rx: r
    XDP on s1: bpf_redirect(r1); XDP on r1: bpf_redirect(s1)

A frame the sender puts on t arrives at s1, whose program sends it out of r1
at once (ndo_xdp_xmit), so it reaches r without the middle namespace's
stack, bridge or routing ever seeing it; the same the other way, so ARP and
neighbour discovery work as on a wire. A veth hands redirected frames to its
peer only when the peer runs in NAPI mode, which an attached XDP program
switches on (without one the redirect fails: every frame is dropped and
counted as an RX drop of the redirecting device, as seen on this kernel): so t and r carry a program too, one that passes every frame.
All four programs are attached in driver (native) mode.

A redirected frame also loses the skb's "checksum still to be filled in"
mark (CHECKSUM_PARTIAL, which a veth keeps by offloading TX checksums), so
the receiver would drop every UDP datagram as corrupt: t and r compute
their checksums in software (TX checksum offload off, `ethtool -K tx off`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from latscope.errors import TopologyError
from latscope.topo import bpf
from latscope.topo.build import Build, building, netlink_errors
from latscope.topo.path import TopologyPath

XDP_FLAGS_DRV_MODE = 1 << 2
REDIRECT_NAME, PASS_NAME = "latscope_redir", "latscope_pass"


def attach(b: Build, role: str, program: bytes, name: str, **settings: object) -> None:
    """Load ``program`` and attach it to ``role``'s device in driver mode; the device then holds it alone."""
    fd = bpf.load_xdp(program, name)
    try:
        info = bpf.prog_info(fd)
        b.set(role, xdp={"attrs": [("IFLA_XDP_FD", fd), ("IFLA_XDP_FLAGS", XDP_FLAGS_DRV_MODE)]})
    except OSError as exc:
        raise TopologyError(f"cannot read back XDP program {name}: {exc.strerror}") from None
    finally:
        os.close(fd)
    b.devices[role].settings["xdp"] = {"program": name, "tag": info.tag, "mode": "drv", **settings}


@contextlib.contextmanager
def xdp_path(token: str | None = None) -> Iterator[TopologyPath]:
    """tx and rx joined by two veths whose middle ends redirect to each other with XDP."""
    with building("xdp", token) as b:
        with netlink_errors("xdp"):
            tx, rx, mid = b.namespace("tx"), b.namespace("rx"), b.namespace("mid")
            b.veth(("tx", tx, "t"), ("s1", mid, "s1"))
            b.veth(("rx", rx, "r"), ("r1", mid, "r1"))
            s1, r1 = b.index("s1"), b.index("r1")
            attach(b, "s1", bpf.redirect_program(r1), REDIRECT_NAME, redirect_to="r1")
            attach(b, "r1", bpf.redirect_program(s1), REDIRECT_NAME, redirect_to="s1")
            b.tx_checksum("tx", False)
            b.tx_checksum("rx", False)
            attach(b, "tx", bpf.pass_program(), PASS_NAME, action="pass")
            attach(b, "rx", bpf.pass_program(), PASS_NAME, action="pass")
            b.probe_addresses("tx", "rx")
            b.up("s1", "r1", "tx", "rx")
            b.wait_ready("s1", "r1", "tx", "rx")
            path = b.path("tx", "rx")
        yield path
