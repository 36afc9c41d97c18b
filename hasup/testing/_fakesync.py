"""``FakeSyncEngine``: the data-sync engines (``[[sync]]``) of every node, on virtual time.

It executes the cores' :class:`~hasup.protocol.SyncRole` and
:class:`~hasup.protocol.PullData` actions and answers through the inputs the
supervisor's ``SyncRunner`` feeds (``Node.sync_result``, ``Node.sync_generation``):

* each node holds one generation number (one synced directory); :meth:`write` is the
  service changing its data. A node in ``serve`` publishes its generation; a node in
  ``follow`` copies its holder's at once whenever the holder serves and reaches it;
* a :class:`~hasup.protocol.PullData` completes ``pull_time`` seconds later: it copies
  the holder's generation and reports ``sync_result(True)``, or reports
  ``sync_result(False)`` when :meth:`fail_pulls` says so, the holder is gone or does not
  serve, or its traffic does not reach the puller;
* every change of a node's generation is reported with ``sync_generation`` (the wire
  form of ``hasup.sync.Generation.to_wire``, carried in its heartbeats).

It also checks the rule the core promises (``SyncRole``'s docstring): nothing is
applied under a running service. Breaches are listed in :attr:`FakeSyncEngine.violations`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import attrs

from ..protocol import PullData, SyncRole
from ._host import SimHost

__all__ = ["FakeSyncEngine", "PullRecord"]

_IDLE = SyncRole("idle")


@attrs.define
class PullRecord:
    """One executed :class:`~hasup.protocol.PullData`."""

    node: str
    peer: str
    asked_at: float
    done_at: float | None = None
    ok: bool | None = None
    #: The generation the puller holds afterwards (when ``ok``).
    generation: int | None = None


class FakeSyncEngine:
    """Every node's sync engines for :class:`~hasup.testing.NodeCluster`.

    ``generations`` are the numbers the nodes start with (default 0).
    """

    def __init__(self, *, pull_time: float = 0.2, generations: Mapping[str, int] | None = None) -> None:
        if pull_time < 0:
            raise ValueError("pull_time must not be negative")
        self.pull_time = pull_time
        self.generations: dict[str, int] = dict(generations or {})
        self.roles: dict[str, SyncRole] = {}
        #: Every role change as ``(time, node, role)``, including the reset to idle
        #: when a node's hasup dies or boots.
        self.role_changes: list[tuple[float, str, SyncRole]] = []
        self.pulls: list[PullRecord] = []
        #: Breaches of "never apply data under a running service" (should stay empty).
        self.violations: list[str] = []
        self._fail_budget: dict[str, float] = {}
        self._host: SimHost | None = None

    def attach(self, host: SimHost) -> None:
        """Bind to the simulation (``NodeCluster`` does this; once)."""
        if self._host is not None:
            raise RuntimeError("this FakeSyncEngine already serves a cluster")
        self._host = host

    @property
    def host(self) -> SimHost:
        if self._host is None:
            raise RuntimeError("attach the FakeSyncEngine to a NodeCluster first")
        return self._host

    @staticmethod
    def wire(number: int) -> bytes:
        """The heartbeat form of generation ``number`` (``Generation(number).to_wire()``)."""
        return number.to_bytes(8, "big") + bytes(8)

    # ------------------------------------------------------------------ observation
    def role(self, name: str) -> SyncRole:
        return self.roles.get(name, _IDLE)

    def generation(self, name: str) -> int:
        return self.generations.get(name, 0)

    # ------------------------------------------------------------------ test controls
    def write(self, name: str, count: int = 1) -> None:
        """The service on ``name`` changed its data ``count`` times."""
        self.generations[name] = self.generation(name) + count
        self._report(name)
        self._feed_followers(name)

    def fail_pulls(self, name: str, times: int | None = None) -> None:
        """Make the next ``times`` pulls by ``name`` fail (``None``: all, until
        :meth:`heal_pulls`)."""
        self._fail_budget[name] = math.inf if times is None else times

    def heal_pulls(self, name: str | None = None) -> None:
        """Let pulls by ``name`` (by every node if ``None``) succeed again."""
        if name is None:
            self._fail_budget.clear()
        else:
            self._fail_budget.pop(name, None)

    # ------------------------------------------------------------------ cluster hooks
    def node_up(self, name: str, incarnation: int) -> None:
        """A hasup booted: its engines start idle and report the generation on disk."""
        self._set_role(name, _IDLE)
        self._report(name)

    def node_down(self, name: str, incarnation: int) -> None:
        """A hasup died: its engines stop (a pull in flight never reports)."""
        self._set_role(name, _IDLE)

    def apply_role(self, name: str, incarnation: int, action: SyncRole) -> None:
        """Execute a :class:`~hasup.protocol.SyncRole` of that boot of ``name``."""
        if action.role == "follow" and self.host.service_running(name):
            self._violation(name, f"follows {action.peer} while its service runs")
        self._set_role(name, action)
        if action.role == "follow":
            self._catch_up(name)
        elif action.role == "serve":
            self._feed_followers(name)

    def pull(self, name: str, incarnation: int, action: PullData) -> None:
        """Execute a :class:`~hasup.protocol.PullData`: answer after ``pull_time``."""
        host = self.host
        record = PullRecord(name, action.peer, host.now)
        self.pulls.append(record)
        host.call_at(host.now + self.pull_time, lambda: self._finish(record, incarnation))

    # ------------------------------------------------------------------ internals
    def _set_role(self, name: str, role: SyncRole) -> None:
        if self.roles.get(name) != role:
            self.roles[name] = role
            self.role_changes.append((self.host.now, name, role))

    def _source_ok(self, peer: str | None, dst: str) -> bool:
        host = self.host
        return (
            peer is not None
            and host.incarnation(peer) is not None
            and self.role(peer).role == "serve"
            and host.can_reach(peer, dst)
        )

    def _catch_up(self, follower: str) -> None:
        peer = self.role(follower).peer
        if not self._source_ok(peer, follower) or peer is None:
            return
        if self.generation(follower) != self.generation(peer):
            self._apply(follower, self.generation(peer))

    def _feed_followers(self, name: str) -> None:
        for other, role in self.roles.items():
            if role.role == "follow" and role.peer == name:
                self._catch_up(other)

    def _finish(self, record: PullRecord, incarnation: int) -> None:
        host = self.host
        record.done_at = host.now
        if host.incarnation(record.node) != incarnation:
            record.ok = False
            return  # the puller's hasup is gone: nobody to report to
        budget = self._fail_budget.get(record.node, 0)
        ok = budget <= 0 and self._source_ok(record.peer, record.node)
        if budget > 0:
            self._fail_budget[record.node] = budget - 1
        record.ok = ok
        if ok:
            self._apply(record.node, self.generation(record.peer))
            record.generation = self.generation(record.node)
        host.record(record.node, "pulled" if ok else "pull-failed", record.peer)
        host.deliver(record.node, incarnation, lambda n, now: n.sync_result(ok, now))

    def _apply(self, name: str, number: int) -> None:
        if self.host.service_running(name):
            self._violation(name, f"applied generation {number} while its service runs")
        self.generations[name] = number
        self._report(name)

    def _report(self, name: str) -> None:
        host = self.host
        incarnation = host.incarnation(name)
        if incarnation is None:
            return
        wire = self.wire(self.generation(name))
        host.call_at(host.now, lambda: host.deliver(name, incarnation, lambda n, now: n.sync_generation(wire, now)))

    def _violation(self, name: str, detail: str) -> None:
        self.violations.append(f"t={self.host.now:.4f} {name} {detail}")
        self.host.record(name, "sync-violation", detail)
