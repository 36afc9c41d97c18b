"""What the core asks the supervisor to do, one action at a time, in order."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from ._enums import State

__all__ = [
    "Action",
    "AddVips",
    "Alarm",
    "AnnounceVips",
    "Campaign",
    "ConfigWarning",
    "Demote",
    "Handover",
    "Notify",
    "Persist",
    "PersistentState",
    "Promote",
    "PullData",
    "RemoveVips",
    "Resign",
    "StartService",
    "StopService",
    "SyncRole",
]


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
    #: node maintenance (``hasup maintenance on``): kept across restarts and reloads.
    maintenance: bool = False
    #: group-wide maintenance (generation, on), as last set or learned from a peer.
    group_maintenance: tuple[int, bool] = (0, False)


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
class Promote(StartService):
    """Warm standby (``CoreConfig.warm``): make this node's already running service the
    active copy. It replaces :class:`StartService` in warm mode and follows the same
    rules (the release handshake, the fencing ``term``), so everything said of a start
    holds for a promotion; report with ``Node.action_result``."""


@attrs.frozen
class Demote(StopService):
    """Warm standby: make the service a standby again (it keeps running, inactive).
    Replaces :class:`StopService`; a demotion that cannot be confirmed is a failed stop
    (FAULT, no promotion elsewhere)."""


@attrs.frozen
class Handover:
    """A change of holder as seen by this node (for the handover ledger).

    ``holder`` took the service with ``term`` from ``previous`` (``None``: no holder
    known before). ``no_holder`` is how long, in seconds, no node was seen holding the
    service between the two tenures, ``two_holders`` how long more than one was (both
    measured from this node's inputs: confirmed starts/stops, promotions/demotions and
    peers' heartbeats; a silent peer counts until its last heartbeat). Emitted once the
    move has settled (one holder left)."""

    term: int
    previous: str | None
    holder: str
    no_holder: float
    two_holders: float


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


@attrs.frozen
class Campaign:
    """Ask the external coordinator for leadership (``[coordinator]`` only).

    Report the outcome with ``Node.leadership(True, token, now)``, or
    ``Node.leadership(False, 0, now)`` if the campaign ended without a grant. Keep at
    most one campaign in flight; a :class:`Resign` withdraws it.
    """

    reason: str


@attrs.frozen
class Resign:
    """Give leadership up: withdraw the campaign in flight (``held`` false) or end the
    tenure now that the service is confirmed stopped (``held`` true: resign the lease so
    that the next leader starts at once)."""

    held: bool
    reason: str


@attrs.frozen
class SyncRole:
    """What the data-sync engines (``[[sync]]``) do from now on.

    ``serve``: this node holds the service, publish its data; ``follow``: pull from the
    holder ``peer`` at ``host`` continuously; ``idle``: neither. A change away from
    ``follow`` must be complete (the follower has stopped writing) before the next
    action runs: a :class:`StartService` is always preceded by ``SyncRole("idle")``
    while following, so a snapshot is never applied under a running service.
    """

    role: str  # "serve" | "follow" | "idle"
    peer: str | None = None
    host: str | None = None


@attrs.frozen
class PullData:
    """Pull every synced directory from the holder before a failback takes over;
    report with ``Node.sync_result(ok, now)``."""

    peer: str
    host: str


@attrs.frozen
class AddVips:
    """Add the virtual IP addresses (``[[vip]]``) and announce them (gratuitous ARP /
    unsolicited NA). Emitted once the service start is confirmed and the node is
    MASTER; report a failure with ``Node.action_result(action, False, now)``: the node
    then faults (a holder that clients cannot reach must not keep the service)."""

    reason: str


@attrs.frozen
class RemoveVips:
    """Remove the virtual IP addresses. Emitted before every :class:`StopService` of a
    holder (so clients never reach a node whose service is stopping), at once on
    FAULT, and at start-up by a node that does not hold the service (a left-over copy
    from a crash)."""

    reason: str


@attrs.frozen
class AnnounceVips:
    """Send the gratuitous ARP / unsolicited NA again (a split brain was resolved in
    this node's favour: clients may have learnt the other node's MAC)."""

    reason: str


@attrs.frozen
class ConfigWarning:
    """A configuration that works but probably not as intended (log it once)."""

    detail: str


Action = (
    StartService
    | StopService
    | Notify
    | Persist
    | Alarm
    | Campaign
    | Resign
    | SyncRole
    | PullData
    | AddVips
    | RemoveVips
    | AnnounceVips
    | ConfigWarning
    | Handover
)
