"""Accept loops that a flood cannot turn into a fault: bounded connections, an address
allow-list, and descriptor exhaustion survived instead of raised.

``listener.serve()`` raises out of its task group when ``accept()`` fails with EMFILE
(the process is out of file descriptors), taking the listener, and with it the
supervisor, down; and it accepts without limit, so idle connections are what exhausts
the descriptors in the first place. :func:`serve_bounded` is the loop every hasup TCP
listener uses instead (status endpoint, sync transfer servers):

* at most ``limit`` connections are handled at once; a connection beyond that is closed
  at once (or handed to ``overflow``, itself bounded by ``limit``, for a polite refusal);
* connections from addresses ``allow`` rejects are closed before anything is read;
* EMFILE/ENFILE/ENOBUFS/ENOMEM from ``accept()`` are logged (once per burst) and the
  loop waits briefly and goes on: the connections already open keep working and new
  ones are accepted again as soon as descriptors are free.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Awaitable, Callable

import anyio
from anyio.abc import SocketAttribute, SocketListener, SocketStream, TaskGroup
from anyio.streams.stapled import MultiListener

__all__ = ["Handler", "serve_bounded"]

log = logging.getLogger("hasup")

Handler = Callable[[SocketStream], Awaitable[None]]

#: accept() errors that mean "out of resources": wait and go on.
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: How long the loop pauses after such an error (the kernel keeps the backlog queued).
BACKOFF = 0.1


def _peer_host(stream: SocketStream) -> str:
    try:
        address = stream.extra(SocketAttribute.remote_address)
    except anyio.TypedAttributeLookupError:
        return ""
    return str(address[0]) if isinstance(address, tuple) else ""


async def _drop(stream: SocketStream) -> None:
    with anyio.CancelScope(shield=True):
        await stream.aclose()


async def serve_bounded(
    listener: SocketListener | MultiListener[SocketStream],
    handler: Handler,
    *,
    name: str,
    limit: int,
    allow: Callable[[str], bool] | None = None,
    overflow: Handler | None = None,
    on_refused: Callable[[str], None] | None = None,
) -> None:
    """Accept on ``listener`` until cancelled; see the module docstring. ``name`` names
    the listener in logs; ``on_refused(reason)`` counts refusals (``"limit"``,
    ``"address"``, ``"descriptors"``)."""
    active = 0
    overflowing = 0
    last_warning = 0.0

    def refused(reason: str) -> None:
        if on_refused is not None:
            on_refused(reason)

    async def run(stream: SocketStream, fn: Handler, spill: bool) -> None:
        nonlocal active, overflowing
        try:
            async with stream:
                await fn(stream)
        finally:
            if spill:
                overflowing -= 1
            else:
                active -= 1

    async def accept_loop(sub: SocketListener, tg: TaskGroup) -> None:
        nonlocal active, overflowing, last_warning
        while True:
            try:
                stream = await sub.accept()
            except OSError as exc:
                if exc.errno not in RESOURCE_ERRNOS:
                    raise
                refused("descriptors")
                now = time.monotonic()
                if now - last_warning > 10.0:
                    last_warning = now
                    log.warning("%s: cannot accept connections: %s; open connections keep working", name, exc)
                await anyio.sleep(BACKOFF)
                continue
            if allow is not None and not allow(_peer_host(stream)):
                refused("address")
                await _drop(stream)
                continue
            if active < limit:
                active += 1
                tg.start_soon(run, stream, handler, False)
            elif overflow is not None and overflowing < limit:
                overflowing += 1
                refused("limit")
                tg.start_soon(run, stream, overflow, True)
            else:
                refused("limit")
                await _drop(stream)

    subs = list(listener.listeners) if isinstance(listener, MultiListener) else [listener]
    async with anyio.create_task_group() as tg:
        for sub in subs:
            if not isinstance(sub, SocketListener):
                raise TypeError(f"{name}: not a socket listener: {sub!r}")
            tg.start_soon(accept_loop, sub, tg)
