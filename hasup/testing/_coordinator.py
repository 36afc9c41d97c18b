"""``FakeCoordinator``: a virtual-time leader election service, shaped like the etcd one.

It executes the cores' :class:`~hasup.protocol.Campaign` and
:class:`~hasup.protocol.Resign` actions and answers through the same inputs the
supervisor's ``LeaderLink`` feeds (``Node.leadership``, ``Node.leader_change``), with
the timing rules of :mod:`hasup.coordinator.etcd` (see ``docs/coordinator.md``):

* one leader key at a time; a campaign waits until the key is free, and campaigns are
  served in the order they arrived. Every tenure gets a new, larger fencing token;
* the leader renews its lease continuously while it reaches the coordinator. When its
  renewals stop (its hasup died, or :meth:`FakeCoordinator.cut` partitioned it) the key
  expires ``ttl`` later; a leader that is still alive gives its leadership up ``margin``
  earlier (the local deadline: ``Node.leadership(False)``);
* a held :class:`~hasup.protocol.Resign` revokes the lease: the key is free at once;
  a withdrawing one (``held`` false) drops the campaign in flight;
* every answer (grant) and watch event (``leader_change``) reaches a node ``latency``
  seconds after the coordinator decided it; requests reach the coordinator at once.
  A node cut from the coordinator sees no watch events; once restored it re-reads the
  key (one ``leader_change``), like the etcd watch loop.

Not modelled: the best-effort revoke a real client sends when it reaches etcd again
after its deadline passed; here the lease simply expires ``ttl`` after the last renewal.
"""

from __future__ import annotations

import attrs

from ..protocol import Campaign, Resign
from ._host import SimHost

__all__ = ["FakeCoordinator", "Tenure"]


@attrs.define
class Tenure:
    """One leadership tenure: who held the key, from which boot, with which token."""

    name: str
    incarnation: int
    token: int
    granted_at: float
    ended_at: float | None = None
    end_reason: str = ""
    #: Renewals flow (the holder is alive and reaches the coordinator).
    renewing: bool = True
    #: The holder's client gave the tenure up (deadline passed, or resigned).
    given_up: bool = False
    #: Bumped whenever renewals stop or resume: stale expiry callbacks see a new value.
    stamp: int = 0

    def covers(self, t: float) -> bool:
        """Whether this tenure held the key at virtual time ``t``."""
        return self.granted_at <= t and (self.ended_at is None or t < self.ended_at)


