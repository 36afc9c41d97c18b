"""What the core asks the supervisor to do, one action at a time, in order."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from ._enums import State

__all__ = ["Action", "Alarm", "Notify", "Persist", "PersistentState", "StartService", "StopService"]


@attrs.frozen
class PersistentState:
    """Everything that must survive a restart of hasup (written atomically)."""

    epoch: int = 0
    term: int = 0
    #: MASTER if this node held the service when it last persisted.
    role: State = State.BACKUP
    #: peer name → highest (epoch, seq) accepted from it.
    peer_marks: Mapping[str, tuple[int, int]] = attrs.field(factory=dict)
    #: flap damping: consecutive fault level (0 = none).
    fault_level: int = 0


@attrs.frozen
class StartService:
    """Start the service; report the outcome with ``Node.action_result``.

    ``term`` is the fencing token of this tenure.
    """

    term: int
    reason: str


@attrs.frozen
class StopService:
    """Stop the service (kill after stop_timeout); report with ``Node.action_result``."""

    reason: str


@attrs.frozen
class Notify:
    """A state change to announce to hooks and logs (exactly once per change)."""

    state: State
    previous: State
    term: int
    reason: str


@attrs.frozen
class Persist:
    """Write this state atomically before sending anything else."""

    state: PersistentState


@attrs.frozen
class Alarm:
    """An operator-visible condition (raised or cleared)."""

    kind: str
    detail: str
    active: bool = True


Action = StartService | StopService | Notify | Persist | Alarm
