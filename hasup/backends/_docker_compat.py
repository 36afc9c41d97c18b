"""A fix for docker-py's Unix-socket connect, which leaks its socket on failure.

docker-py 7.x ``UnixHTTPConnection.connect()`` creates a socket and calls
``connect()`` on it; when that fails (dockerd down or restarting) the socket is
dropped without being closed. The traceback keeps it alive until the garbage
collector runs, so a supervisor retrying against a stopped dockerd holds one stray
descriptor per attempt for a while, and CPython reports each one as an unclosed
socket. Upstream fix, not yet released: https://github.com/docker/docker-py/pull/3356.

:func:`install` wraps the method once so that the socket is closed before the error
propagates. It changes nothing when the connect succeeds, and it stands down when a
docker-py release no longer has the plain method it was written for.
"""

from __future__ import annotations

import socket
from typing import Any

__all__ = ["install"]

_MARK = "_hasup_closes_on_error"


def install() -> bool:
    """Patch ``docker.transport.unixconn.UnixHTTPConnection.connect``; idempotent.

    Returns whether the fixed method is in place."""
    try:
        from docker.transport import unixconn
    except ImportError:  # pragma: no cover - docker-py without Unix-socket support
        return False
    cls: Any = unixconn.UnixHTTPConnection
    if getattr(cls.connect, _MARK, False):
        return True
    code = getattr(cls.connect, "__code__", None)
    if code is None or "unix_socket" not in code.co_names or "close" in code.co_names:
        return False  # not the method this was written for (or already fixed upstream)

    def connect(self: Any) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.unix_socket)
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    setattr(connect, _MARK, True)
    cls.connect = connect
    return True
