"""Where a measurement runs: namespaces and links latscope creates, and always removes."""

from latscope.topo.base import Side, TopologyPath, open_topology

__all__ = ["Side", "TopologyPath", "open_topology"]
