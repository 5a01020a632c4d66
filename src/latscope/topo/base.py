"""Which topology a run gets: one function builds any of them by name, and removes all of it afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from latscope.errors import ConfigError
from latscope.topo.available import TOPOLOGIES, available
from latscope.topo.path import Side, TopologyPath

__all__ = ["TOPOLOGIES", "Side", "TopologyPath", "open_topology"]


@contextlib.contextmanager
def open_topology(kind: str, *, dest: str | None = None, token: str | None = None, vm: Any = None,
                  notify: Any = None) -> Iterator[TopologyPath]:
    """Build topology ``kind`` for the duration of the ``with`` block, removing all of it afterwards."""
    if kind not in TOPOLOGIES:
        raise ConfigError(f"unknown topology {kind!r} (choose from {', '.join(TOPOLOGIES)})")
    if kind == "vm" or kind.startswith("vm:"):
        from latscope.topo.vm.topology import vm_topology

        with vm_topology(vm, token=token, notify=notify) as path:
            yield path
    elif kind == "loopback":
        yield TopologyPath(
            "loopback",
            Side(None, "lo", "127.0.0.1", "::1", "00:00:00:00:00:00"),
            Side(None, "lo", "127.0.0.1", "::1", "00:00:00:00:00:00"),
            {"kind": "loopback"},
        )
    elif kind == "none":
        if not dest:
            raise ConfigError("--topology none needs --dest HOST:PORT")
        yield TopologyPath(
            "none",
            Side(None, None, None, None),
            Side(None, None, "0.0.0.0", "::", None),
            {"kind": "none", "dest": dest},
        )
    else:
        with _host_builder(kind)(token=token) as path:
            yield path


def _host_builder(kind: str) -> Any:
    """The builder of a host topology (namespaces only); ones this machine cannot build are refused first."""
    reason = available(kind)
    if reason:
        raise ConfigError(f"--topology {kind}: {reason}")
    if kind == "veth":
        from latscope.topo.veth import veth_pair

        return veth_pair
    if kind == "bridge":
        from latscope.topo.bridge import bridge_path

        return bridge_path
    if kind == "macvlan":
        from latscope.topo.macvlan import macvlan_path

        return macvlan_path
    if kind == "vxlan":
        from latscope.topo.vxlan import vxlan_path

        return vxlan_path
    if kind == "xdp":
        from latscope.topo.xdp import xdp_path

        return xdp_path
    raise ConfigError(f"--topology {kind}: latscope has no builder for it")
