"""Carrier of tracked interfaces, pushed by the kernel over rtnetlink.

A raw ``NETLINK_ROUTE`` socket subscribed to ``RTMGRP_LINK`` delivers an
``RTM_NEWLINK`` message the moment an interface's flags change; only ``ifinfomsg``
flags are parsed (``IFF_UP`` and ``IFF_LOWER_UP``), so no netlink library is needed.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path

import anyio

__all__ = ["LinkWatcher", "link_is_up"]

RTMGRP_LINK = 1
RTM_NEWLINK = 16
RTM_DELLINK = 17
IFF_UP = 0x1
IFF_LOWER_UP = 0x10000
_NLMSG = struct.Struct("=IHHII")
_IFINFO = struct.Struct("=BxHiII")


def link_is_up(name: str) -> bool:
    """Current state from sysfs: administratively up and carrier present."""
    base = Path("/sys/class/net") / name
    try:
        flags = int((base / "flags").read_text().strip(), 16)
        carrier = (base / "carrier").read_text().strip() == "1"
    except (OSError, ValueError):
        return False  # missing interface, or carrier unreadable while down
    return bool(flags & IFF_UP) and carrier


class LinkWatcher:
    """Yields ``(all_up, detail)`` whenever the tracked interfaces change."""

    def __init__(self, interfaces: Sequence[str]) -> None:
        self.interfaces = tuple(interfaces)

    def state(self) -> tuple[bool, str]:
        down = [name for name in self.interfaces if not link_is_up(name)]
        return (not down, f"link down: {', '.join(down)}" if down else "links up")

    async def watch(self) -> AsyncGenerator[tuple[bool, str], None]:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, socket.NETLINK_ROUTE)
        try:
            sock.bind((0, RTMGRP_LINK))
            indexes = set()
            for name in self.interfaces:
                with contextlib.suppress(OSError):  # not there (yet): reported down by state()
                    indexes.add(socket.if_nametoindex(name))
            last = self.state()
            yield last
            while True:
                await anyio.wait_readable(sock)
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                if not self._concerns(data, indexes):
                    continue
                current = self.state()
                if current != last:
                    last = current
                    yield current
        finally:
            sock.close()

    @staticmethod
    def _concerns(data: bytes, indexes: set[int]) -> bool:
        offset = 0
        while offset + _NLMSG.size <= len(data):
            length, kind, _, _, _ = _NLMSG.unpack_from(data, offset)
            if length < _NLMSG.size:
                break
            if kind in (RTM_NEWLINK, RTM_DELLINK) and offset + _NLMSG.size + _IFINFO.size <= len(data):
                _, _, index, _, _ = _IFINFO.unpack_from(data, offset + _NLMSG.size)
                if not indexes or index in indexes:
                    return True
            offset += (length + 3) & ~3
        return False
