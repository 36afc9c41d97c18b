"""Prometheus metrics of one supervisor (text exposition via prometheus-client).

Event-driven series (transitions, failover durations, probe and backend latencies)
are recorded as they happen; state, priority, service status, peers and the core's
heartbeat counters are read from the core at scrape time by a custom collector.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import anyio
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .protocol import Node, ServiceStatus, State

__all__ = ["SupervisorMetrics"]

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class SupervisorMetrics:
    """The metrics of node ``name``: ``core`` returns the running core (``None`` before
    it runs), ``statistics`` the counters (core and supervisor)."""

    def __init__(
        self,
        name: str,
        core: Callable[[], Node | None],
        statistics: Callable[[], Mapping[str, float]],
        *,
        vips: Callable[[], list[dict[str, Any]]] | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        # process_open_fds, process_max_fds, memory and CPU (read from /proc at scrape time)
        ProcessCollector(registry=self.registry)
        node = name
        self.transitions = Counter(
            "hasup_transitions",
            "State transitions",
            ["node", "from_state", "to_state"],
            registry=self.registry,
        )
        self.failovers = Histogram(
            "hasup_failover_seconds",
            "Takeovers by this node: from its claim to its service running",
            ["node"],
            buckets=_LATENCY,
            registry=self.registry,
        )
        self.probe_seconds = Histogram(
            "hasup_probe_seconds",
            "Probe run time",
            ["node", "probe"],
            buckets=_LATENCY,
            registry=self.registry,
        )
        self.probe_results = Counter(
            "hasup_probe_results", "Probe results", ["node", "probe", "result"], registry=self.registry
        )
        self.backend_seconds = Histogram(
            "hasup_backend_call_seconds",
            "Backend start/stop call latency",
            ["node", "call", "result"],
            buckets=_LATENCY,
            registry=self.registry,
        )
        self.handovers = Counter(
            "hasup_handovers",
            "Changes of holder seen by this node (the handover ledger)",
            ["node"],
            registry=self.registry,
        )
        self.handover_windows = Histogram(
            "hasup_handover_window_seconds",
            "Per handover: time with no holder and with two holders, as seen by this node",
            ["node", "window"],
            buckets=(0.0, *_LATENCY),
            registry=self.registry,
        )
        self.registry.register(_CoreCollector(name, core, statistics, vips))
        self._node = node

    def transition(self, previous: State, state: State) -> None:
        self.transitions.labels(self._node, previous.name, state.name).inc()

    def failover(self, seconds: float) -> None:
        self.failovers.labels(self._node).observe(seconds)

    def handover(self, no_holder: float, two_holders: float) -> None:
        self.handovers.labels(self._node).inc()
        self.handover_windows.labels(self._node, "no_holder").observe(no_holder)
        self.handover_windows.labels(self._node, "two_holders").observe(two_holders)

    def probe(self, name: str, ok: bool, seconds: float) -> None:
        self.probe_seconds.labels(self._node, name).observe(seconds)
        self.probe_results.labels(self._node, name, "ok" if ok else "failed").inc()

    def backend_call(self, call: str, ok: bool, seconds: float) -> None:
        self.backend_seconds.labels(self._node, call, "ok" if ok else "failed").observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _CoreCollector(Collector):
    """Values owned by the core, read at scrape time."""

    def __init__(
        self,
        name: str,
        core: Callable[[], Node | None],
        statistics: Callable[[], Mapping[str, float]],
        vips: Callable[[], list[dict[str, Any]]] | None = None,
    ) -> None:
        self._name = name
        self._core = core
        self._statistics = statistics
        self._vips = vips

    def collect(self) -> Iterator[Metric]:
        node = self._name
        core = self._core()
        current_state = core.state if core is not None else State.INIT
        state = GaugeMetricFamily("hasup_state", "1 for the node's current state", labels=["node", "state"])
        for s in State:
            state.add_metric([node, s.name], 1 if current_state == s else 0)
        yield state
        service = GaugeMetricFamily(
            "hasup_service_status", "1 for the service's current status", labels=["node", "status"]
        )
        current = core.service if core is not None else ServiceStatus.UNKNOWN
        for st in ServiceStatus:
            service.add_metric([node, st.value], 1 if current is st else 0)
        yield service
        if self._vips is not None:
            held = GaugeMetricFamily(
                "hasup_vip_held", "1 while this node holds the virtual IP", labels=["node", "address", "device"]
            )
            for vip in self._vips():
                held.add_metric([node, vip["address"], vip["device"]], 1 if vip["held"] else 0)
            yield held
        if core is None:
            return
        yield GaugeMetricFamily("hasup_effective_priority", "Effective priority", value=core.effective_priority)
        yield GaugeMetricFamily("hasup_term", "Current term (fencing token)", value=core.term)
        now = anyio.current_time()
        live = GaugeMetricFamily("hasup_peer_live", "1 while the peer is heard", labels=["node", "peer"])
        for p in core.peers():
            live.add_metric([node, p.name or f"{p.address[0]}:{p.address[1]}"], 1 if p.live(now) else 0)
        yield live
        alarms = GaugeMetricFamily("hasup_alarm", "1 while an alarm is raised", labels=["node", "kind"])
        for kind in core.alarms:
            alarms.add_metric([node, kind], 1)
        yield alarms
        stats = self._statistics()
        beats = CounterMetricFamily("hasup_heartbeats", "Heartbeats", labels=["node", "direction"])
        beats.add_metric([node, "sent"], stats.get("sent", 0))
        beats.add_metric([node, "received"], stats.get("received", 0))
        yield beats
        dropped = CounterMetricFamily("hasup_heartbeats_dropped", "Dropped datagrams", labels=["node", "reason"])
        for key, value in stats.items():
            if key.startswith("dropped_"):
                dropped.add_metric([node, key.removeprefix("dropped_")], value)
        yield dropped
        other = CounterMetricFamily("hasup_events", "Other counters", labels=["node", "name"])
        for key, value in sorted(stats.items()):
            if key in ("sent", "received") or key.startswith("dropped_") or key.endswith("_seconds"):
                continue
            other.add_metric([node, key], value)
        yield other
