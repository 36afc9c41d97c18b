"""Public test helpers, so that embedders can test their own code against hasup.

* :class:`NodeCluster` — election cores on a simulated network and virtual clock;
  with :class:`FakeCoordinator` (leader election on a lease) and
  :class:`FakeSyncEngine` (data-sync engines) it also executes the cores' coordinator
  and sync actions; with :class:`FakeWitness` it answers their witness vote
  requests. :class:`SimHost` is what such fakes need from the simulation.
* :class:`MemoryNetwork`, :class:`MockBackend`, :class:`MemoryStateFile` — in-memory
  I/O for :class:`~hasup.Supervisor` tests on a mock clock.
* :func:`supervisor_harness`, :func:`config_text`, :func:`wait_for` — boot, kill and
  restart supervisors in one task group; write their configs; wait with a deadline.
* :class:`HasupProcess`, :func:`loopback_node`, :class:`AnswerSampler` — real
  ``hasup run`` processes on loopback, their ``/status``, their services' answers.
"""

from ._cluster import ClusterEvent, NodeCluster, SimNode
from ._coordinator import FakeCoordinator, Tenure
from ._fakesync import FakeSyncEngine, PullRecord
from ._harness import TEST_KEY, SupervisorHarness, config_text, pair_configs, supervisor_harness, toml_value
from ._host import NodeInput, SimHost
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
from ._witness import FakeWitness

__all__ = [
    "ClusterEvent",
    "FakeCoordinator",
    "FakeSyncEngine",
    "FakeWitness",
    "MemoryNetwork",
    "MemoryStateFile",
    "MemoryTransport",
    "MockBackend",
    "NodeCluster",
    "NodeInput",
    "PullRecord",
    "SimHost",
    "SimNode",
    "Tenure",
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
