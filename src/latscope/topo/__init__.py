"""Where a measurement runs: namespaces and links latscope creates, and always removes."""

from latscope.topo.available import TOPOLOGIES, available
from latscope.topo.base import open_topology
from latscope.topo.path import Side, TopologyPath

__all__ = ["TOPOLOGIES", "Side", "TopologyPath", "available", "open_topology"]
