"""Prometheus metrics of one supervisor (text exposition via prometheus-client).

Event-driven series (transitions, failover durations, probe and backend latencies)
are recorded as they happen into plain counters and histogram buckets; state,
priority, service status, peers and the core's heartbeat counters are read from the
core at scrape time. prometheus-client, which only formats the exposition, is
imported on the first scrape: a supervisor that is never scraped does not carry it
(about 4.7 MB of memory, docs/benchmarks.md "Idle cost").
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import anyio

from .protocol import Node, ServiceStatus, State

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import Metric
    from prometheus_client.registry import Collector

__all__ = ["SupervisorMetrics"]

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _Counter:
    """A labelled counter (``<name>_total``)."""

    def __init__(self, name: str, documentation: str, labels: tuple[str, ...]) -> None:
        self.name, self.documentation, self.labels = name, documentation, labels
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, *labels: str) -> None:
        self.values[labels] = self.values.get(labels, 0) + 1

    def family(self) -> Metric:
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, value in self.values.items():
            family.add_metric(list(labels), value)
        return family


class _Histogram:
    """A labelled histogram with fixed buckets (``_bucket``, ``_sum``, ``_count``)."""

    def __init__(
        self, name: str, documentation: str, labels: tuple[str, ...], *, buckets: tuple[float, ...] = _LATENCY
    ) -> None:
        self.name, self.documentation, self.labels, self.buckets = name, documentation, labels, buckets
        self.values: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}

    def observe(self, value: float, *labels: str) -> None:
        counts, total = self.values.setdefault(labels, ([0] * (len(self.buckets) + 1), [0.0]))
        counts[bisect.bisect_left(self.buckets, value)] += 1
        total[0] += value

    def family(self) -> Metric:
        from prometheus_client.core import HistogramMetricFamily

        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, (counts, total) in self.values.items():
            cumulative, buckets = 0, []
            for bound, count in zip([*(f"{b:g}" for b in self.buckets), "+Inf"], counts, strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            family.add_metric(list(labels), buckets, total[0])
        return family


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
        self._node = name
        self._core_args = (name, core, statistics, vips)
        self._registry: CollectorRegistry | None = None
        self.transitions = _Counter("hasup_transitions", "State transitions", ("node", "from_state", "to_state"))
        self.failovers = _Histogram(
            "hasup_failover_seconds", "Takeovers by this node: from its claim to its service running", ("node",)
        )
        self.probe_seconds = _Histogram("hasup_probe_seconds", "Probe run time", ("node", "probe"))
        self.probe_results = _Counter("hasup_probe_results", "Probe results", ("node", "probe", "result"))
        self.backend_seconds = _Histogram(
            "hasup_backend_call_seconds", "Backend start/stop call latency", ("node", "call", "result")
        )
        self._recorded: tuple[_Counter | _Histogram, ...] = (
            self.transitions,
            self.failovers,
            self.probe_seconds,
            self.probe_results,
            self.backend_seconds,
        )
        self.handovers = _Counter(
            "hasup_handovers", "Changes of holder seen by this node (the handover ledger)", ("node",)
        )
        self.handover_windows = _Histogram(
            "hasup_handover_window_seconds",
            "Per handover: time with no holder and with two holders, as seen by this node",
            ("node", "window"),
            buckets=(0.0, *_LATENCY),
        )
        self._recorded += (self.handovers, self.handover_windows)

    def transition(self, previous: State, state: State) -> None:
        self.transitions.inc(self._node, previous.name, state.name)

    def failover(self, seconds: float) -> None:
        self.failovers.observe(seconds, self._node)

    def handover(self, no_holder: float, two_holders: float) -> None:
        self.handovers.inc(self._node)
        self.handover_windows.observe(no_holder, self._node, "no_holder")
        self.handover_windows.observe(two_holders, self._node, "two_holders")

    def probe(self, name: str, ok: bool, seconds: float) -> None:
        self.probe_seconds.observe(seconds, self._node, name)
        self.probe_results.inc(self._node, name, "ok" if ok else "failed")

    def backend_call(self, call: str, ok: bool, seconds: float) -> None:
        self.backend_seconds.observe(seconds, self._node, call, "ok" if ok else "failed")

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self._registry or self._build_registry())

    def _build_registry(self) -> CollectorRegistry:
        from prometheus_client import CollectorRegistry, ProcessCollector

        registry = CollectorRegistry()
        # process_open_fds, process_max_fds, memory and CPU (read from /proc at scrape time)
        ProcessCollector(registry=registry)
        registry.register(_collector(self._core_args, self._recorded))
        self._registry = registry
        return registry


def _collector(core_args: tuple[Any, ...], recorded: tuple[_Counter | _Histogram, ...]) -> Collector:
    from prometheus_client.registry import Collector

    class _Collector(Collector):
        def collect(self) -> Iterator[Metric]:
            for series in recorded:
                yield series.family()
            yield from _collect_core(*core_args)

    return _Collector()


def _collect_core(
    name: str,
    core_of: Callable[[], Node | None],
    statistics: Callable[[], Mapping[str, float]],
    vips: Callable[[], list[dict[str, Any]]] | None,
) -> Iterator[Metric]:
    """Values owned by the core, read at scrape time."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    node = name
    core = core_of()
    current_state = core.state if core is not None else State.INIT
    state = GaugeMetricFamily("hasup_state", "1 for the node's current state", labels=["node", "state"])
    for s in State:
        state.add_metric([node, s.name], 1 if current_state == s else 0)
    yield state
    service = GaugeMetricFamily("hasup_service_status", "1 for the service's current status", labels=["node", "status"])
    current = core.service if core is not None else ServiceStatus.UNKNOWN
    for st in ServiceStatus:
        service.add_metric([node, st.value], 1 if current is st else 0)
    yield service
    if vips is not None:
        held = GaugeMetricFamily(
            "hasup_vip_held", "1 while this node holds the virtual IP", labels=["node", "address", "device"]
        )
        for vip in vips():
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
    stats = statistics()
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
