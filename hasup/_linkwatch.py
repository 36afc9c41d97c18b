"""Carrier of tracked interfaces, pushed by the kernel over rtnetlink.

A raw ``NETLINK_ROUTE`` socket subscribed to ``RTMGRP_LINK`` delivers an
``RTM_NEWLINK`` message the moment an interface's flags change; only ``ifinfomsg``
flags are parsed (``IFF_UP`` and ``IFF_LOWER_UP``), so no netlink library is needed.
Messages are matched by interface name, so an interface re-created with a new index
is still tracked; when the socket overflows (``ENOBUFS``) the state is read afresh.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import struct
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path

import anyio

from ._rtnl import NLMSG, RTATTR

__all__ = ["LinkWatcher", "link_is_up"]

RTMGRP_LINK = 1
RTM_NEWLINK = 16
RTM_DELLINK = 17
IFF_UP = 0x1
IFF_LOWER_UP = 0x10000
_IFINFO = struct.Struct("=BxHiII")
IFLA_IFNAME = 3
_RCVBUF = 1 << 20  # room for a burst of link messages (docker, VLAN churn)


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

    def __init__(self, interfaces: Sequence[str], *, rcvbuf: int = _RCVBUF) -> None:
        self.interfaces = tuple(interfaces)
        self._rcvbuf = rcvbuf
        #: Times the kernel reported lost messages (ENOBUFS) and the state was re-read.
        self.resyncs = 0

    def state(self) -> tuple[bool, str]:
        down = [name for name in self.interfaces if not link_is_up(name)]
        return (not down, f"link down: {', '.join(down)}" if down else "links up")

    async def watch(self) -> AsyncGenerator[tuple[bool, str], None]:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, socket.NETLINK_ROUTE)
        try:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._rcvbuf)
            sock.bind((0, RTMGRP_LINK))
            names = {name.encode() for name in self.interfaces}
            last = self.state()
            yield last
            while True:
                await anyio.wait_readable(sock)
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    if exc.errno != errno.ENOBUFS:
                        raise
                    # The kernel dropped messages (a burst of link changes): resync from
                    # the current state instead of trusting what we saw.
                    self.resyncs += 1
                    data = b""
                else:
                    if not self._concerns(data, names):
                        continue
                current = self.state()
                if current != last:
                    last = current
                    yield current
        finally:
            sock.close()

    @staticmethod
    def _concerns(data: bytes, names: set[bytes]) -> bool:
        """Whether a batch holds a link message about one of ``names`` (matched by
        ``IFLA_IFNAME``, not by index: a re-created USB NIC, VLAN or bond gets a new
        index under the same name)."""
        offset = 0
        while offset + NLMSG.size <= len(data):
            length, kind, _, _, _ = NLMSG.unpack_from(data, offset)
            if length < NLMSG.size:
                break
            end = min(offset + length, len(data))
            if kind in (RTM_NEWLINK, RTM_DELLINK):
                attr = offset + NLMSG.size + _IFINFO.size
                while attr + RTATTR.size <= end:
                    alen, akind = RTATTR.unpack_from(data, attr)
                    if alen < RTATTR.size:
                        break
                    if akind == IFLA_IFNAME and data[attr + RTATTR.size : attr + alen].rstrip(b"\0") in names:
                        return True
                    attr += (alen + 3) & ~3
            offset += (length + 3) & ~3
        return False