class FakeCoordinator:
    """Leader election on virtual time for :class:`~hasup.testing.NodeCluster`.

    ``ttl``, ``request_timeout`` and ``margin`` have the defaults and the rules of
    :class:`~hasup.coordinator.etcd.EtcdCoordinator` (``request_timeout`` defaults to
    ``min(1, ttl/3)``, ``margin`` to and at least ``max(request_timeout, ttl/4)``);
    ``NodeCluster`` sets the cores' ``coordinator_timeout`` to ``request_timeout``.
    """

    def __init__(
        self,
        *,
        ttl: float = 5.0,
        request_timeout: float | None = None,
        margin: float | None = None,
        latency: float = 0.002,
    ) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self.ttl = ttl
        self.request_timeout = request_timeout if request_timeout is not None else min(1.0, ttl / 3)
        floor = max(self.request_timeout, ttl / 4)
        self.margin = max(margin, floor) if margin is not None else floor
        if self.margin >= ttl:
            raise ValueError(f"margin {self.margin:g}s must be shorter than ttl {ttl:g}s")
        self.latency = latency
        #: Every tenure so far, oldest first; the last one may be current.
        self.tenures: list[Tenure] = []
        self._current: Tenure | None = None
        self._campaigns: list[tuple[str, int]] = []  # (name, incarnation), in arrival order
        self._cut: set[str] = set()
        self._next_token = 1
        self._host: SimHost | None = None

    def attach(self, host: SimHost) -> None:
        """Bind to the simulation (``NodeCluster`` does this; once)."""
        if self._host is not None:
            raise RuntimeError("this FakeCoordinator already serves a cluster")
        self._host = host

    @property
    def host(self) -> SimHost:
        if self._host is None:
            raise RuntimeError("attach the FakeCoordinator to a NodeCluster first")
        return self._host

    # ------------------------------------------------------------------ observation
    @property
    def leader(self) -> str | None:
        """Who holds the key now (``None``: nobody)."""
        return self._current.name if self._current else None

    @property
    def tenure(self) -> Tenure | None:
        """The current tenure, if any."""
        return self._current

    @property
    def token(self) -> int:
        """The current tenure's fencing token (0 when nobody leads)."""
        return self._current.token if self._current else 0

    @property
    def campaigners(self) -> list[str]:
        """Nodes with a campaign waiting for the key, in arrival order."""
        return [name for name, _ in self._campaigns]

    def tenure_at(self, t: float) -> Tenure | None:
        """The tenure that held the key at virtual time ``t``."""
        return next((x for x in reversed(self.tenures) if x.covers(t)), None)

    def reachable(self, name: str) -> bool:
        return name not in self._cut

    # ------------------------------------------------------------------ faults
    def cut(self, name: str) -> None:
        """Partition ``name`` from the coordinator: its renewals, requests and watch stop."""
        if name in self._cut:
            return
        self._cut.add(name)
        self.host.record(name, "coordinator-cut")
        tenure = self._current
        if tenure is not None and tenure.name == name and tenure.renewing:
            self._stop_renewals(tenure, alive=self.host.incarnation(name) == tenure.incarnation)

    def restore(self, name: str) -> None:
        """Reconnect ``name``: renewals resume (unless its client gave the tenure up),
        it re-reads the key, and a campaign it has waiting may now win."""
        if name not in self._cut:
            return
        self._cut.discard(name)
        host = self.host
        host.record(name, "coordinator-restored")
        tenure = self._current
        incarnation = host.incarnation(name)
        if (
            tenure is not None
            and tenure.name == name
            and not tenure.renewing
            and not tenure.given_up
            and tenure.incarnation == incarnation
        ):
            tenure.renewing = True
            tenure.stamp += 1  # the scheduled deadline and expiry no longer apply
        if incarnation is not None:
            self._send_leader(name, incarnation, self.leader)
        self._grant_next()

    def restore_all(self) -> None:
        for name in sorted(self._cut):
            self.restore(name)

    # ------------------------------------------------------------------ cluster hooks
    def node_up(self, name: str, incarnation: int) -> None:
        """A hasup booted: its coordinator client reads the key."""
        if self.reachable(name):
            self._send_leader(name, incarnation, self.leader)

    def node_down(self, name: str, incarnation: int) -> None:
        """A hasup died: its campaigns end, its lease is no longer renewed."""
        self._campaigns = [c for c in self._campaigns if c != (name, incarnation)]
        tenure = self._current
        if tenure is not None and (tenure.name, tenure.incarnation) == (name, incarnation) and tenure.renewing:
            self._stop_renewals(tenure, alive=False)

    def campaign(self, name: str, incarnation: int, action: Campaign) -> None:
        """Execute a :class:`~hasup.protocol.Campaign` of that boot of ``name``."""
        tenure = self._current
        if tenure is not None and (tenure.name, tenure.incarnation) == (name, incarnation) and not tenure.given_up:
            self._send_grant(tenure)  # like EtcdCoordinator.campaign(): the tenure it holds
            return
        if (name, incarnation) not in self._campaigns:
            self._campaigns.append((name, incarnation))
        self._grant_next()

    def resign(self, name: str, incarnation: int, action: Resign) -> None:
        """Execute a :class:`~hasup.protocol.Resign`: withdraw the campaign; if
        ``held``, end the tenure (the key is free at once when the coordinator is
        reachable; otherwise the lease expires on its own)."""
        self._campaigns = [c for c in self._campaigns if c != (name, incarnation)]
        tenure = self._current
        if not action.held or tenure is None or (tenure.name, tenure.incarnation) != (name, incarnation):
            return
        tenure.given_up = True  # no loss is reported for a tenure given back
        if self.reachable(name):
            self._vacate(tenure, "resigned")

    # ------------------------------------------------------------------ internals
    def _stop_renewals(self, tenure: Tenure, *, alive: bool) -> None:
        host = self.host
        tenure.renewing = False
        tenure.stamp += 1
        stamp = tenure.stamp
        if alive:
            host.call_at(host.now + self.ttl - self.margin, lambda: self._deadline(tenure, stamp))
        host.call_at(host.now + self.ttl, lambda: self._expire(tenure, stamp))

    def _deadline(self, tenure: Tenure, stamp: int) -> None:
        """The holder's local deadline passed without a confirmed renewal: it steps down."""
        if tenure.stamp != stamp or tenure is not self._current or tenure.given_up:
            return
        tenure.given_up = True
        host = self.host
        if host.incarnation(tenure.name) == tenure.incarnation:
            host.record(tenure.name, "leadership-lost", "local deadline (ttl - margin)")
            host.deliver(tenure.name, tenure.incarnation, lambda n, now: n.leadership(False, 0, now))

    def _expire(self, tenure: Tenure, stamp: int) -> None:
        if tenure.stamp == stamp and tenure is self._current:
            self._vacate(tenure, "lease expired")

    def _vacate(self, tenure: Tenure, reason: str) -> None:
        host = self.host
        tenure.ended_at = host.now
        tenure.end_reason = reason
        self._current = None
        host.record(tenure.name, "lease-ended", reason)
        self._broadcast(None)
        self._grant_next()

    def _grant_next(self) -> None:
        if self._current is not None:
            return
        host = self.host
        for name, incarnation in self._campaigns:
            if self.reachable(name) and host.incarnation(name) == incarnation:
                self._campaigns.remove((name, incarnation))
                tenure = Tenure(name, incarnation, self._next_token, host.now)
                self._next_token += 1
                self._current = tenure
                self.tenures.append(tenure)
                host.record(name, "granted", f"token {tenure.token}")
                # The winner learns of its win from its own request first (the grant),
                # then from the watch like everyone else.
                self._send_grant(tenure)
                self._broadcast(name)
                return

    def _send_grant(self, tenure: Tenure) -> None:
        host = self.host
        token = tenure.token
        host.call_at(
            host.now + self.latency,
            lambda: host.deliver(tenure.name, tenure.incarnation, lambda n, now: n.leadership(True, token, now)),
        )

    def _broadcast(self, leader: str | None) -> None:
        host = self.host
        for name in host.names:
            incarnation = host.incarnation(name)
            if incarnation is not None and self.reachable(name):
                self._send_leader(name, incarnation, leader)

    def _send_leader(self, name: str, incarnation: int, leader: str | None) -> None:
        host = self.host
        host.call_at(
            host.now + self.latency,
            lambda: host.deliver(name, incarnation, lambda n, now: n.leader_change(leader, now)),
        )
