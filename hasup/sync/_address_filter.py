"""Which client addresses a transfer server accepts: the peers' own, plus ``allow_from``."""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterable, Sequence

import anyio

__all__ = ["AddressFilter", "resolve_hosts"]

log = logging.getLogger("hasup.sync")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


async def resolve_hosts(hosts: Sequence[str]) -> list[str]:
    """The addresses of ``hosts`` (literals as they are, names through the resolver).
    A name that does not resolve is logged and left out: that peer cannot pull until
    hasup restarts with the name resolvable, which is safer than accepting anyone."""
    out: list[str] = []
    for host in hosts:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            try:
                infos = await anyio.getaddrinfo(host, None, type=socket.SOCK_STREAM)
            except OSError as exc:
                log.warning("sync: peer %s does not resolve (%s); its pulls are refused", host, exc)
                continue
            out.extend(str(info[4][0]) for info in infos)
        else:
            out.append(host)
    return out


class AddressFilter:
    """``filter(address) -> bool``: is the client address one of the peers' or inside
    ``allow_from``? IPv4-mapped IPv6 addresses (a dual-stack listener) count as IPv4."""

    def __init__(self, peers: Iterable[str], allow_from: Iterable[str] = ()) -> None:
        self.networks: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in (*peers, *allow_from)
        )

    def __call__(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.networks)
