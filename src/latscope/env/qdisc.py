"""Which time-sensitive qdiscs the kernel offers (ETF for SO_TXTIME launch times, taprio).

Asked of the kernel itself: adding the qdisc to the loopback device of a
throw-away namespace. An unknown kind fails with ENOENT; a known one accepts
or rejects the (empty) options with another error.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from latscope.testhooks import hold

KINDS = ("etf", "taprio")


def probe_kinds(kinds: tuple[str, ...] = KINDS) -> dict[str, bool | None]:
    """kind -> True (present), False (absent), None (cannot tell: not root)."""
    if os.geteuid() != 0:
        return {k: None for k in kinds}
    from pyroute2.netlink.exceptions import NetlinkError

    from latscope import netns as ns

    result: dict[str, bool | None] = {}
    with ns.scratch("probe") as name:
        try:
            hold("probe")
            with ns.rtnl(name) as net:
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
    return result


def collect() -> dict[str, Any]:
    return {"available": probe_kinds()}
