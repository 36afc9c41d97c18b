"""sd_notify(3) without libsystemd: READY, WATCHDOG and STOPPING over $NOTIFY_SOCKET.

The watchdog is pinged from the event loop (not a thread), so a frozen supervisor
stops pinging and systemd restarts it.
"""

from __future__ import annotations

import contextlib
import os
import socket

import anyio

__all__ = ["SystemdNotifier"]


class SystemdNotifier:
    def __init__(self, address: str, watchdog_usec: int | None) -> None:
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._watchdog = watchdog_usec / 1e6 if watchdog_usec else None
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)

    @classmethod
    def from_environment(cls) -> SystemdNotifier | None:
        address = os.environ.get("NOTIFY_SOCKET")
        if not address:
            return None
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        watchdog = int(usec) if usec and usec.isdigit() and (not pid or pid == str(os.getpid())) else None
        return cls(address, watchdog)

    def send(self, message: str) -> None:
        with contextlib.suppress(OSError):  # systemd gone or socket full: nothing to do
            self._sock.sendto(message.encode(), self._address)

    async def run(self, done: anyio.Event, *, stopping: bool = True) -> None:
        """Say READY, ping the watchdog until ``done``, then say STOPPING (unless a reload)."""
        self.send("READY=1")
        try:
            if self._watchdog is None:
                await done.wait()
                return
            while not done.is_set():
                self.send("WATCHDOG=1")
                with anyio.move_on_after(self._watchdog / 2):
                    await done.wait()
        finally:
            if stopping:
                self.send("STOPPING=1")

    def close(self) -> None:
        self._sock.close()
