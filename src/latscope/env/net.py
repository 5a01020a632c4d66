"""Network interfaces of the current namespace: driver, MTU, qdisc, offloads and timestamping."""

from __future__ import annotations

import socket
from typing import Any

from latscope.env import ethtool


def interfaces() -> list[dict[str, Any]]:
    """One entry per interface of the calling thread's network namespace."""
    from pyroute2 import IPRoute

    out: list[dict[str, Any]] = []
    with IPRoute() as ipr, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        qdiscs: dict[int, str] = {}
        for q in ipr.get_qdiscs():
            if q.get("parent") == 0xFFFFFFFF:
                qdiscs[q["index"]] = q.get_attr("TCA_KIND")
        for link in ipr.get_links():
            name = link.get_attr("IFLA_IFNAME")
            info = link.get_attr("IFLA_LINKINFO")
            kind = info.get_attr("IFLA_INFO_KIND") if info else None
            out.append({
                "name": name,
                "kind": kind,
                "driver": ethtool.driver(sock, name),
                "state": link.get_attr("IFLA_OPERSTATE"),
                "mtu": link.get_attr("IFLA_MTU"),
                "address": link.get_attr("IFLA_ADDRESS"),
                "qdisc": qdiscs.get(link["index"]),
                "num_tx_queues": link.get_attr("IFLA_NUM_TX_QUEUES"),
                "timestamping": ethtool.timestamping(sock, name),
            })
    return out


def collect() -> dict[str, Any]:
    try:
        return {"interfaces": interfaces()}
    except OSError as exc:
        return {"interfaces": [], "error": str(exc)}
