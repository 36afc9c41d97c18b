"""Pure helpers of the Docker backend: container state → ServiceStatus, event decoding,
and an async wrapper around the SDK's blocking event stream.

Kept apart from :mod:`hasup.backends.docker` so that the mapping rules can be read (and
tested) without a daemon.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from typing import Any

import anyio

from ..protocol._enums import ServiceStatus

__all__ = [
    "WATCHED_EVENTS",
    "EventStream",
    "describe_exit",
    "health_log_tail",
    "status_from_state",
]

#: Container event actions the backend listens to. Healthcheck runs produce
#: ``exec_*`` events every interval: filtering on the daemon side keeps them off the wire.
WATCHED_EVENTS = (
    "create",
    "start",
    "restart",
    "die",
    "oom",
    "kill",
    "stop",
    "pause",
    "unpause",
    "destroy",
    "health_status",
)


def status_from_state(state: Mapping[str, Any] | None, *, expect_running: bool) -> ServiceStatus:
    """Map ``docker inspect``'s ``State`` (``None``: no such container) to a ServiceStatus.

    ``expect_running`` is true between a ``start()`` (or seeing the container running)
    and the next ``stop()``: a container that is not running although hasup did not stop
    it has *failed* — it stays ``FAILED`` until ``stop()`` confirms the stop, so a crash
    seen only after a reconnect is still reported as a failure.

    ============================  ==========================================
    Docker state                  ServiceStatus
    ============================  ==========================================
    running, no HEALTHCHECK       RUNNING
    running, health "starting"    STARTING
    running, health "healthy"     RUNNING
    running, health "unhealthy"   FAILED
    restarting                    STARTING
    paused                        FAILED (processes exist but do not serve)
    removing                      STOPPING
    created / exited / dead /     STOPPED, or FAILED while ``expect_running``
    no such container
    ============================  ==========================================
    """
    status = "missing" if state is None else str(state.get("Status", ""))
    if status == "running":
        health = (state or {}).get("Health") or {}
        health_status = health.get("Status")
        if health_status == "starting":
            return ServiceStatus.STARTING
        if health_status == "unhealthy":
            return ServiceStatus.FAILED
        return ServiceStatus.RUNNING
    if status == "restarting":
        return ServiceStatus.STARTING
    if status == "paused":
        return ServiceStatus.FAILED
    if status == "removing":
        return ServiceStatus.STOPPING
    # created, exited, dead, missing: no process of the container runs.
    return ServiceStatus.FAILED if expect_running else ServiceStatus.STOPPED


def health_log_tail(state: Mapping[str, Any] | None, *, entries: int = 3, chars: int = 300) -> str:
    """The last HEALTHCHECK results as one line, for error messages."""
    health = (state or {}).get("Health") or {}
    log = health.get("Log") or []
    parts = []
    for entry in log[-entries:]:
        output = " ".join(str(entry.get("Output", "")).split())[:chars]
        parts.append(f"exit {entry.get('ExitCode')}" + (f": {output}" if output else ""))
    return "; ".join(parts) if parts else "no health check result yet"


def describe_exit(state: Mapping[str, Any] | None) -> str:
    """Why a container is not running, e.g. ``exited with code 137 (OOM killed)``."""
    if state is None:
        return "container does not exist"
    status = state.get("Status", "?")
    text = f"{status}"
    if status in ("exited", "dead"):
        text += f" with code {state.get('ExitCode')}"
    if state.get("OOMKilled"):
        text += " (OOM killed)"
    if state.get("Error"):
        text += f": {state['Error']}"
    return text


_END: Any = object()


def _close_response(stream: Any) -> None:
    # CancellableStream.close() shuts the socket down, but the HTTP response still holds
    # a file object on it, so the descriptor stays open until garbage collection
    # (a ResourceWarning). Closing the response releases it.
    with contextlib.suppress(Exception):
        stream._response.close()


class EventStream:
    """Async iteration over a blocking ``APIClient.events()`` stream.

    Every ``next()`` runs in a worker thread with ``abandon_on_cancel=True``, so a
    cancelled reader returns at once; :meth:`close` shuts the HTTP response's socket down
    from the event loop (a non-blocking call), which ends the abandoned thread too.
    The daemon going away ends the iteration silently, as the SDK does.
    """

    def __init__(self, stream: Any, limiter: anyio.CapacityLimiter) -> None:
        self._stream = stream
        self._limiter = limiter
        self._closed = False
        #: A worker thread is (or an abandoned one may still be) reading the stream.
        #: Set by that thread itself: a call cancelled before its thread ran never reads.
        self._reading = False
        self._lock = threading.Lock()

    def _next_or_end(self) -> Any:
        # Runs in a worker thread. Never raises: an abandoned thread's exception would
        # have nobody to report it to. Returns the event, _END, or the exception.
        with self._lock:
            if self._closed:
                return _END
            self._reading = True
        try:
            event = next(self._stream)
        except StopIteration:
            result: Any = _END
        except Exception as exc:
            result = exc
        else:
            with self._lock:
                self._reading = False
            return event
        # The stream is over: release the response here, in the thread that read it.
        with self._lock:
            self._reading = False
        _close_response(self._stream)
        return result

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> dict[str, Any]:
        if self._closed:
            raise StopAsyncIteration
        result = await anyio.to_thread.run_sync(self._next_or_end, abandon_on_cancel=True, limiter=self._limiter)
        if result is _END or isinstance(result, Exception):
            # Anything but an event means the connection is gone: dockerd stopped,
            # restarted, or the stream was closed. The caller reconnects.
            self.close()
            raise StopAsyncIteration
        event: dict[str, Any] = result
        return event

    def close(self) -> None:
        """Close the stream; safe to call from the event loop, twice, or after an error."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            reading = self._reading
        # Already closed or a half-torn-down socket: nothing left to release.
        with contextlib.suppress(Exception):
            self._stream.close()  # socket shutdown: non-blocking, wakes a reading thread
        if not reading:
            # No thread holds the response (else it closes it when its read ends).
            _close_response(self._stream)
