"""Node maintenance lasts: it is persisted (Persist action) and survives restarts."""

from __future__ import annotations

import struct

import pytest

from hasup.protocol import Drop, Persist, State, decode, encode
from hasup.protocol._wire import TAG_LEN, Tlv
from hasup.testing import NodeCluster
from tests.protocol.test_node import boot, drain
from tests.protocol.test_timing import settled, starts
from tests.protocol.test_wire import GROUP, KEYS, heartbeat


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


def test_group_maintenance_freezes_every_node_and_survives_restarts() -> None:
    c = NodeCluster([("a", 100), ("b", 90), ("c", 80)])
    c.start()
    settled(c, "a")
    c.set_group_maintenance("c", True)  # set on any node: the heartbeats carry it
    c.run_until_true(lambda: all(c.node(n).group_maintenance for n in "abc"), timeout=1.0)
    # no moves: the MASTER keeps serving; when it dies nobody claims
    c.advance(10)
    assert c.masters() == ["a"]
    for name in "abc":
        c.crash_supervisor(name)
    c.advance(1.0)
    for name in "abc":
        c.restart(name)
    c.advance(10)
    assert all(c.node(n).group_maintenance for n in "abc"), "forgotten at restart"
    t0 = c.now
    c.kill("a")
    c.advance(30)
    assert c.masters() == [] and starts(c, "b", t0) == [] and starts(c, "c", t0) == []
    # a comes back with its persisted (old) generation; off on b reaches everyone
    c.restart("a")
    c.advance(2.0)
    c.set_group_maintenance("b", False)
    settled(c, "a", timeout=30)
    assert not any(c.node(n).group_maintenance for n in "abc")
    assert c.overlaps() == []


def test_a_node_down_while_group_maintenance_ends_learns_it_from_its_peers() -> None:
    c = NodeCluster([("a", 100), ("b", 90)])
    c.start()
    settled(c, "a")
    c.set_group_maintenance("a", True)
    c.run_until_true(lambda: c.node("b").group_maintenance, timeout=1.0)
    c.crash_supervisor("b")
    c.set_group_maintenance("a", False)  # generation 2, while b is down with generation 1 "on"
    c.advance(1.0)
    c.restart("b")
    c.run_until_true(lambda: c.node("b").state == State.BACKUP, timeout=10)
    c.advance(1.0)
    assert not c.node("a").group_maintenance and not c.node("b").group_maintenance
    # and b is a normal standby again: it takes over when a dies
    c.kill("a")
    c.run_until_true(lambda: c.masters() == ["b"], timeout=10)
    assert c.overlaps() == []


def test_node_and_group_maintenance_are_independent() -> None:
    node = boot()
    node.set_maintenance(True, 1.0)
    node.set_group_maintenance(True, 2.0)
    node.set_group_maintenance(False, 3.0)
    assert node.maintenance and not node.group_maintenance
    persisted = [a for a in drain(node) if isinstance(a, Persist)][-1].state
    assert persisted.maintenance is True and persisted.group_maintenance == (2, False)


@pytest.mark.parametrize("value", [(1, True), (2**64 - 1, False), (7, False)])
def test_group_maintenance_round_trips_on_the_wire(value: tuple[int, bool]) -> None:
    hb = heartbeat(group_maintenance=value)
    assert decode(encode(hb, KEYS), KEYS, GROUP) == hb


def test_a_malformed_group_maintenance_tlv_is_dropped() -> None:
    body = encode(heartbeat(), KEYS)[:-TAG_LEN] + struct.pack("!BHQ", Tlv.GROUP_MAINTENANCE, 8, 3)
    assert decode(body + KEYS.tag(KEYS.send_id, body), KEYS, GROUP) == Drop.MALFORMED
