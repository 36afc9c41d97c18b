"""Enumerations shared by the core, the supervisor and the backends."""

from __future__ import annotations

import enum

__all__ = ["ServiceStatus", "State"]


class State(enum.IntEnum):
    """A node's role. Values are on the wire: never renumber."""

    INIT = 0
    BACKUP = 1
    CLAIMING = 2
    MASTER = 3
    RELEASING = 4
    FAULT = 5
    STOPPING = 6


class ServiceStatus(enum.Enum):
    """What a backend says about the service it manages.

    Only ``STOPPED`` means "confirmed not running". Every other value makes the node a
    *holder* (ARCHITECTURE §2): it may still be serving, so no peer may start.
    """

    RUNNING = "running"
    STARTING = "starting"
    STOPPING = "stopping"
    STOPPED = "stopped"
    #: The service failed (crash, failed start, unhealthy). Not yet confirmed stopped.
    FAILED = "failed"
    #: The backend cannot tell (daemon unreachable, bus disconnected).
    UNKNOWN = "unknown"
