"""The coordinator adapter (``[coordinator]``): executes :class:`Campaign` and
:class:`Resign` and feeds the outcome back to the core.

The core decides when to campaign and when to resign (``hasup.protocol._assign``);
this module only talks to the :class:`~hasup.coordinator.Coordinator`:

* the leader as the coordinator sees it → ``Node.leader_change``;
* a won campaign → ``Node.leadership(True, token)`` (always delivered, even if the
  campaign was being withdrawn: the core then resigns the grant itself);
* a lost lease → ``Node.leadership(False)``: the core stops the service at once.
"""

from __future__ import annotations

import contextlib
import logging
from contextlib import AbstractContextManager

import anyio
from anyio.abc import TaskGroup

from ._driver import Driver
from .coordinator import Coordinator
from .protocol import Campaign, Resign

__all__ = ["LeaderLink"]

log = logging.getLogger("hasup")


class LeaderLink:
    def __init__(self, coordinator: Coordinator, driver: Driver) -> None:
        self.coordinator = coordinator
        self._driver = driver
        self._tg: TaskGroup | None = None
        self._campaign_scope: anyio.CancelScope | None = None
        self._campaign_done = anyio.Event()
        self._campaign_done.set()
        #: Identifies the tenure whose loss may still be reported (None: none).
        self._tenure: object | None = None

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Feed the coordinator's view of the leader; host the campaign tasks."""
        coord = self.coordinator
        with contextlib.ExitStack() as stack:
            changes = coord.leader_changes()
            if isinstance(changes, AbstractContextManager):
                stack.enter_context(changes)
            async with anyio.create_task_group() as tg:
                self._tg = tg
                leader = coord.current_leader()
                await self._driver.input(lambda n, now: n.leader_change(leader, now))
                task_status.started()
                async for change in changes:
                    await self._driver.input(lambda n, now: n.leader_change(change.leader, now))  # noqa: B023

    def campaign(self, action: Campaign) -> None:
        """Start campaigning (after the previous campaign task has unwound)."""
        assert self._tg is not None
        previous = self._campaign_done
        done = self._campaign_done = anyio.Event()
        scope = self._campaign_scope = anyio.CancelScope()
        self._tg.start_soon(self._campaign, action, scope, previous, done)

    async def _campaign(
        self, action: Campaign, scope: anyio.CancelScope, previous: anyio.Event, done: anyio.Event
    ) -> None:
        token: int | None = None
        try:
            with scope:
                await previous.wait()  # one campaign at a time talks to the coordinator
                log.info("campaigning for leadership: %s", action.reason)
                token = await self.coordinator.campaign()
        finally:
            if self._campaign_scope is scope:
                self._campaign_scope = None
            done.set()
        if token is None:
            return  # withdrawn (Resign) before it was won
        tenure = self._tenure = object()
        lost = self.coordinator.leader_lost
        log.info("coordinator granted leadership (fencing token %d)", token)
        with anyio.CancelScope(shield=True):
            # Always delivered: a grant the core no longer wants is resigned by the core.
            await self._driver.input(lambda n, now: n.leadership(True, token, now))
        await lost.wait()
        if self._tenure is tenure:
            self._tenure = None
            log.error("coordinator leadership lost: %s", self.coordinator.lost_reason)
            await self._driver.input(lambda n, now: n.leadership(False, 0, now))

    async def resign(self, action: Resign) -> None:
        if self._campaign_scope is not None:
            self._campaign_scope.cancel()
            self._campaign_scope = None
        if action.held:
            self._tenure = None
            await self.coordinator.resign()
            log.info("resigned leadership: %s", action.reason)
