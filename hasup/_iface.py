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
import os
import socket
import struct
from collections.abc import Iterator, Sequence

__all__ = ["interface_of_address", "interfaces_for", "route_interface"]

NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_NEWADDR = 20
RTM_GETADDR = 22
RTM_NEWROUTE = 24
RTM_GETROUTE = 26
IFA_ADDRESS = 1
IFA_LOCAL = 2
RTA_DST = 1
RTA_OIF = 4

_NLMSG = struct.Struct("=IHHII")
_RTMSG = struct.Struct("=BBBBBBBBI")
_IFADDRMSG = struct.Struct("=BBBBI")
_RTATTR = struct.Struct("=HH")
_TIMEOUT = 2.0


def _family(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> int:
    return socket.AF_INET if ip.version == 4 else socket.AF_INET6


def _attrs(data: bytes, offset: int, end: int) -> Iterator[tuple[int, bytes]]:
    while offset + _RTATTR.size <= end:
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size:
            return
        yield kind, data[offset + _RTATTR.size : offset + length]
        offset += (length + 3) & ~3


def _request(kind: int, flags: int, body: bytes) -> Iterator[tuple[int, bytes]]:
    """Send one request; yield ``(type, payload)`` of every reply message."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.settimeout(_TIMEOUT)
        sock.bind((0, 0))
        sock.send(_NLMSG.pack(_NLMSG.size + len(body), kind, NLM_F_REQUEST | flags, 1, 0) + body)
        while True:
            data = sock.recv(65536)
            offset = 0
            while offset + _NLMSG.size <= len(data):
                length, mtype, _, _, _ = _NLMSG.unpack_from(data, offset)
                if length < _NLMSG.size:
                    return
                payload = data[offset + _NLMSG.size : offset + length]
                if mtype == NLMSG_DONE:
                    return
                if mtype == NLMSG_ERROR:
                    (errno,) = struct.unpack_from("=i", payload)
                    if errno:
                        raise OSError(-errno, f"netlink request failed: {os.strerror(-errno)}")
                    return
                yield mtype, payload
                offset += (length + 3) & ~3
            if not flags & NLM_F_DUMP:
                return


def route_interface(destination: str) -> str:
    """The outgoing interface of the kernel's route to ``destination`` (an IP)."""
    ip = ipaddress.ip_address(destination)
    dst = ip.packed
    body = _RTMSG.pack(_family(ip), len(dst) * 8, 0, 0, 0, 0, 0, 0, 0)
    body += _RTATTR.pack(_RTATTR.size + len(dst), RTA_DST) + dst
    for mtype, payload in _request(RTM_GETROUTE, 0, body):
        if mtype != RTM_NEWROUTE:
            continue
        for kind, value in _attrs(payload, _RTMSG.size, len(payload)):
            if kind == RTA_OIF:
                return socket.if_indextoname(struct.unpack("=I", value[:4])[0])
    raise OSError(f"no route to {destination}")


def interface_of_address(address: str) -> str:
    """The interface that holds ``address`` (an IP assigned on this host)."""
    ip = ipaddress.ip_address(address)
    body = _IFADDRMSG.pack(_family(ip), 0, 0, 0, 0)
    for mtype, payload in _request(RTM_GETADDR, NLM_F_DUMP, body):
        if mtype != RTM_NEWADDR or len(payload) < _IFADDRMSG.size:
            continue
        _, _, _, _, index = _IFADDRMSG.unpack_from(payload)
        for kind, value in _attrs(payload, _IFADDRMSG.size, len(payload)):
            if kind in (IFA_LOCAL, IFA_ADDRESS) and value == ip.packed:
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
