"""Datagram transports: real UDP (IPv4 or IPv6), and the interface the supervisor uses.

The in-memory transport for tests is :class:`hasup.testing.MemoryNetwork`.
"""

from __future__ import annotations

import errno
import socket
from typing import Protocol

import anyio
from anyio.abc import UDPSocket

from .protocol import Address

__all__ = ["LOCAL_NETWORK_ERRORS", "DatagramTransport", "UdpTransport", "open_udp_transport"]

#: Send errors that mean *our* side has no usable network (isolation input), as
#: opposed to EHOSTUNREACH/ECONNREFUSED, which a dead peer also causes.
LOCAL_NETWORK_ERRORS = frozenset({errno.ENETUNREACH, errno.ENETDOWN, errno.EADDRNOTAVAIL})


class DatagramTransport(Protocol):
    """What the supervisor needs from a transport."""

    @property
    def local_address(self) -> Address: ...

    async def send(self, data: bytes, address: Address) -> None: ...

    async def receive(self) -> tuple[bytes, Address]: ...

    async def aclose(self) -> None: ...


class UdpTransport:
    """An unconnected UDP socket bound to the group's listen address."""

    def __init__(self, sock: UDPSocket) -> None:
        self._sock = sock

    @property
    def local_address(self) -> Address:
        addr = self._sock.extra(anyio.abc.SocketAttribute.local_address)
        assert isinstance(addr, tuple)
        return (str(addr[0]), int(addr[1]))

    async def send(self, data: bytes, address: Address) -> None:
        await self._sock.sendto(data, address[0], address[1])

    async def receive(self) -> tuple[bytes, Address]:
        while True:
            try:
                data, addr = await self._sock.receive()
            except OSError:
                # ICMP errors surface on receive on some platforms: not a datagram.
                continue
            return data, (str(addr[0]), int(addr[1]))

    async def aclose(self) -> None:
        await self._sock.aclose()


async def open_udp_transport(listen: Address) -> UdpTransport:
    """Bind a UDP socket on ``listen`` (``("0.0.0.0", 5405)``, ``("::", 5405)``, ...)."""
    host, port = listen
    if ":" in host:
        sock = await anyio.create_udp_socket(family=socket.AF_INET6, local_host=host, local_port=port)
    else:
        sock = await anyio.create_udp_socket(family=socket.AF_INET, local_host=host, local_port=port)
    return UdpTransport(sock)
