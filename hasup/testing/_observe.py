"""What :class:`~hasup.testing.NodeCluster` records, and the queries tests make on it.

Split from ``_cluster.py`` for size only: the simulated machine (:class:`SimNode`),
the event log (:class:`ClusterEvent`), and the read-only views of a run.
"""

from __future__ import annotations

import attrs

from ..protocol import Action, Node, PersistentState, State
from ..protocol._config import Address, CoreConfig

__all__ = ["ClusterEvent", "ClusterView", "SimNode"]


@attrs.define
class ClusterEvent:
    """Something that happened in the cluster, for assertions and debugging."""

    time: float
    node: str
    #: "notify", "start", "started", "stop", "stopped", "alarm", "kill", "restart", ...;
    #: with a coordinator or sync engine also "campaign", "resign", "granted",
    #: "leadership-lost", "lease-ended", "sync-role", "pull", "pulled", "pull-failed".
    kind: str
    detail: str = ""
    state: State | None = None
    #: For "notify": the state the node left (equal to ``state`` for a re-notification).
    previous: State | None = None


@attrs.define
class SimNode:
    """One simulated machine: an election core plus a service."""

    name: str
    config: CoreConfig
    address: Address
    node: Node | None = None
    persisted: PersistentState | None = None
    up: bool = True
    running: bool = False
    active_since: float | None = None
    intervals: list[tuple[float, float]] = attrs.field(factory=list)
    busy_until: float = 0.0
    timer_token: int = 0
    boots: int = 0
    start_ok: bool = True
    stop_ok: bool = True
    #: Warm standby: the service process is up (it runs on every node; the service is
    #: "active" only while promoted).
    process_up: bool = True


class ClusterView:
    """Read-only queries over a cluster's nodes and logs."""

    now: float
    sims: dict[str, SimNode]
    events: list[ClusterEvent]
    #: Every action the cores emitted, in execution order: ``(time, node, action)``.
    action_log: list[tuple[float, str, Action]]

    def node(self, name: str) -> Node:
        node = self.sims[name].node
        assert node is not None, f"{name} is down"
        return node

    def states(self) -> dict[str, State | None]:
        return {n: (s.node.state if s.node else None) for n, s in self.sims.items()}

    def masters(self) -> list[str]:
        return [n for n, s in self.sims.items() if s.node is not None and s.node.state == State.MASTER]

    def active_nodes(self) -> list[str]:
        """Nodes whose service is active now (start issued, not yet confirmed stopped)."""
        return [n for n, s in self.sims.items() if s.active_since is not None]

    def intervals(self, name: str) -> list[tuple[float, float]]:
        sim = self.sims[name]
        spans = list(sim.intervals)
        if sim.active_since is not None:
            spans.append((sim.active_since, float("inf")))
        return spans

    def active_during(self, t0: float, t1: float) -> set[str]:
        """Nodes that had the service active at some moment in ``[t0, t1]``."""
        return {n for n in self.sims if any(a <= t1 and b >= t0 for a, b in self.intervals(n))}

    def overlaps(self, since: float = 0.0) -> list[tuple[float, float, str, str]]:
        """Every interval after ``since`` where two services were active at once."""
        found = []
        names = list(self.sims)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                for a0, a1 in self.intervals(a):
                    for b0, b1 in self.intervals(b):
                        lo, hi = max(a0, b0, since), min(a1, b1)
                        if lo < hi:
                            found.append((lo, hi, a, b))
        return found

    def notifications(self, name: str | None = None) -> list[ClusterEvent]:
        return [e for e in self.events if e.kind == "notify" and (name is None or e.node == name)]

    def first(self, kind: str, name: str | None = None, after: float = 0.0) -> ClusterEvent | None:
        return next(
            (e for e in self.events if e.kind == kind and e.time >= after and (name is None or e.node == name)),
            None,
        )

    def times(self, kind: str, name: str | None = None, after: float = 0.0) -> list[float]:
        """When each event of ``kind`` (of node ``name``) happened, from ``after`` on."""
        return [e.time for e in self.events if e.kind == kind and e.time >= after and (name is None or e.node == name)]

    def actions_of(self, name: str, *types: type[Action], after: float = 0.0) -> list[tuple[float, Action]]:
        """The actions node ``name`` emitted (only of ``types``, if given), in order."""
        return [
            (t, a) for t, n, a in self.action_log if n == name and t >= after and (not types or isinstance(a, types))
        ]
