"""Who holds the service, as seen by one node, and the windows between holders (pure).

The handover ledger records every change of holder with the time no node held the
service and the time two did. Which move happened (term, from, to) is the core's
knowledge; the windows are measured on the same inputs the core decides on (each with
its ``now``): this node's confirmed starts and stops, and peers' ACTIVE flags.
"""

from __future__ import annotations

from collections.abc import Mapping

from ._actions import Handover

__all__ = ["HandoverTracker"]


class HandoverTracker:
    """Feed :meth:`observe` after every decision round; it returns a :class:`Handover`
    when a new holder has settled.

    Both windows err on the side of a historian: "no holder" lasts until a start or
    promotion is *confirmed* (a node still starting is not collecting yet), "two
    holders" counts every node that may be running (start issued, stop not confirmed).
    """

    def __init__(self, now: float) -> None:
        self._active: set[str] = set()
        self._serving: set[str] = set()
        self._since = now
        self._no_holder = 0.0
        self._two_holders = 0.0
        #: (name, term) of the last recorded holder.
        self._recorded: tuple[str, int] | None = None

    def _account(self, until: float) -> None:
        until = max(until, self._since)
        span = until - self._since
        if not self._serving:
            self._no_holder += span
        if len(self._active) >= 2:
            self._two_holders += span
        self._since = until

    def observe(
        self,
        now: float,
        active: set[str],
        serving: set[str],
        ended_at: Mapping[str, float],
        master: tuple[str, int] | None,
    ) -> Handover | None:
        """``active``: the nodes that may be running the service now (this node
        included); ``serving``: those confirmed running it; ``ended_at``: for a node
        that left without a heartbeat saying so (it went silent), when it was last
        heard; ``master``: the confirmed MASTER holder and its term, if any."""
        if active != self._active or serving != self._serving:
            gone = sorted((ended_at.get(n, now), n) for n in (self._active - active) | (self._serving - serving))
            for when, name in gone:
                self._account(min(when, now))
                self._active.discard(name)
                self._serving.discard(name)
            self._account(now)
            self._active = set(active)
            self._serving = set(serving)
        if master is None or len(self._active) > 1:
            return None
        if self._recorded is not None and master[1] <= self._recorded[1]:
            return None  # the same tenure (a new term is a new tenure, even on the same node)
        self._account(now)
        previous = self._recorded[0] if self._recorded is not None else None
        move = Handover(master[1], previous, master[0], round(self._no_holder, 6), round(self._two_holders, 6))
        self._recorded = master
        self._no_holder = self._two_holders = 0.0
        return move
