"""Warm standby in the core, on virtual time: ``Promote``/``Demote`` under the release
handshake, standby readiness as eligibility, and the handover ledger's ``Handover``."""

from __future__ import annotations

import pytest

from hasup.protocol import (
    CoreConfig,
    Demote,
    Handover,
    KeyRing,
    Node,
    PeerSpec,
    Promote,
    ServiceStatus,
    StartService,
    State,
    StopService,
)
from hasup.protocol._handover import HandoverTracker
from hasup.testing import NodeCluster

ADVERT = 0.1


def warm_cluster(**kw: object) -> NodeCluster:
    c = NodeCluster([("a", 100), ("b", 90)], advert_interval=ADVERT, warm=True, **kw)  # type: ignore[arg-type]
    c.start()
    c.run_until_true(lambda: c.masters() == ["a"] and c.states()["b"] == State.BACKUP, timeout=10)
    return c


def actions(c: NodeCluster, name: str, kind: type) -> list[tuple[float, object]]:
    return [(t, a) for t, n, a in c.action_log if n == name and isinstance(a, kind)]


def confirmed(c: NodeCluster, name: str, kind: str) -> list[float]:
    return [e.time for e in c.events if e.node == name and e.kind == kind]


def handovers(c: NodeCluster, name: str) -> list[Handover]:
    return [a for _, n, a in c.action_log if n == name and isinstance(a, Handover)]


def test_warm_mode_promotes_and_demotes_instead_of_start_and_stop() -> None:
    c = warm_cluster()
    starts = [a for _, _, a in c.action_log if isinstance(a, StartService)]
    assert starts and all(isinstance(a, Promote) for a in starts)
    assert starts[0].term == c.node("a").term
    stops = [a for _, _, a in c.action_log if isinstance(a, StopService)]
    assert all(isinstance(a, Demote) for a in stops)


def test_cold_mode_never_promotes() -> None:
    c = NodeCluster([("a", 100), ("b", 90)], advert_interval=ADVERT)
    c.start()
    c.run_until_true(lambda: c.masters() == ["a"], timeout=10)
    assert not any(isinstance(a, Promote | Demote) for _, _, a in c.action_log)


def test_crash_on_the_holder_promotes_the_standby_after_the_demotion_is_confirmed() -> None:
    c = warm_cluster()
    c.advance(1.0)
    crash = c.now
    c.crash_process("a")
    c.run_until_true(lambda: c.masters() == ["b"], timeout=5)
    assert c.states()["a"] == State.FAULT
    demoted = [t for t in confirmed(c, "a", "stopped") if t >= crash]
    promoted = [t for t, _ in actions(c, "b", Promote) if t >= crash]
    assert demoted and promoted
    # only after the old holder's demotion is confirmed (and heard), never before
    assert promoted[0] > demoted[0]
    # at once on the FAULT announcement: no master-down wait
    assert promoted[0] - crash < 3 * ADVERT
    assert c.overlaps() == []


def test_a_standby_whose_process_is_down_is_not_eligible() -> None:
    c = warm_cluster()
    c.crash_process("b")
    c.advance(0.5)
    assert c.states()["b"] == State.BACKUP
    assert c.node("b").effective_priority == 0
    assert "standby_not_ready" in c.node("b").alarms
    with pytest.raises(ValueError, match="not a live, eligible BACKUP"):
        c.switchover("a", "b")
    # the holder dies too: nobody may be promoted (b cannot take over)
    c.crash_process("a")
    c.advance(3.0)
    assert c.masters() == []
    assert c.states()["a"] == State.FAULT
    assert not [t for t, _ in actions(c, "b", Promote)]
    # b's process comes back: b is promoted (nobody holds the service)
    back = c.now
    c.restore_process("b")
    c.run_until_true(lambda: c.masters() == ["b"], timeout=5)
    assert "standby_not_ready" not in c.node("b").alarms
    assert c.now - back < 2 * c.node("b").master_down_interval()


def test_readiness_is_required_before_the_first_claim() -> None:
    c = NodeCluster([("a", 100)], advert_interval=ADVERT, warm=True)
    c.sims["a"].process_up = False
    c.start()
    c.advance(2.0)
    assert c.masters() == []
    assert c.states()["a"] == State.BACKUP
    assert c.node("a").effective_priority == 0
    c.restore_process("a")
    c.run_until_true(lambda: c.masters() == ["a"], timeout=5)


def test_switchover_promotes_only_the_named_target_after_the_demotion() -> None:
    c = NodeCluster([("a", 100), ("b", 90), ("c", 80)], advert_interval=ADVERT, warm=True, quorum="none")
    c.start()
    c.run_until_true(lambda: c.masters() == ["a"] and c.states()["c"] == State.BACKUP, timeout=10)
    c.advance(0.5)
    began = c.now
    c.switchover("a", "c")
    c.run_until_true(lambda: c.masters() == ["c"], timeout=5)
    assert not [t for t, _ in actions(c, "b", Promote) if t >= began]
    demoted = [t for t in confirmed(c, "a", "stopped") if t >= began]
    promoted = [t for t, _ in actions(c, "c", Promote) if t >= began]
    assert promoted[0] > demoted[0]
    assert c.overlaps() == []


