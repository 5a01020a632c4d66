"""The path under test as the probe sees it: two sides, each maybe in a namespace.

The data every topology builder returns, apart from the builders themselves
(base.py picks a builder; the builders import this, never base.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
    #: Between network agents (kind "agents"): the hosts' part of run.json, stored as environment.hosts
    #: (each host's agent, hello and environment, and what the clock checks found).
    hosts: dict[str, Any] | None = None
