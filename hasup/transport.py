"""Datagram transports: real UDP (IPv4 or IPv6), and the interface the supervisor uses.

The heartbeat socket is the hottest path of an idle supervisor (at 20 ms adverts, 100
datagrams a second), and wake-ups, not hashing, dominate its cost. So the UDP
transport talks to a plain non-blocking socket instead of going through anyio's
``UDPSocket``, whose every ``send`` and ``receive`` adds a scheduling checkpoint (one
more pass of the event loop per datagram):

* **send** calls ``sendto`` at once; only a full socket buffer (``EAGAIN``) waits for
  the socket to become writable. Errors surface as :class:`OSError`, as before.
* **receive** on asyncio registers the socket with the loop's selector once and reads
  one datagram per readiness event, like asyncio's own ``DatagramProtocol`` (the
  selector is level-triggered: a second queued datagram is reported at once); on any
  other anyio backend (trio) it waits with :func:`anyio.wait_readable`.

The in-memory transport for tests is :class:`hasup.testing.MemoryNetwork`.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import socket
from typing import Protocol

import anyio

from ._fastpath import on_asyncio
from .protocol import Address

__all__ = ["LOCAL_NETWORK_ERRORS", "DatagramTransport", "UdpTransport", "open_udp_transport"]

#: Send errors that mean *our* side has no usable network (isolation input), as
#: opposed to EHOSTUNREACH/ECONNREFUSED, which a dead peer also causes.
LOCAL_NETWORK_ERRORS = frozenset({errno.ENETUNREACH, errno.ENETDOWN, errno.EADDRNOTAVAIL})

#: Largest datagram read (heartbeats are < 300 bytes; a larger one is malformed anyway).
_MAX_DATAGRAM = 2048
#: Datagrams buffered between the selector callback and the receiver (a flood is
#: dropped here, as the kernel would drop it from a full socket buffer).
_QUEUE = 1024


class DatagramTransport(Protocol):
    """What the supervisor needs from a transport."""

    @property
    def local_address(self) -> Address: ...

    async def send(self, data: bytes, address: Address) -> None: ...

    async def receive(self) -> tuple[bytes, Address]: ...

    async def aclose(self) -> None: ...


class UdpTransport:
    """An unconnected, non-blocking UDP socket bound to the group's listen address."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._queue: collections.deque[tuple[bytes, Address]] = collections.deque(maxlen=_QUEUE)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        #: Datagrams dropped because the receiver fell :data:`_QUEUE` behind.
        self.overflows = 0

    @property
    def local_address(self) -> Address:
        addr = self._sock.getsockname()
        return (str(addr[0]), int(addr[1]))

    async def send(self, data: bytes, address: Address) -> None:
        try:
            self._sock.sendto(data, address)
        except BlockingIOError:
            await anyio.wait_writable(self._sock)
            self._sock.sendto(data, address)

    async def receive(self) -> tuple[bytes, Address]:
        if self._closed:
            raise anyio.ClosedResourceError
        if not self._queue:
            if self._loop is not None or on_asyncio():
                await self._wait_asyncio()
            else:
                while not self._queue:
                    await anyio.wait_readable(self._sock)
                    self._read()
        return self._queue.popleft()

    async def _wait_asyncio(self) -> None:
        loop = self._loop
        if loop is None:
            self._loop = loop = asyncio.get_running_loop()
            loop.add_reader(self._sock.fileno(), self._readable)
        while not self._queue:
            if self._closed:
                raise anyio.ClosedResourceError
            self._waiter = loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def _readable(self) -> None:
        self._read()
        if self._queue and self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _read(self) -> None:
        try:
            data, addr = self._sock.recvfrom(_MAX_DATAGRAM)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            # ICMP errors surface on receive on some platforms: not a datagram.
            return
        if len(self._queue) == _QUEUE:
            self.overflows += 1
        self._queue.append((data, (str(addr[0]), int(addr[1]))))

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._sock.fileno())
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        self._sock.close()


async def open_udp_transport(listen: Address) -> UdpTransport:
    """Bind a UDP socket on ``listen`` (``("0.0.0.0", 5405)``, ``("::", 5405)``, ...).

    Raises :class:`OSError` when the address cannot be resolved or bound (the caller
    names the configuration key)."""
    host, port = listen
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    infos = await anyio.getaddrinfo(host, port, family=family, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
    if not infos:
        raise OSError(errno.EADDRNOTAVAIL, f"cannot resolve {host!r}")
    fam, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(fam, kind, proto)
    try:
        sock.bind(sockaddr)
    except OSError:
        sock.close()
        raise
    return UdpTransport(sock)
