"""The path under test as the probe sees it: two sides, each maybe in a namespace."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from latscope.errors import ConfigError

TOPOLOGIES = ("veth", "loopback", "none", "vm", "vm:bridge", "vm:macvtap")


@dataclass(frozen=True)
class Side:
    """One end: the namespace it runs in (None: the controller's), its interface and addresses."""

    netns: str | None
    ifname: str | None
    address4: str | None
    address6: str | None
    mac: str | None = None
    #: The guest's control link when this side runs in a VM (its workers start there).
    agent: Any = None


@dataclass(frozen=True)
class TopologyPath:
    """What the sender and receiver need to know about the path, and how it was built."""

    kind: str
    sender: Side
    receiver: Side
    description: dict[str, Any] = field(default_factory=dict)
    #: The running guest of a VM topology (latscope.topo.vm.guest.Guest).
    guest: Any = None


@contextlib.contextmanager
def open_topology(kind: str, *, dest: str | None = None, token: str | None = None, vm: Any = None,
                  notify: Any = None) -> Iterator[TopologyPath]:
    """Build topology ``kind`` for the duration of the ``with`` block, removing all of it afterwards."""
    if kind == "vm" or kind.startswith("vm:"):
        from latscope.topo.vm.topology import vm_topology

        with vm_topology(vm, token=token, notify=notify) as path:
            yield path
    elif kind == "veth":
        from latscope.topo.veth import veth_pair

        with veth_pair(token=token) as path:
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
        raise ConfigError(f"unknown topology {kind!r} (choose from {', '.join(TOPOLOGIES)})")
