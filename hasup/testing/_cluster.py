"""``NodeCluster``: N election cores wired through a simulated network on virtual time.

Like h11's ``ConnectionPair``, but for a group: it shuttles datagrams between
:class:`~hasup.protocol.Node` objects, executes their actions with configurable
durations, and records when each node's service was active, so tests can ask
"which nodes had the service active during [t0, t1]?".
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs

from ..protocol import (
    Alarm,
    CoreConfig,
    KeyRing,
    Node,
    Notify,
    PeerSpec,
    Persist,
    PersistentState,
    ProbeSpec,
    ServiceStatus,
    StartService,
    State,
    StopService,
)
from ..protocol._config import Address

__all__ = ["ClusterEvent", "NodeCluster", "SimNode"]


@attrs.define
class ClusterEvent:
    """Something that happened in the cluster, for assertions and debugging."""

    time: float
    node: str
    kind: str  # "notify", "start", "started", "stop", "stopped", "alarm", "kill", "restart", ...
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


class NodeCluster:
    """A group of election cores on a simulated network and virtual clock.

    ``nodes`` is a sequence of ``(name, priority)`` or of ready :class:`CoreConfig`.
    Every datagram takes ``delay`` seconds (plus ``jitter``); ``loss`` drops a fraction.
    ``start_time``/``stop_time`` are how long the simulated service takes to start/stop.
    """

    def __init__(
        self,
        nodes: Sequence[tuple[str, int] | CoreConfig],
        *,
        advert_interval: float = 1.0,
        delay: float = 0.001,
        jitter: float = 0.0,
        loss: float = 0.0,
        start_time: float = 0.05,
        stop_time: float = 0.05,
        seed: int = 0,
        group: int = 51,
        key: bytes = b"k" * 32,
        probes: Sequence[ProbeSpec] = (),
        **core_options: Any,
    ) -> None:
        self.now = 0.0
        self.delay = delay
        self.jitter = jitter
        self.loss = loss
        self.start_time = start_time
        self.stop_time = stop_time
        self.rng = random.Random(seed)
        self.events: list[ClusterEvent] = []
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._blocked: set[tuple[str, str]] = set()  # (src, dst) pairs that drop
        self._epoch_clock = 1_000
        addresses = {self._name(n): (f"10.0.0.{i + 1}", 5405) for i, n in enumerate(nodes)}
        self.sims: dict[str, SimNode] = {}
        for spec in nodes:
            if isinstance(spec, CoreConfig):
                config = spec
            else:
                name, priority = spec
                config = CoreConfig(
                    name=name,
                    group=group,
                    priority=priority,
                    peers=tuple(PeerSpec(a, n) for n, a in addresses.items() if n != name),
                    keys=KeyRing.from_group_keys({1: key}, 1),
                    advert_interval=advert_interval,
                    probes=tuple(probes),
                    **core_options,
                )
            self.sims[config.name] = SimNode(config.name, config, addresses[config.name])
        self._by_address = {s.address: s for s in self.sims.values()}

    @staticmethod
    def _name(spec: tuple[str, int] | CoreConfig) -> str:
        return spec.name if isinstance(spec, CoreConfig) else spec[0]

    # ------------------------------------------------------------------ scheduling
    def _at(self, when: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._queue, (when, next(self._seq), fn))

    def run_until(self, t: float) -> None:
        """Advance virtual time to ``t``, processing every event due before it."""
        while self._queue and self._queue[0][0] <= t:
            when, _, fn = heapq.heappop(self._queue)
            self.now = max(self.now, when)
            fn()
        self.now = max(self.now, t)

    def advance(self, dt: float) -> None:
        self.run_until(self.now + dt)

    def run_until_true(self, predicate: Callable[[], bool], *, timeout: float) -> float:
        """Process events until ``predicate()`` holds; return the time. ``AssertionError`` on timeout."""
        deadline = self.now + timeout
        while not predicate():
            if not self._queue or self._queue[0][0] > deadline:
                self.run_until(deadline)
                if predicate():
                    break
                raise AssertionError(f"condition not reached by t={deadline:.3f}: {self.states()}")
            when, _, fn = heapq.heappop(self._queue)
            self.now = max(self.now, when)
            fn()
        return self.now

    # ------------------------------------------------------------------ lifecycle
    def start(self, names: Iterable[str] | None = None, *, service_running: bool = False) -> None:
        """Boot nodes (all by default) at the current time."""
        for name in names or list(self.sims):
            self._boot(self.sims[name], service_running=service_running)

    def _boot(self, sim: SimNode, *, service_running: bool) -> None:
        self._epoch_clock += 1
        epoch = max(self._epoch_clock, (sim.persisted.epoch + 1) if sim.persisted else 0)
        sim.up = True
        sim.boots += 1
        sim.busy_until = self.now
        if service_running and not sim.running:
            self._service_up(sim)
        sim.node = Node(sim.config, boot_epoch=epoch, now=self.now, persisted=sim.persisted)
        self._log(sim, "boot" if sim.boots == 1 else "restart")
        self._input(
            sim,
            lambda n: n.service_status(ServiceStatus.RUNNING if sim.running else ServiceStatus.STOPPED, self.now),
        )

    def kill(self, name: str) -> None:
        """Power off: the node and its service vanish at once."""
        sim = self.sims[name]
        sim.up = False
        sim.node = None
        self._service_down(sim)
        self._log(sim, "kill")

    def crash_supervisor(self, name: str) -> None:
        """kill -9 of hasup only: the service keeps running."""
        sim = self.sims[name]
        sim.up = False
        sim.node = None
        self._log(sim, "crash")

    def restart(self, name: str) -> None:
        """Boot a node again with its persisted state (service as it was left)."""
        sim = self.sims[name]
        self._boot(sim, service_running=sim.running)

    def shutdown(self, name: str, *, leave_running: bool = False, hold: float = 0.0) -> None:
        self._input(self.sims[name], lambda n: n.shutdown(self.now, leave_running=leave_running, hold=hold))

    def switchover(self, name: str, target: str | None = None) -> str:
        """Ask the MASTER ``name`` to hand the service over (``Node.request_switchover``)."""
        result: list[str] = []
        self._input(self.sims[name], lambda n: result.append(n.request_switchover(self.now, target)))
        return result[0]

    # ------------------------------------------------------------------ faults
    def fail_service(self, name: str) -> None:
        """The service crashes; the backend reports FAILED at once."""
        sim = self.sims[name]
        self._service_down(sim)
        self._log(sim, "service-crash")
        self._input(sim, lambda n: n.service_status(ServiceStatus.FAILED, self.now))

    def probe(self, name: str, probe: str, ok: bool) -> None:
        self._input(self.sims[name], lambda n: n.probe_result(probe, ok, self.now))

    def link(self, name: str, up: bool) -> None:
        """Carrier of the node's tracked interface; a down link also cuts its traffic."""
        for other in self.sims:
            if other != name:
                for pair in ((name, other), (other, name)):
                    if up:
                        self._blocked.discard(pair)
                    else:
                        self._blocked.add(pair)
        self._input(self.sims[name], lambda n: n.link_status(up, self.now))

    def partition(self, *groups: Iterable[str]) -> None:
        """Cut the network into ``groups``; traffic only flows inside a group."""
        sets = [set(g) for g in groups]
        for a in self.sims:
            for b in self.sims:
                if a != b and not any(a in s and b in s for s in sets):
                    self._blocked.add((a, b))

    def block(self, src: str, dst: str) -> None:
        """Drop traffic from ``src`` to ``dst`` only (one-way loss)."""
        self._blocked.add((src, dst))

    def heal(self) -> None:
        self._blocked.clear()

    @property
    def connected(self) -> bool:
        return not self._blocked

    # ------------------------------------------------------------------ observation
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

    # ------------------------------------------------------------------ internals
    def _log(
        self,
        sim: SimNode,
        kind: str,
        detail: str = "",
        state: State | None = None,
        previous: State | None = None,
    ) -> None:
        self.events.append(ClusterEvent(self.now, sim.name, kind, detail, state, previous))

    def _service_up(self, sim: SimNode) -> None:
        sim.running = True
        if sim.active_since is None:
            sim.active_since = self.now

    def _service_down(self, sim: SimNode) -> None:
        sim.running = False
        if sim.active_since is not None:
            sim.intervals.append((sim.active_since, self.now))
            sim.active_since = None

    def _input(self, sim: SimNode, fn: Callable[[Node], None]) -> None:
        if sim.node is None:
            return
        fn(sim.node)
        self._pump(sim)

    def _pump(self, sim: SimNode) -> None:
        node = sim.node
        if node is None:
            return
        for data, addr in node.datagrams_to_send():
            self._transmit(sim, data, addr)
        while (action := node.next_action()) is not None:
            self._execute(sim, node, action)
        sim.timer_token += 1
        token = sim.timer_token
        when = node.get_timer()
        if when is not None:
            self._at(max(when, self.now), lambda: self._fire(sim, node, token))

    def _fire(self, sim: SimNode, node: Node, token: int) -> None:
        if sim.node is node and sim.timer_token == token:
            node.handle_timer(self.now)
            self._pump(sim)

    def _transmit(self, src: SimNode, data: bytes, addr: Address) -> None:
        dst = self._by_address.get(addr)
        if dst is None or (src.name, dst.name) in self._blocked:
            return
        if self.loss and self.rng.random() < self.loss:
            return
        delay = self.delay + (self.rng.random() * self.jitter if self.jitter else 0.0)

        def deliver() -> None:
            if (src.name, dst.name) in self._blocked or dst.node is None:
                return
            self._input(dst, lambda n: n.receive_datagram(data, src.address, self.now))

        self._at(self.now + delay, deliver)

    def _execute(self, sim: SimNode, node: Node, action: object) -> None:
        if isinstance(action, Notify):
            self._log(sim, "notify", action.reason, action.state, action.previous)
        elif isinstance(action, Persist):
            sim.persisted = action.state
        elif isinstance(action, Alarm):
            self._log(sim, "alarm", f"{action.kind}: {action.detail}" if action.active else f"{action.kind} cleared")
        elif isinstance(action, StartService):
            begin = max(self.now, sim.busy_until)
            sim.busy_until = begin + self.start_time
            self._log(sim, "start", action.reason)
            ok = sim.start_ok

            def begin_start() -> None:
                if sim.node is node and ok:
                    self._service_up(sim)

            def started() -> None:
                if sim.node is not node:
                    return
                self._log(sim, "started" if ok else "start-failed")
                self._input(sim, lambda n: n.action_result(action, ok, self.now, "" if ok else "simulated"))

            self._at(begin, begin_start)
            self._at(sim.busy_until, started)
        elif isinstance(action, StopService):
            begin = max(self.now, sim.busy_until)
            sim.busy_until = begin + self.stop_time
            self._log(sim, "stop", action.reason)
            ok = sim.stop_ok

            def stopped() -> None:
                if sim.node is not node:
                    return
                if ok:
                    self._service_down(sim)
                self._log(sim, "stopped" if ok else "stop-failed")
                self._input(sim, lambda n: n.action_result(action, ok, self.now, "" if ok else "simulated"))

            self._at(sim.busy_until, stopped)
