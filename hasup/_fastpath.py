"""The driver's hot loop on asyncio without anyio's per-call overhead, and the same
API on any other anyio backend.

An idle supervisor does the same few things per heartbeat: read the clock, take the
driver's lock, sleep until the next timer. anyio adds a scheduling checkpoint or an
event-loop lookup to each (on CPython 3.11 every ``get_running_loop()`` is also a
``getpid()`` system call), which at 20 ms adverts costs more than the election
itself (docs/benchmarks.md "Idle cost"). These helpers pick the asyncio primitive
when the running loop is asyncio's and the anyio one otherwise (trio):

* :func:`clock`: ``loop.time`` (what ``anyio.current_time()`` returns on asyncio);
* :func:`new_lock`: :class:`asyncio.Lock` (no checkpoint when free) or
  ``anyio.Lock()`` (``fast_acquire`` is not used: on trio it made a virtual-time
  supervisor test hang now and then);
* :class:`Wakeup`: a wake-up at a deadline that can be moved earlier (below).

Wakeup: the driver sleeps until the core's next timer, and is woken early when an input
brings that timer forward. With anyio primitives that is a cancel scope with a
deadline around an event: each expiry delivers a cancellation (an exception, and
extra passes of the event loop), and it happens on every heartbeat. On asyncio this
uses one ``loop.call_at`` handle and a future instead, which costs what a raw asyncio
program pays; on any other anyio backend (trio) it falls back to the cancel scope.
Both are exercised by the test suite (asyncio for real processes, trio on virtual time).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager as AsyncContextManager

import anyio
import anyio.lowlevel

__all__ = ["Wakeup", "clock", "new_lock", "on_asyncio"]


def on_asyncio() -> bool:
    """Whether the running event loop is asyncio's (``False`` under trio)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def clock() -> Callable[[], float]:
    """The running loop's monotonic clock (call inside the loop, keep the result)."""
    if on_asyncio():
        return asyncio.get_running_loop().time
    return anyio.current_time


def new_lock() -> AsyncContextManager[object]:
    """A lock for the running loop (call inside the loop)."""
    if on_asyncio():
        return asyncio.Lock()
    return anyio.Lock()


class Wakeup:
    """``await wakeup.wait(deadline)`` returns at ``deadline`` (``anyio.current_time()``
    clock; ``math.inf`` = never) or as soon as :meth:`wake` is called, whichever comes
    first. A :meth:`wake` while nobody waits makes the next :meth:`wait` return at once."""

    def __init__(self) -> None:
        self._woken = False
        self._future: asyncio.Future[None] | None = None
        self._event: anyio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._asyncio: bool | None = None

    def wake(self) -> None:
        self._woken = True
        if self._future is not None and not self._future.done():
            self._future.set_result(None)
        elif self._event is not None:
            self._event.set()

    async def wait(self, deadline: float) -> None:
        if self._woken:
            # Woken while nobody waited: still a scheduling point, so that a loop of
            # wake-ups can never starve the other tasks (or stop a virtual clock).
            await anyio.lowlevel.checkpoint()
        else:
            if self._asyncio is None:
                self._asyncio = on_asyncio()
            if self._asyncio:
                await self._wait_asyncio(deadline)
            else:
                await self._wait_anyio(deadline)
        self._woken = False

    async def _wait_asyncio(self, deadline: float) -> None:
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        future: asyncio.Future[None] = loop.create_future()
        # anyio.current_time() is loop.time() on asyncio: the same clock.
        handle = loop.call_at(deadline, _resolve, future) if deadline != math.inf else None
        self._future = future
        try:
            await future
        finally:
            self._future = None
            if handle is not None:
                handle.cancel()

    async def _wait_anyio(self, deadline: float) -> None:
        self._event = event = anyio.Event()
        try:
            with anyio.CancelScope(deadline=deadline):
                await event.wait()
        finally:
            self._event = None


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
