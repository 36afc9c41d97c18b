"""The descriptor limit of the daemon.

Every hasup listener is capped (status endpoint: 64 connections and 64 more answered
503; each sync transfer server: 16), so a flood of idle connections cannot take more
than a few hundred descriptors; the rest of the limit stays for probes, the backend
and sync transfers. ``hasup run`` raises the soft ``RLIMIT_NOFILE`` to
:data:`TARGET` (or the hard limit, if lower) at start, and warns when the result is
below :data:`LOW`, where the caps no longer leave enough room.
Programs that hasup starts itself (``command`` backend, hooks, exec probes) inherit the
raised soft limit; systemd units and containers get theirs from systemd and dockerd.
"""

from __future__ import annotations

import logging
import resource

__all__ = ["LOW", "TARGET", "raise_nofile"]

log = logging.getLogger("hasup")

#: The soft limit hasup asks for (the hard limit permitting).
TARGET = 4096
#: Below this, a flood held at the listener caps could starve probes.
LOW = 512


def raise_nofile(target: int = TARGET) -> tuple[int, int]:
    """Raise the soft descriptor limit towards ``target``; return ``(before, after)``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = target if hard == resource.RLIM_INFINITY else min(target, hard)
    after = soft
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            after = wanted
        except (OSError, ValueError) as exc:
            log.warning("cannot raise the file descriptor limit from %d to %d: %s", soft, wanted, exc)
    if after != resource.RLIM_INFINITY and after < LOW:
        log.warning(
            "file descriptor limit is %d (hard %d): below %d, a flood of connections held at the "
            "listener caps could starve probes; raise LimitNOFILE / ulimit -n",
            after,
            hard,
            LOW,
        )
    return soft, after
