"""State-change events for embedders: subscribers, Python hooks, ``wait_state``."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import attrs
from anyio.streams.memory import MemoryObjectSendStream

from .protocol import State

__all__ = ["EventHub", "SupervisorEvent"]

log = logging.getLogger("hasup")


@attrs.frozen
class SupervisorEvent:
    """A state change (or alarm) as seen by embedders through ``Supervisor.events``."""

    kind: str  # "state" or "alarm"
    state: State
    previous: State | None
    reason: str
    term: int
    time: float
    wall_time: float


class EventHub:
    """Fans events out to subscribers and Python hooks (in their own task, in order:
    a slow hook never delays the core's actions)."""

    def __init__(self, count: Callable[[str], None]) -> None:
        self._count = count
        self._subscribers: list[MemoryObjectSendStream[SupervisorEvent]] = []
        self._changed = anyio.Event()
        #: Python callables (sync or async) called with every state change event.
        self.hooks: list[Callable[[SupervisorEvent], Any]] = []
        self._hook_send, self._hook_receive = anyio.create_memory_object_stream[SupervisorEvent](math.inf)

    async def changed(self) -> None:
        """Wait for the next published event."""
        await self._changed.wait()

    async def subscribe(self) -> AsyncIterator[SupervisorEvent]:
        send, receive = anyio.create_memory_object_stream[SupervisorEvent](1000)
        self._subscribers.append(send)
        try:
            async with receive:
                async for event in receive:
                    yield event
        finally:
            self._subscribers.remove(send)

    def publish(self, event: SupervisorEvent) -> None:
        self._changed.set()
        self._changed = anyio.Event()
        for send in list(self._subscribers):
            with contextlib.suppress(anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
                send.send_nowait(event)
        if event.kind == "state" and self.hooks:
            self._hook_send.send_nowait(event)

    async def run_hooks(self) -> None:
        async for event in self._hook_receive:
            for hook in list(self.hooks):
                try:
                    result = hook(event)
                    if hasattr(result, "__await__"):
                        await result
                except Exception:
                    self._count("hook_failures")
                    log.exception("notification hook failed")

    def close(self) -> None:
        self._hook_send.close()
        self._hook_receive.close()
        for send in list(self._subscribers):
            send.close()
