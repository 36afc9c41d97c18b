"""The coordinator interface: who leads the group, decided outside the election core.

A :class:`Coordinator` answers one question for the supervisor: "may this node run the
service now?". The heartbeat election answers it among the peers themselves; the etcd
coordinator (:mod:`hasup.coordinator.etcd`) delegates it to a lease in etcd. Both are
used the same way::

    async with coordinator:
        while True:
            token = await coordinator.campaign()        # blocks until we lead
            await start_service(fencing_token=token)
            with anyio.move_on_after(...):              # or until shutdown/fault
                await coordinator.leader_lost.wait()    # lost: stop at once
            await stop_service()
            await coordinator.resign()                  # no-op if already lost

All times are on ``anyio.current_time()`` (the monotonic clock the supervisor uses).
"""

from __future__ import annotations

import abc
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType

import anyio
import attrs
from anyio.abc import AsyncResource

from .._errors import HasupError

__all__ = ["Coordinator", "CoordinatorError", "LeaderChange", "serve_while_leader"]


class CoordinatorError(HasupError):
    """The coordinator refused or failed in a way that retrying will not fix
    (authentication, permissions, a malformed request). Unreachable coordinators raise
    :class:`~hasup.BackendUnavailable` instead."""


@attrs.frozen
class LeaderChange:
    """Who leads now, as this node last learnt it (``leader is None``: nobody)."""

    leader: str | None
    token: int  # fencing token of that tenure (0 when nobody leads)
    is_self: bool
    reason: str
    time: float  # anyio.current_time() when this node learnt it


class Coordinator(AsyncResource):
    """Leader election for one group. Use as an async context manager."""

    name: str
    #: How long one request to the coordinator may take (seconds): the core staggers
    #: campaigns for a vacant leadership by rank in steps of this plus its down interval.
    request_timeout: float = 1.0

    @abc.abstractmethod
    async def campaign(self) -> int:
        """Return once this node is the leader; the fencing token of the new tenure.

        Tokens strictly increase from one tenure to the next across the whole group,
        so a backend or hook can refuse orders carrying an older token. Transient
        coordinator outages are retried inside; only :class:`CoordinatorError` escapes.
        """

    @abc.abstractmethod
    async def resign(self) -> None:
        """End this node's tenure (call after the service is confirmed stopped) so that
        another node can take over at once. Idempotent; best effort when unreachable."""

    @property
    @abc.abstractmethod
    def leader_lost(self) -> anyio.Event:
        """Set when the current (or last) tenure has ended, for whatever reason.

        A fresh, unset event exists once :meth:`campaign` has returned; before the first
        tenure the event is already set. Read the property after ``campaign()`` returns.
        """

    @property
    def is_leader(self) -> bool:
        return not self.leader_lost.is_set()

    @abc.abstractmethod
    def deadline(self) -> float | None:
        """While leader: the ``anyio.current_time()`` after which this node must no
        longer act as leader unless renewed (``leader_lost`` is set at that moment).
        ``None`` when not leader."""

    @abc.abstractmethod
    def current_leader(self) -> str | None:
        """The leader's name as last seen (``None``: nobody, or not known yet)."""

    @abc.abstractmethod
    def leader_changes(self) -> AsyncIterator[LeaderChange]:
        """Every change of leader seen from now on (for status pages and logs). The
        iterator may be a context manager to close (``with c.leader_changes() as it``)."""

    @property
    def lost_reason(self) -> str:
        """Why the last tenure ended (empty while leading or before the first)."""
        return ""

    async def __aenter__(self) -> Coordinator:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def serve_while_leader(
    coordinator: Coordinator,
    start: Callable[[int], Awaitable[None]],
    stop: Callable[[], Awaitable[None]],
    *,
    until: anyio.Event | None = None,
) -> bool:
    """One tenure: campaign, ``start(token)``, wait until leadership is lost (or
    ``until`` is set), ``stop()``, resign. Returns True if leadership was lost, False if
    ``until`` ended the tenure. ``stop`` runs shielded: the service never outlives the
    tenure because of a cancellation.

    The reference loop the supervisor can follow; ``start`` may raise (a failed start
    still stops and resigns, and the exception propagates).
    """
    token = await coordinator.campaign()
    lost = coordinator.leader_lost
    try:
        async with anyio.create_task_group() as tg:
            # Loss while start() runs must stop it too: race start against loss.
            async def _watch_lost() -> None:
                await lost.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(_watch_lost)
            await start(token)
            if until is None:
                await anyio.sleep(math.inf)
            else:
                await until.wait()
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await stop()
            await coordinator.resign()
    return lost.is_set() and (until is None or not until.is_set())
