"""What one node knows about each peer, and the RFC 5798 timing formulas."""

from __future__ import annotations

import attrs

from ._config import Address
from ._enums import State
from ._wire import Flag, Heartbeat

__all__ = ["PeerView", "down_interval", "skew_time"]

# Plain ints for the hot path: IntFlag operators build enum members, ints do not.
_ACTIVE = int(Flag.ACTIVE)
_MAINTENANCE = int(Flag.MAINTENANCE)


def skew_time(own_priority: int, peer_advert: float) -> float:
    """RFC 5798 skew: ``(256 - priority) * advert / 256``; higher priority waits less."""
    return (256 - own_priority) * peer_advert / 256


def down_interval(own_priority: int, peer_advert: float) -> float:
    """Silence after which a peer is declared down: ``3 * advert + skew``."""
    return 3 * peer_advert + skew_time(own_priority, peer_advert)


@attrs.define
class PeerView:
    """Mutable per-peer record kept by :class:`~hasup.protocol.Node`."""

    address: Address
    configured_name: str | None = None
    name: str | None = None
    last: Heartbeat | None = None
    last_rx: float | None = None
    #: When this peer is declared down unless heard again.
    down_at: float = float("-inf")
    #: When it was first heard after being down (for one-way loss checks).
    alive_since: float | None = None
    #: (epoch, seq) high-water mark: only larger values are accepted.
    mark: tuple[int, int] = (0, 0)
    next_query: float | None = None
    #: When we first saw it as a conflicting holder (for one-way loss timing).
    conflict_since: float | None = None
    config_mismatch: bool = False
    #: Datagrams from this peer dropped as replays/stale (``hasup forget-peer`` clears).
    replays: int = 0

    def live(self, now: float) -> bool:
        return self.last is not None and now < self.down_at

    @property
    def state(self) -> State | None:
        return self.last.state if self.last else None

    @property
    def active(self) -> bool:
        return self.last is not None and bool(int(self.last.flags) & _ACTIVE)

    @property
    def advert(self) -> float:
        return self.last.advert_ms / 1000 if self.last else 1.0

    @property
    def effective_priority(self) -> int:
        return self.last.effective_priority if self.last else 0

    @property
    def rank(self) -> tuple[int, str]:
        """Election order: (effective priority, name), higher wins."""
        return (self.effective_priority, self.name or "")

    def blocks_claim(self) -> bool:
        """Whether this (live) peer's view forbids others to claim now.

        A MASTER, a claimer, a releasing holder, or any holder that is not resigning.
        A holder announcing FAULT, or STOPPING without a hold, is resigning: the best
        BACKUP may claim at once and starts as soon as the peer reports INACTIVE.
        """
        hb = self.last
        if hb is None:
            return False
        if hb.state in (State.MASTER, State.CLAIMING, State.RELEASING):
            return True
        if hb.state == State.STOPPING:
            return self.active and hb.hold_ms > 0
        if hb.state == State.FAULT:
            return False
        return self.active

    def eligible(self) -> bool:
        """Whether this peer could claim: a BACKUP with a non-zero priority, not in maintenance."""
        hb = self.last
        return (
            hb is not None
            and hb.state == State.BACKUP
            and hb.effective_priority > 0
            and not int(hb.flags) & _MAINTENANCE
        )

    def candidate(self) -> bool:
        """Whether this peer may claim before us when it outranks us: eligible, or
        still in its start-up listen (it will be a BACKUP in a moment)."""
        hb = self.last
        if hb is not None and hb.state == State.INIT:
            return hb.effective_priority > 0 and not int(hb.flags) & _MAINTENANCE
        return self.eligible()