def test_unconfirmed_demotion_faults_and_nobody_is_promoted() -> None:
    c = warm_cluster()
    c.sims["a"].stop_ok = False
    c.switchover("a", "b")
    c.advance(3.0)
    assert c.states()["a"] == State.FAULT
    assert "stop_unconfirmed" in c.node("a").alarms
    assert c.masters() == []
    assert len(actions(c, "b", Promote)) == 0


def test_failed_promotion_faults_and_the_next_node_is_tried() -> None:
    c = NodeCluster([("a", 100), ("b", 90), ("c", 80)], advert_interval=ADVERT, warm=True, quorum="none")
    c.start()
    c.run_until_true(lambda: c.masters() == ["a"] and c.states()["c"] == State.BACKUP, timeout=10)
    c.sims["b"].start_ok = False
    c.crash_process("a")
    c.run_until_true(lambda: c.masters() == ["c"], timeout=10)
    assert c.states()["b"] == State.FAULT


# ---------------------------------------------------------------- the handover ledger
def test_handover_is_recorded_by_both_nodes_with_the_gap_they_saw() -> None:
    c = warm_cluster()
    c.advance(1.0)
    c.crash_process("a")
    c.run_until_true(lambda: c.masters() == ["b"], timeout=5)
    c.advance(0.5)
    term = c.node("b").term
    for name in ("a", "b"):
        moves = handovers(c, name)
        assert moves[0].holder == "a" and moves[0].previous is None
        last = moves[-1]
        assert (last.previous, last.holder, last.term) == ("a", "b", term)
        assert last.two_holders == 0.0
        # a demotion (0.05 s), the FAULT heartbeat, then a promotion (0.05 s): the only
        # window without a holder is b's promotion and the message delays
        assert 0.04 <= last.no_holder <= 0.2, (name, last)


def test_node_loss_gap_counts_from_the_last_heartbeat() -> None:
    c = warm_cluster()
    c.advance(1.0)
    c.kill("a")
    killed = c.now
    c.run_until_true(lambda: c.masters() == ["b"], timeout=5)
    c.advance(0.2)
    last = handovers(c, "b")[-1]
    assert (last.previous, last.holder) == ("a", "b")
    promoted = confirmed(c, "b", "started")[-1]
    # the holder was last heard at most one advert before it died
    assert promoted - killed <= last.no_holder <= promoted - killed + ADVERT + 0.01


def test_tracker_counts_two_holders_and_waits_for_the_move_to_settle() -> None:
    t = HandoverTracker(0.0)
    assert t.observe(0.5, {"a"}, set(), {}, None) is None  # a is starting
    assert t.observe(1.0, {"a"}, {"a"}, {}, ("a", 1)) == Handover(1, None, "a", 1.0, 0.0)
    assert t.observe(2.0, {"a"}, {"a"}, {}, ("a", 1)) is None
    # b starts while a still holds (split brain): not settled while both may run
    assert t.observe(3.0, {"a", "b"}, {"a", "b"}, {}, ("b", 2)) is None
    move = t.observe(3.5, {"b"}, {"b"}, {}, ("b", 2))
    assert move == Handover(2, "a", "b", 0.0, 0.5)
    # b goes silent (last heard at 4.0), c starts at 4.8, promoted at 5.0
    assert t.observe(4.6, set(), set(), {"b": 4.0}, None) is None
    assert t.observe(4.8, {"c"}, set(), {}, None) is None
    assert t.observe(5.0, {"c"}, {"c"}, {}, ("c", 3)) == Handover(3, "b", "c", 1.0, 0.0)
    # an older term is never recorded as a move
    assert t.observe(6.0, {"c"}, {"c"}, {}, ("c", 2)) is None


def test_standby_ready_is_ignored_in_cold_mode() -> None:
    cfg = CoreConfig(
        name="a",
        group=1,
        priority=100,
        peers=(PeerSpec(("10.0.0.2", 5405), "b"),),
        keys=KeyRing.from_group_keys({1: b"k" * 32}, 1),
    )
    node = Node(cfg, boot_epoch=10, now=0.0)
    node.service_status(ServiceStatus.STOPPED, 0.0)
    node.standby_ready(False, 0.1, "down")
    node.handle_timer(0.2)
    assert node.state != State.FAULT


@pytest.mark.parametrize("warm", [False, True])
def test_config_hash_separates_warm_and_cold_groups(warm: bool) -> None:
    base = CoreConfig(name="a", group=1, priority=100)
    other = CoreConfig(name="a", group=1, priority=100, warm=warm)
    assert (base.config_hash == other.config_hash) is (not warm)


def test_a_standby_found_promoted_is_demoted_at_once() -> None:
    """NeuronEX restores its nodes' running state after a restart: a standby whose copy
    comes back promoted while another node is MASTER is demoted, nothing else moves."""
    c = warm_cluster()
    c.advance(0.5)
    sim = c.sims["b"]
    c._service_up(sim)  # b's service restarted with its nodes running
    seen = c.now
    c._input(sim, lambda n: n.service_status(ServiceStatus.RUNNING, c.now))
    c.run_until_true(lambda: c.active_nodes() == ["a"], timeout=2)
    demotes = [t for t, _ in actions(c, "b", Demote) if t >= seen]
    assert demotes and demotes[0] == seen
    assert c.masters() == ["a"] and c.states()["b"] == State.BACKUP
