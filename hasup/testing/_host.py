"""``SimHost``: what a simulated side service (coordinator, sync engine) needs from the
simulation that runs the election cores.

:class:`~hasup.testing.NodeCluster` implements it. The fakes never call a core
directly: they schedule a callback on the virtual clock and hand the core's input to
:meth:`SimHost.deliver`, like the supervisor's adapters hand theirs to its driver
(``Driver.input(lambda n, now: ...)``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ..protocol import Node

__all__ = ["NodeInput", "SimHost"]

#: One input for a core, called with the node and the virtual ``now``.
NodeInput = Callable[[Node, float], None]


class SimHost(Protocol):
    """The virtual clock, the nodes' incarnations and their network, seen by a fake."""

    #: The virtual time (seconds).
    now: float

    @property
    def names(self) -> list[str]:
        """Every node of the simulation, in configuration order."""
        ...

    def call_at(self, when: float, fn: Callable[[], object]) -> None:
        """Run ``fn`` at virtual time ``when`` (events due at the same time run in the
        order they were scheduled)."""
        ...

    def incarnation(self, name: str) -> int | None:
        """Which boot of ``name`` runs now (``None``: its hasup is down)."""
        ...

    def deliver(self, name: str, incarnation: int, fn: NodeInput) -> bool:
        """Give ``fn`` to the core of ``name`` if that boot still runs; False if it is gone."""
        ...

    def service_running(self, name: str) -> bool:
        """Whether the simulated service of ``name`` is active (start issued, not yet
        confirmed stopped)."""
        ...

    def can_reach(self, src: str, dst: str) -> bool:
        """Whether traffic from ``src`` reaches ``dst`` now (partitions, blocks, links)."""
        ...

    def record(self, name: str, kind: str, detail: str = "") -> None:
        """Add an event to the simulation's event log."""
        ...
