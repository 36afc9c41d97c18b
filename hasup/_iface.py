"""Which interfaces carry the group's heartbeats (asked of the kernel over rtnetlink).

Link tracking is on by default, like keepalived's implicit tracking of a VRRP
instance's ``interface``: when ``[group] track_interface`` is not set, hasup tracks

* the interface that holds ``group.listen``'s address, when it is a specific address;
* otherwise (``0.0.0.0`` / ``::``) the outgoing interface of the kernel's route to each
  peer (``RTM_GETROUTE``, as ``ip route get`` does).

Two small synchronous netlink requests at start-up; no netlink library is needed.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Sequence

from ._rtnl import RTA_DST, RTA_OIF, RTATTR, RTM_GETROUTE, RTM_NEWROUTE, RTMSG, addresses, attrs, family, request

__all__ = ["interface_of_address", "interfaces_for", "route_interface"]


def route_interface(destination: str) -> str:
    """The outgoing interface of the kernel's route to ``destination`` (an IP)."""
    ip = ipaddress.ip_address(destination)
    dst = ip.packed
    body = RTMSG.pack(family(ip), len(dst) * 8, 0, 0, 0, 0, 0, 0, 0)
    body += RTATTR.pack(RTATTR.size + len(dst), RTA_DST) + dst
    for mtype, payload in request(RTM_GETROUTE, 0, body):
        if mtype != RTM_NEWROUTE:
            continue
        for kind, value in attrs(payload, RTMSG.size, len(payload)):
            if kind == RTA_OIF:
                return socket.if_indextoname(struct.unpack("=I", value[:4])[0])
    raise OSError(f"no route to {destination}")


def interface_of_address(address: str) -> str:
    """The interface that holds ``address`` (an IP assigned on this host)."""
    ip = ipaddress.ip_address(address)
    for index, held, _prefix in addresses(ip.version):
        if held == ip:
            return socket.if_indextoname(index)
    raise OSError(f"no interface holds {address}")


def interfaces_for(listen_host: str, peer_hosts: Sequence[str]) -> tuple[str, ...]:
    """What default link tracking watches (see the module docstring).

    Raises :class:`OSError` when the kernel cannot tell (no route, an address that
    is not on this host, a host name instead of an address)."""
    try:
        if not ipaddress.ip_address(listen_host).is_unspecified:
            return (interface_of_address(listen_host),)
        names: list[str] = []
        for host in peer_hosts:
            name = route_interface(host)
            if name not in names:
                names.append(name)
        return tuple(names)
    except ValueError as exc:
        raise OSError(str(exc)) from None
