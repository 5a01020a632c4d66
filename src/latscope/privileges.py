"""Whether this process may do what root does for latscope: namespaces, tracing, RT priorities.

Being uid 0 is not enough (a container or `setpriv` can take capabilities
away), and not being uid 0 is not always fatal (capabilities can be granted);
what counts is the effective capability set.
"""

from __future__ import annotations

from pathlib import Path

from latscope.errors import PrivilegeError

CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
CAP_SYS_ADMIN = 21


def effective_caps(status: Path = Path("/proc/self/status")) -> int:
    """The CapEff bit mask of the calling process (0 when unreadable)."""
    try:
        for line in status.read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return 0


def can_build_namespaces(caps: int | None = None) -> bool:
    """CAP_SYS_ADMIN (create and mount namespaces) and CAP_NET_ADMIN (links, addresses)."""
    c = effective_caps() if caps is None else caps
    return bool(c & (1 << CAP_SYS_ADMIN)) and bool(c & (1 << CAP_NET_ADMIN))


def can_use_raw_sockets(caps: int | None = None) -> bool:
    """CAP_NET_RAW: AF_PACKET sockets for --l2."""
    c = effective_caps() if caps is None else caps
    return bool(c & (1 << CAP_NET_RAW))


def require_raw_sockets(family: str, caps: int | None = None) -> None:
    """Refuse raw Ethernet (``family`` "packet", --l2) without CAP_NET_RAW, before anything is built.

    Otherwise the lack shows only when a worker opens its socket, after the
    namespaces and the other worker exist.
    """
    if family == "packet" and not can_use_raw_sockets(caps):
        raise PrivilegeError("--l2 needs CAP_NET_RAW to open raw Ethernet sockets: run as root, or give latscope "
                             "the capability; UDP (without --l2) needs no privileges on loopback")
