"""Prometheus text exposition of a supervisor's state and counters."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from .protocol import ServiceStatus, State

if TYPE_CHECKING:
    from .supervisor import Supervisor

__all__ = ["render_metrics"]


def render_metrics(sup: Supervisor) -> bytes:
    """Render current values (a fresh registry per scrape: values come from the core)."""
    registry = CollectorRegistry()
    node = sup.config.node.name
    state = Gauge("hasup_state", "1 for the node's current state", ["node", "state"], registry=registry)
    for s in State:
        state.labels(node, s.name).set(1 if sup.state == s else 0)
    service = Gauge("hasup_service_status", "1 for the service's current status", ["node", "status"], registry=registry)
    current = sup.node.service if sup._node is not None else ServiceStatus.UNKNOWN  # noqa: SLF001
    for st in ServiceStatus:
        service.labels(node, st.value).set(1 if current is st else 0)
    if sup._node is not None:  # noqa: SLF001
        Gauge("hasup_effective_priority", "Effective priority", ["node"], registry=registry).labels(node).set(
            sup.node.effective_priority
        )
        Gauge("hasup_term", "Current term (fencing token)", ["node"], registry=registry).labels(node).set(sup.node.term)
        peer_live = Gauge("hasup_peer_live", "1 while the peer is heard", ["node", "peer"], registry=registry)
        now = anyio.current_time()
        for p in sup.node.peers():
            peer_live.labels(node, p.name or f"{p.address[0]}:{p.address[1]}").set(1 if p.live(now) else 0)
    counters = Gauge("hasup_counter", "Counters of the core and the supervisor", ["node", "name"], registry=registry)
    seconds = Gauge("hasup_last_duration_seconds", "Duration of the last call", ["node", "name"], registry=registry)
    for key, value in sorted(sup.statistics().items()):
        if key.endswith("_seconds"):
            seconds.labels(node, key.removesuffix("_seconds")).set(value)
        else:
            counters.labels(node, key).set(value)
    return generate_latest(registry)
