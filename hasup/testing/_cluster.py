"""``NodeCluster``: N election cores wired through a simulated network on virtual time.

Like h11's ``ConnectionPair``, but for a group: it shuttles datagrams between
:class:`~hasup.protocol.Node` objects, executes their actions with configurable
durations, and records when each node's service was active, so tests can ask
"which nodes had the service active during [t0, t1]?".

With a :class:`~hasup.testing.FakeCoordinator` and/or a
:class:`~hasup.testing.FakeSyncEngine` it also routes the cores' coordinator actions
(``Campaign``, ``Resign``) and data-sync actions (``SyncRole``, ``PullData``) to them;
without, those actions are only logged.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..protocol import (
    Action,
    Alarm,
    Campaign,
    ConfigWarning,
    CoreConfig,
    Handover,
    KeyRing,
    Node,
    Notify,
    PeerSpec,
    Persist,
    ProbeSpec,
    PullData,
    Resign,
    ServiceStatus,
    StartService,
    State,
    StopService,
    SyncRole,
)
from ..protocol._config import Address
from ..protocol._witness import WITNESS_LABEL
from ._clock import VirtualClock
from ._coordinator import FakeCoordinator
from ._fakesync import FakeSyncEngine
from ._host import NodeInput
from ._observe import ClusterEvent, ClusterView, SimNode
from ._witness import FakeWitness

__all__ = ["ClusterEvent", "NodeCluster", "SimNode"]


class NodeCluster(VirtualClock, ClusterView):
    """A group of election cores on a simulated network and virtual clock.

    ``nodes`` is a sequence of ``(name, priority)`` or of ready :class:`CoreConfig`.
    Every datagram takes ``delay`` seconds (plus ``jitter``); ``loss`` drops a fraction.
    ``start_time``/``stop_time`` are how long the simulated service takes to start/stop.

    ``coordinator`` executes the cores' ``Campaign``/``Resign`` (the generated configs
    get ``external_leader=True`` and ``coordinator_timeout`` = its ``request_timeout``);
    ``sync`` executes ``SyncRole``/``PullData`` (they get ``takeover_needs_sync=True``);
    ``witness`` (a :class:`~hasup.testing.FakeWitness`) answers the cores' vote requests
    (they get ``witness`` = its address and the group key's witness keys).
    Ready :class:`CoreConfig` objects are used as they are. The cluster is the fakes'
    :class:`~hasup.testing.SimHost`.
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
        coordinator: FakeCoordinator | None = None,
        sync: FakeSyncEngine | None = None,
        witness: FakeWitness | None = None,
        **core_options: Any,
    ) -> None:
        VirtualClock.__init__(self)
        self.coordinator = coordinator
        self.sync = sync
        self.witness = witness
        if witness is not None:
            core_options.setdefault("witness", witness.address)
            core_options.setdefault("witness_keys", KeyRing.from_group_keys({1: key}, 1, label=WITNESS_LABEL))
            witness.attach({group: KeyRing.from_group_keys({1: key}, 1, label=WITNESS_LABEL)}, self.now)
        if coordinator is not None:
            core_options.setdefault("external_leader", True)
            core_options.setdefault("coordinator_timeout", coordinator.request_timeout)
        if sync is not None:
            core_options.setdefault("takeover_needs_sync", True)
        self.delay = delay
        self.jitter = jitter
        self.loss = loss
        self.start_time = start_time
        self.stop_time = stop_time
        self.rng = random.Random(seed)
        self.events: list[ClusterEvent] = []
        self.action_log: list[tuple[float, str, Action]] = []
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
        if coordinator is not None:
            coordinator.attach(self)
        if sync is not None:
            sync.attach(self)

    @staticmethod
    def _name(spec: tuple[str, int] | CoreConfig) -> str:
        return spec.name if isinstance(spec, CoreConfig) else spec[0]

    def _status(self) -> object:
        return self.states()

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
        if sim.config.warm:
            self._input(sim, lambda n: n.standby_ready(sim.process_up, self.now, "" if sim.process_up else "down"))
        for fake in self._fakes():
            fake.node_up(sim.name, sim.boots)

    def kill(self, name: str) -> None:
        """Power off: the node and its service vanish at once."""
        sim = self.sims[name]
        self._down(sim)
        self._service_down(sim)
        self._log(sim, "kill")

    def crash_supervisor(self, name: str) -> None:
        """kill -9 of hasup only: the service keeps running."""
        sim = self.sims[name]
        self._down(sim)
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

    def set_maintenance(self, name: str, on: bool) -> None:
        """``hasup maintenance on|off`` on ``name`` (``Node.set_maintenance``)."""
        self._input(self.sims[name], lambda n: n.set_maintenance(on, self.now))

    def set_group_maintenance(self, name: str, on: bool) -> None:
        """``hasup maintenance on|off --group`` run on ``name``."""
        self._input(self.sims[name], lambda n: n.set_group_maintenance(on, self.now))

    # ------------------------------------------------------------------ faults
    def fail_service(self, name: str) -> None:
        """The service crashes; the backend reports FAILED at once."""
        sim = self.sims[name]
        self._service_down(sim)
        self._log(sim, "service-crash")
        self._input(sim, lambda n: n.service_status(ServiceStatus.FAILED, self.now))

    def crash_process(self, name: str) -> None:
        """Warm standby: the service process dies (promoted or not). Its readiness check
        fails at once; a promoted copy is reported FAILED as well."""
        sim = self.sims[name]
        sim.process_up = False
        was_active = sim.running
        self._service_down(sim)
        self._log(sim, "process-crash")
        if was_active:
            self._input(sim, lambda n: n.service_status(ServiceStatus.FAILED, self.now))
        self._input(sim, lambda n: n.standby_ready(False, self.now, "process down"))

    def restore_process(self, name: str) -> None:
        """Warm standby: the service process is back (as a standby) and ready."""
        sim = self.sims[name]
        sim.process_up = True
        self._log(sim, "process-up")
        self._input(sim, lambda n: n.standby_ready(True, self.now))

    def probe(self, name: str, probe: str, ok: bool) -> None:
        self._input(self.sims[name], lambda n: n.probe_result(probe, ok, self.now))

    def _endpoints(self) -> list[str]:
        """Node names, and the witness's endpoint name when there is one."""
        return [*self.sims, *([self.witness.name] if self.witness is not None else [])]

    def link(self, name: str, up: bool) -> None:
        """Carrier of the node's tracked interface; a down link also cuts its traffic."""
        for other in self._endpoints():
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
        endpoints = self._endpoints()
        for a in endpoints:
            for b in endpoints:
                if a != b and not any(a in s and b in s for s in sets):
                    self._blocked.add((a, b))

    def block(self, src: str, dst: str) -> None:
        """Drop traffic from ``src`` to ``dst`` only (one-way loss)."""
        self._blocked.add((src, dst))

    def heal(self) -> None:
        """Undo every partition and block (and every cut from the coordinator)."""
        self._blocked.clear()
        if self.coordinator is not None:
            self.coordinator.restore_all()

    @property
    def connected(self) -> bool:
        return not self._blocked

    # ------------------------------------------------------------------ SimHost (for the fakes)
    @property
    def names(self) -> list[str]:
        return list(self.sims)

    def incarnation(self, name: str) -> int | None:
        sim = self.sims[name]
        return sim.boots if sim.up and sim.node is not None else None

    def deliver(self, name: str, incarnation: int, fn: NodeInput) -> bool:
        sim = self.sims[name]
        if self.incarnation(name) != incarnation:
            return False
        self._input(sim, lambda n: fn(n, self.now))
        return True

    def service_running(self, name: str) -> bool:
        return self.sims[name].active_since is not None

    def can_reach(self, src: str, dst: str) -> bool:
        return (src, dst) not in self._blocked

    def record(self, name: str, kind: str, detail: str = "") -> None:
        self._log(self.sims[name], kind, detail)

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

    def _fakes(self) -> list[FakeCoordinator | FakeSyncEngine]:
        return [f for f in (self.coordinator, self.sync) if f is not None]

    def _down(self, sim: SimNode) -> None:
        """The node's hasup is gone (its service may live on)."""
        if sim.up:
            for fake in self._fakes():
                fake.node_down(sim.name, sim.boots)
        sim.up = False
        sim.node = None

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
        if self.witness is not None and addr == self.witness.address:
            self._to_witness(src, data, self.witness)
            return
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

    def _hop(self, src: str, dst: str) -> float | None:
        """The delay of one datagram from ``src`` to ``dst`` (``None``: it is lost)."""
        if (src, dst) in self._blocked or (self.loss and self.rng.random() < self.loss):
            return None
        return self.delay + (self.rng.random() * self.jitter if self.jitter else 0.0)

    def _to_witness(self, src: SimNode, data: bytes, witness: FakeWitness) -> None:
        there = self._hop(src.name, witness.name)
        if there is None:
            return
        node = src.node

        def arrive() -> None:
            if (src.name, witness.name) in self._blocked:
                return
            reply = witness.handle(data, self.now)
            back = self._hop(witness.name, src.name)
            if reply is None or back is None:
                return

            def answer() -> None:
                if (witness.name, src.name) not in self._blocked and src.node is node:
                    self._input(src, lambda n: n.receive_datagram(reply, witness.address, self.now))

            self._at(self.now + back, answer)

        self._at(self.now + there, arrive)

    def _execute(self, sim: SimNode, node: Node, action: Action) -> None:
        self.action_log.append((self.now, sim.name, action))
        if isinstance(action, Campaign | Resign | SyncRole | PullData | ConfigWarning):
            self._route(sim, action)
        elif isinstance(action, Notify):
            self._log(sim, "notify", action.reason, action.state, action.previous)
        elif isinstance(action, Persist):
            sim.persisted = action.state
        elif isinstance(action, Handover):
            self._log(sim, "handover", f"{action.previous}->{action.holder} term {action.term}")
        elif isinstance(action, Alarm):
            self._log(sim, "alarm", f"{action.kind}: {action.detail}" if action.active else f"{action.kind} cleared")
        elif isinstance(action, StartService):
            begin = max(self.now, sim.busy_until)
            sim.busy_until = begin + self.start_time
            self._log(sim, "start", action.reason)
            ok = sim.start_ok and (sim.process_up or not sim.config.warm)

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

    def _route(self, sim: SimNode, action: Campaign | Resign | SyncRole | PullData | ConfigWarning) -> None:
        """Coordinator and sync actions go to the fakes (only logged without them)."""
        coordinator, sync = self.coordinator, self.sync
        if isinstance(action, Campaign):
            self._log(sim, "campaign", action.reason)
            if coordinator is not None:
                coordinator.campaign(sim.name, sim.boots, action)
        elif isinstance(action, Resign):
            self._log(sim, "resign", f"{'held' if action.held else 'withdrawn'}: {action.reason}")
            if coordinator is not None:
                coordinator.resign(sim.name, sim.boots, action)
        elif isinstance(action, SyncRole):
            self._log(sim, "sync-role", action.role if action.peer is None else f"{action.role} {action.peer}")
            if sync is not None:
                sync.apply_role(sim.name, sim.boots, action)
        elif isinstance(action, PullData):
            self._log(sim, "pull", action.peer)
            if sync is not None:
                sync.pull(sim.name, sim.boots, action)
        else:
            self._log(sim, "warning", action.detail)
