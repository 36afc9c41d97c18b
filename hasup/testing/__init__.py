"""Public test helpers, so that embedders can test their own code against hasup.

* :class:`NodeCluster` — election cores on a simulated network and virtual clock.
"""

from ._cluster import ClusterEvent, NodeCluster, SimNode

__all__ = ["ClusterEvent", "NodeCluster", "SimNode"]
