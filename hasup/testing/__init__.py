"""Public test helpers, so that embedders can test their own code against hasup.

* :class:`NodeCluster` — election cores on a simulated network and virtual clock.
* :class:`MemoryNetwork`, :class:`MockBackend`, :class:`MemoryStateFile` — in-memory
  I/O for :class:`~hasup.Supervisor` tests on a mock clock.
"""

from ._cluster import ClusterEvent, NodeCluster, SimNode
from ._memory import MemoryNetwork, MemoryStateFile, MemoryTransport, MockBackend

__all__ = [
    "ClusterEvent",
    "MemoryNetwork",
    "MemoryStateFile",
    "MemoryTransport",
    "MockBackend",
    "NodeCluster",
    "SimNode",
]
