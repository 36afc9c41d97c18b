"""``FakeWitness``: the pair witness on virtual time, for :class:`~hasup.testing.NodeCluster`.

It runs the real decision code of ``hasup witness`` (:class:`~hasup.protocol._witness.
WitnessBook`) at a simulated address; the cluster routes the cores' vote requests to it
and its replies back, through the same partitions, blocks and delays as heartbeats
(its endpoint name in :meth:`NodeCluster.partition` and :meth:`NodeCluster.block` is
:attr:`FakeWitness.name`). :meth:`stop` and :meth:`start` model a crash and a restart:
a restarted witness remembers nothing, as the real one.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..protocol import KeyRing
from ..protocol._config import Address
from ..protocol._witness import WitnessBook

__all__ = ["FakeWitness"]


class FakeWitness:
    """A witness at ``address`` granting vote leases of at most ``max_lease`` seconds."""

    def __init__(self, *, max_lease: float = 10.0, address: Address = ("10.0.0.250", 5406), name: str = "witness"):
        self.max_lease = max_lease
        self.address = address
        self.name = name
        self.up = True
        self.book: WitnessBook | None = None
        self._keys: dict[int, KeyRing] = {}
        #: (time, "start"/"stop") of every crash and restart.
        self.log: list[tuple[float, str]] = []

    def attach(self, keys: Mapping[int, KeyRing], now: float) -> None:
        """Called by the cluster: the groups' witness keys; the witness starts ``now``
        (its first ``max_lease`` seconds are quiet, as after any start)."""
        self._keys = dict(keys)
        self.book = WitnessBook(self._keys, max_lease=self.max_lease, now=now)
        self.log.append((now, "start"))

    def handle(self, data: bytes, now: float) -> bytes | None:
        if not self.up or self.book is None:
            return None
        return self.book.handle(data, now)

    def stop(self, now: float) -> None:
        """Crash: no answers until :meth:`start`; everything it knew is lost."""
        self.up = False
        self.book = None
        self.log.append((now, "stop"))

    def start(self, now: float) -> None:
        """Start again with an empty book."""
        self.up = True
        self.book = WitnessBook(self._keys, max_lease=self.max_lease, now=now)
        self.log.append((now, "start"))

    def holder(self, group: int, now: float) -> str:
        return self.book.holder(group, now) if self.book is not None else ""
