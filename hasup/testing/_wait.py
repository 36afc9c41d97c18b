"""Waiting for a condition with a deadline, instead of sleeping to synchronise."""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio

__all__ = ["wait_for", "wait_until"]


def _timed_out(timeout: float, what: str, predicate: Callable[[], object]) -> TimeoutError:
    return TimeoutError(f"timed out after {timeout:g}s waiting for {what or predicate!r}")


async def wait_for(predicate: Callable[[], object], *, within: float, interval: float = 0.01, what: str = "") -> float:
    """Wait until ``predicate()`` is truthy; return the event loop's time at that moment.

    For conditions of other tasks' state (a supervisor's, a backend's): it re-checks
    every ``interval`` seconds of the event loop's clock, so on a mock clock (trio's
    ``MockClock`` through anyio's pytest plugin) it costs no real time. Raises
    :class:`TimeoutError` naming ``what`` if the condition does not hold within
    ``within`` seconds. A predicate that already holds returns at once.

    Prefer an event where one exists (``await sup.wait_state(State.MASTER)``); use
    this for conditions that span several objects::

        await wait_for(lambda: a.state == State.MASTER and backend.running, within=5, what="a serving")
    """
    deadline = anyio.current_time() + within
    while True:
        if predicate():
            return anyio.current_time()
        left = deadline - anyio.current_time()
        if left <= 0:
            raise _timed_out(within, what, predicate)
        await anyio.sleep(min(interval, left))


def wait_until(predicate: Callable[[], object], *, timeout: float, interval: float = 0.01, what: str = "") -> float:
    """Blocking twin of :func:`wait_for`, for code outside an event loop.

    For tests and benchmarks that watch other processes (``hasup run`` subprocesses,
    their services): polls ``predicate`` every ``interval`` seconds of
    :func:`time.monotonic` and returns the monotonic time at which it held. Raises
    :class:`TimeoutError` naming ``what`` after ``timeout`` seconds (the blocking
    functions of the standard library call their deadline ``timeout``; the async
    one says ``within``, as the deadline of a cancel scope would).
    """
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return time.monotonic()
        left = deadline - time.monotonic()
        if left <= 0:
            raise _timed_out(timeout, what, predicate)
        time.sleep(min(interval, left))
