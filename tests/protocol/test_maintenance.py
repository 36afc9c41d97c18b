"""Node maintenance lasts: it is persisted (Persist action) and survives restarts."""

from __future__ import annotations

from hasup.protocol import Persist, State
from hasup.testing import NodeCluster
from tests.protocol.test_node import boot, drain
from tests.protocol.test_timing import settled, starts


def test_set_maintenance_persists_before_anything_else() -> None:
    node = boot()
    node.set_maintenance(True, 1.0)
    persisted = [a for a in drain(node) if isinstance(a, Persist)]
    assert persisted and persisted[-1].state.maintenance is True
    node.set_maintenance(True, 2.0)  # no change, no write
    assert not any(isinstance(a, Persist) for a in drain(node))
    node.set_maintenance(False, 3.0)
    persisted = [a for a in drain(node) if isinstance(a, Persist)]
    assert persisted and persisted[-1].state.maintenance is False


def test_maintenance_survives_a_restart_of_both_nodes() -> None:
    c = NodeCluster([("a", 100), ("b", 90)])
    c.start()
    settled(c, "a")
    c.set_maintenance("b", True)
    c.advance(1.0)
    # both supervisors die (kill -9; a's service keeps running) and come back
    for name in ("a", "b"):
        c.crash_supervisor(name)
    c.advance(1.0)
    for name in ("a", "b"):
        c.restart(name)
    settled(c, "a", timeout=30)
    assert c.node("b").maintenance, "b's maintenance was forgotten at restart"
    assert c.node("a").maintenance is False
    # b in maintenance never claims: a's node and service die, b stays BACKUP
    t0 = c.now
    c.kill("a")
    c.advance(30)
    assert c.masters() == []
    assert starts(c, "b", t0) == []
    assert c.node("b").state == State.BACKUP
    # until the operator ends it: then b claims at once
    c.set_maintenance("b", False)
    c.run_until_true(lambda: c.masters() == ["b"], timeout=10)
    assert c.overlaps() == []


def test_switchover_maintenance_is_persisted_too() -> None:
    c = NodeCluster([("a", 100), ("b", 90)])
    c.start()
    settled(c, "a")
    assert c.switchover("a") == "b"
    settled(c, "b")
    c.crash_supervisor("a")
    c.restart("a")
    c.advance(30)
    assert c.masters() == ["b"], "a preempted back after a restart despite its switchover maintenance"
    assert c.node("a").maintenance
