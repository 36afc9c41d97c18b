"""``VirtualClock``: the event queue under :class:`~hasup.testing.NodeCluster`.

Split from ``_cluster.py`` for size only. Callbacks run in time order, those due at
the same time in the order they were scheduled; nothing here reads a real clock.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

__all__ = ["VirtualClock"]


class VirtualClock:
    """Virtual time (``now``, seconds) and the callbacks scheduled on it."""

    def __init__(self) -> None:
        self.now = 0.0
        self._queue: list[tuple[float, int, Callable[[], object]]] = []
        self._seq = itertools.count()

    def _at(self, when: float, fn: Callable[[], object]) -> None:
        heapq.heappush(self._queue, (when, next(self._seq), fn))

    def call_at(self, when: float, fn: Callable[[], object]) -> None:
        """Run ``fn`` at virtual time ``when`` (not before now)."""
        self._at(max(when, self.now), fn)

    def run_until(self, t: float) -> None:
        """Advance virtual time to ``t``, processing every event due before it."""
        while self._queue and self._queue[0][0] <= t:
            when, _, fn = heapq.heappop(self._queue)
            self.now = max(self.now, when)
            fn()
        self.now = max(self.now, t)

    def advance(self, dt: float) -> None:
        self.run_until(self.now + dt)

    def run_until_true(self, predicate: Callable[[], bool], *, timeout: float) -> float:
        """Process events until ``predicate()`` holds; return the time. ``AssertionError`` on timeout."""
        deadline = self.now + timeout
        while not predicate():
            if not self._queue or self._queue[0][0] > deadline:
                self.run_until(deadline)
                if predicate():
                    break
                raise AssertionError(f"condition not reached by t={deadline:.3f}: {self._status()}")
            when, _, fn = heapq.heappop(self._queue)
            self.now = max(self.now, when)
            fn()
        return self.now

    def _status(self) -> object:
        """What a timeout message shows (the cluster shows its nodes' states)."""
        return ""
