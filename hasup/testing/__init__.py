"""Public test helpers, so that embedders can test their own code against hasup.

* :class:`NodeCluster` — election cores on a simulated network and virtual clock.
* :class:`MemoryNetwork`, :class:`MockBackend`, :class:`MemoryStateFile` — in-memory
  I/O for :class:`~hasup.Supervisor` tests on a mock clock.
* :func:`supervisor_harness`, :func:`config_text`, :func:`wait_for` — boot, kill and
  restart supervisors in one task group; write their configs; wait with a deadline.
* :class:`HasupProcess`, :func:`loopback_node`, :class:`AnswerSampler` — real
  ``hasup run`` processes on loopback, their ``/status``, their services' answers.
"""

from ._cluster import ClusterEvent, NodeCluster, SimNode
from ._harness import TEST_KEY, SupervisorHarness, config_text, pair_configs, supervisor_harness, toml_value
from ._memory import MemoryNetwork, MemoryStateFile, MemoryTransport, MockBackend
from ._subprocess import (
    AnswerSampler,
    HasupProcess,
    free_port,
    free_ports,
    http_answers,
    http_service,
    loopback_node,
    write_key_file,
)
from ._wait import wait_for, wait_until

__all__ = [
    "ClusterEvent",
    "MemoryNetwork",
    "MemoryStateFile",
    "MemoryTransport",
    "MockBackend",
    "NodeCluster",
    "SimNode",
    "TEST_KEY",
    "AnswerSampler",
    "HasupProcess",
    "SupervisorHarness",
    "config_text",
    "free_port",
    "free_ports",
    "http_answers",
    "http_service",
    "loopback_node",
    "pair_configs",
    "supervisor_harness",
    "toml_value",
    "wait_for",
    "wait_until",
    "write_key_file",
]
