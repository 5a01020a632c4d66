"""Which time-sensitive qdiscs the kernel offers (ETF for SO_TXTIME launch times, taprio).

Asked of the kernel itself: adding the qdisc to the loopback device of a
throw-away namespace. An unknown kind fails with ENOENT; a known one accepts
or rejects the (empty) options with another error.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from latscope.stopping import deferred
from latscope.testhooks import hold

KINDS = ("etf", "taprio")


def probe_kinds(kinds: tuple[str, ...] = KINDS) -> dict[str, bool | None]:
    """kind -> True (present), False (absent), None (cannot tell: not root)."""
    if os.geteuid() != 0:
        return {k: None for k in kinds}
    from pyroute2 import NetNS
    from pyroute2.netlink.exceptions import NetlinkError

    from latscope.topo import netns as ns

    name = ns.name(ns.owner_token(), "probe")
    result: dict[str, bool | None] = {}
    # A stop signal waits until the namespace is gone again (it used to land between create and
    # remove and leave it behind); the probe takes a few milliseconds.
    with deferred():
        ns.create(name)
        try:
            hold("probe")
            with NetNS(name) as net:
                lo = net.link_lookup(ifname="lo")[0]
                for kind in kinds:
                    try:
                        net.tc("add", kind, index=lo, handle=0)
                        result[kind] = True
                    except NetlinkError as exc:
                        result[kind] = exc.code != errno.ENOENT
                    except (ValueError, KeyError, TypeError):
                        result[kind] = None
        except OSError:
            result = {k: None for k in kinds}
        finally:
            ns.remove(name)
    return result


def collect() -> dict[str, Any]:
    return {"available": probe_kinds()}
