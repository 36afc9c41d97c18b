"""A small rtnetlink client: one request, its replies; addresses added and removed.

Enough of ``NETLINK_ROUTE`` for hasup's needs (route and address queries for link
tracking, virtual IP addresses) without a netlink library: fixed-layout headers and
attributes, synchronous requests that the kernel answers at once. Kernel errors are
raised as :class:`OSError` with their errno.
"""

from __future__ import annotations

import errno as _errno
import ipaddress
import os
import socket
import struct
from collections.abc import Iterator

__all__ = ["IPAddress", "IPInterface", "add_address", "addresses", "delete_address", "request"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

NLM_F_ACK = 0x4
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
RTM_DELADDR = 21
IFA_LABEL = 3
IFA_F_NODAD = 0x02
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

NLMSG = struct.Struct("=IHHII")
RTMSG = struct.Struct("=BBBBBBBBI")
IFADDRMSG = struct.Struct("=BBBBI")
RTATTR = struct.Struct("=HH")
_TIMEOUT = 2.0


def family(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> int:
    return socket.AF_INET if ip.version == 4 else socket.AF_INET6


def attrs(data: bytes, offset: int, end: int) -> Iterator[tuple[int, bytes]]:
    while offset + RTATTR.size <= end:
        length, kind = RTATTR.unpack_from(data, offset)
        if length < RTATTR.size:
            return
        yield kind, data[offset + RTATTR.size : offset + length]
        offset += (length + 3) & ~3


def request(kind: int, flags: int, body: bytes) -> Iterator[tuple[int, bytes]]:
    """Send one request; yield ``(type, payload)`` of every reply message."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.settimeout(_TIMEOUT)
        sock.bind((0, 0))
        sock.send(NLMSG.pack(NLMSG.size + len(body), kind, NLM_F_REQUEST | flags, 1, 0) + body)
        while True:
            data = sock.recv(65536)
            offset = 0
            while offset + NLMSG.size <= len(data):
                length, mtype, _, _, _ = NLMSG.unpack_from(data, offset)
                if length < NLMSG.size:
                    return
                payload = data[offset + NLMSG.size : offset + length]
                if mtype == NLMSG_DONE:
                    return
                if mtype == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", payload)
                    if code:
                        raise OSError(-code, f"netlink: {os.strerror(-code)}")
                    return
                yield mtype, payload
                offset += (length + 3) & ~3
            if not flags & NLM_F_DUMP:
                return


def _ifaddr(interface: IPInterface, index: int, label: str | None) -> bytes:
    ip = interface.ip
    flags = IFA_F_NODAD if ip.version == 6 else 0  # usable at once: no duplicate detection delay
    body = IFADDRMSG.pack(family(ip), interface.network.prefixlen, flags, 0, index)
    body += _attr(IFA_LOCAL, ip.packed) + _attr(IFA_ADDRESS, ip.packed)
    if label is not None and ip.version == 4:
        body += _attr(IFA_LABEL, label.encode() + b"\0")
    return body


def _attr(kind: int, value: bytes) -> bytes:
    data = RTATTR.pack(RTATTR.size + len(value), kind) + value
    return data + b"\0" * (-len(data) % 4)


def add_address(interface: IPInterface, device: str, *, label: str | None = None) -> bool:
    """Add ``interface`` (address/prefix) to ``device``; ``False`` if it was already there."""
    body = _ifaddr(interface, socket.if_nametoindex(device), label)
    try:
        for _ in request(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body):
            pass
    except OSError as exc:
        if exc.errno == _errno.EEXIST:
            return False
        raise
    return True


def delete_address(interface: IPInterface, device: str) -> bool:
    """Remove ``interface`` from ``device``; ``False`` if it was not there."""
    try:
        index = socket.if_nametoindex(device)
    except OSError:
        return False  # no device, no address
    try:
        for _ in request(RTM_DELADDR, NLM_F_ACK, _ifaddr(interface, index, None)):
            pass
    except OSError as exc:
        if exc.errno == _errno.EADDRNOTAVAIL:
            return False
        raise
    return True


def addresses(version: int) -> Iterator[tuple[int, IPAddress, int]]:
    """Every address of this namespace: ``(interface index, address, prefix length)``."""
    fam = socket.AF_INET if version == 4 else socket.AF_INET6
    for mtype, payload in request(RTM_GETADDR, NLM_F_DUMP, IFADDRMSG.pack(fam, 0, 0, 0, 0)):
        if mtype != RTM_NEWADDR or len(payload) < IFADDRMSG.size:
            continue
        _, prefix, _, _, index = IFADDRMSG.unpack_from(payload)
        local = address = None
        for kind, value in attrs(payload, IFADDRMSG.size, len(payload)):
            if kind == IFA_LOCAL:
                local = value
            elif kind == IFA_ADDRESS:
                address = value
        raw = local or address
        if raw is not None and len(raw) in (4, 16):
            yield index, ipaddress.ip_address(raw), prefix
