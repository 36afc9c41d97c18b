"""The executor: carries out the core's actions in order and reports their outcome.

Start and stop are awaited and verified (``Node.action_result``); notifications go
to logs, metrics, events and hooks; coordinator and data-sync actions go to their
adapters. Nothing here decides: every choice was made by the core.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable

import anyio
import attrs

from ._driver import Driver
from ._errors import BackendError
from ._events import EventHub, SupervisorEvent
from ._hooks import HookEvent, HookRunner
from ._leadership import LeaderLink
from ._ledger import Ledger
from ._metrics import SupervisorMetrics
from ._syncrunner import SyncRunner
from ._vip import VipManager
from .backends import ServiceBackend
from .protocol import (
    Action,
    AddVips,
    Alarm,
    AnnounceVips,
    Campaign,
    ConfigWarning,
    Demote,
    Handover,
    Notify,
    Promote,
    PullData,
    RemoveVips,
    Resign,
    StartService,
    State,
    StopService,
    SyncRole,
)

__all__ = ["Executor", "Timeouts"]

log = logging.getLogger("hasup")

#: stop() escalates to a kill itself; this margin bounds a hung backend.
_STOP_MARGIN = 15.0


@attrs.frozen
class Timeouts:
    start: float
    stop: float


class Executor:
    def __init__(
        self,
        driver: Driver,
        backend: ServiceBackend,
        *,
        timeouts: Timeouts,
        metrics: SupervisorMetrics,
        events: EventHub,
        hooks: HookRunner,
        identity: tuple[str, int],
        leadership: LeaderLink | None = None,
        sync: SyncRunner | None = None,
        vips: VipManager | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        self._driver = driver
        self._backend = backend
        self._timeouts = timeouts
        self._metrics = metrics
        self._events = events
        self._hooks = hooks
        self._identity = identity  # (node name, group id) for notify hooks
        self._leadership = leadership
        self._sync = sync
        self._vips = vips
        self._ledger = ledger
        self._claimed_at: float | None = None

    async def run(self) -> None:
        async for action in self._driver.actions:
            await self.execute(action)

    async def execute(self, action: Action) -> None:
        if isinstance(action, Notify):
            self._on_notify(action)
        elif isinstance(action, Alarm):
            self._on_alarm(action)
        elif isinstance(action, StartService):
            start = functools.partial(self._backend.start, term=action.term)  # the fencing token
            await self._run_backend(action, start, self._timeouts.start)
        elif isinstance(action, StopService):
            await self._run_backend(action, self._backend.stop, self._timeouts.stop + _STOP_MARGIN)
        elif isinstance(action, Campaign):
            assert self._leadership is not None
            self._leadership.campaign(action)
        elif isinstance(action, Resign):
            assert self._leadership is not None
            await self._leadership.resign(action)
        elif isinstance(action, SyncRole):
            assert self._sync is not None
            await self._sync.apply_role(action)
        elif isinstance(action, PullData):
            assert self._sync is not None
            self._sync.pull(action)
        elif isinstance(action, AddVips | RemoveVips | AnnounceVips):
            await self._on_vips(action)
        elif isinstance(action, ConfigWarning):
            log.warning("%s", action.detail)
        elif isinstance(action, Handover):
            self._on_handover(action)

    def _on_handover(self, action: Handover) -> None:
        log.info(
            "handover: %s -> %s (term %d), %.3f s without a holder, %.3f s with two",
            action.previous or "-",
            action.holder,
            action.term,
            action.no_holder,
            action.two_holders,
        )
        self._metrics.handover(action.no_holder, action.two_holders)
        if self._ledger is not None:
            self._ledger.record(action)

    async def _on_vips(self, action: AddVips | RemoveVips | AnnounceVips) -> None:
        assert self._vips is not None
        if isinstance(action, RemoveVips):
            self._vips.remove()
        elif isinstance(action, AnnounceVips):
            log.info("announcing the virtual IPs again: %s", action.reason)
            self._vips.announce()
        else:
            try:
                self._vips.add()
            except OSError as exc:
                log.error("%s", exc.strerror or exc)
                detail = str(exc.strerror or exc)
                await self._driver.input(lambda n, now: n.action_result(action, False, now, detail))

    async def _run_backend(
        self, action: StartService | StopService, call: Callable[[], Awaitable[None]], limit: float
    ) -> None:
        verb = "start" if isinstance(action, StartService) else "stop"
        # warm standby: the same contract, but the service keeps running on both sides
        word = {"start": "promote", "stop": "demote"}[verb] if isinstance(action, Promote | Demote) else verb
        log.info("%s service: %s", word, action.reason)
        began = anyio.current_time()
        ok, detail = True, ""
        try:
            with anyio.fail_after(limit):
                await call()
        except TimeoutError:
            ok, detail = False, f"{verb} did not finish within {limit:g} s"
        except BackendError as exc:
            ok, detail = False, str(exc)
        elapsed = anyio.current_time() - began
        self._driver.stats[f"backend_{verb}_seconds"] = round(elapsed, 6)
        self._metrics.backend_call(verb, ok, elapsed)
        self._driver.count(f"backend_{verb}_{'ok' if ok else 'failed'}")
        if ok:
            done = {"start": "started", "stop": "stopped", "promote": "promoted", "demote": "demoted"}[word]
            log.info("service %s in %.3f s", done, elapsed)
        else:
            log.error("service %s failed after %.3f s: %s", word, elapsed, detail)
        await self._driver.input(lambda n, now: n.action_result(action, ok, now, detail))

    def _on_notify(self, action: Notify) -> None:
        now = anyio.current_time()
        if action.state == action.previous:
            log.warning("%s: %s (notifications re-run)", action.state.name, action.reason)
        else:
            log.info("%s: %s", action.state.name, action.reason)
            self._metrics.transition(action.previous, action.state)
            if action.state == State.CLAIMING:
                self._claimed_at = now
            elif action.state == State.MASTER and action.previous == State.CLAIMING and self._claimed_at:
                self._metrics.failover(now - self._claimed_at)
                self._driver.count("failovers")
        name, group = self._identity
        self._events.publish(
            SupervisorEvent("state", action.state, action.previous, action.reason, action.term, now, time.time())
        )
        self._hooks.submit(HookEvent(action.state, action.previous, name, group, action.term, action.reason))

    def _on_alarm(self, action: Alarm) -> None:
        if action.active:
            log.error("ALARM %s: %s", action.kind, action.detail)
        else:
            log.warning("alarm %s cleared", action.kind)
        node = self._driver.node
        self._events.publish(
            SupervisorEvent(
                "alarm",
                node.state,
                None,
                f"{action.kind}: {action.detail}",
                node.term,
                anyio.current_time(),
                time.time(),
            )
        )
