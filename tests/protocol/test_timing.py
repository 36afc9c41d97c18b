"""Exact timings and handovers on virtual time, through ``NodeCluster``."""

from __future__ import annotations

import pytest

from hasup.protocol import ProbeSpec, ServiceStatus, State
from hasup.testing import NodeCluster

TINY = 1e-6  # message delay small enough not to matter at ±1 ms


def down(priority: int, advert: float) -> float:
    return 3 * advert + (256 - priority) * advert / 256


def settled(c: NodeCluster, master: str, timeout: float = 30.0) -> float:
    return c.run_until_true(
        lambda: (
            c.masters() == [master]
            and all(s in (State.BACKUP, State.MASTER) for n, s in c.states().items() if s is not None)
        ),
        timeout=timeout,
    )


def starts(c: NodeCluster, name: str, after: float = 0.0) -> list[float]:
    return [e.time for e in c.events if e.kind == "start" and e.node == name and e.time >= after]


def event_times(c: NodeCluster, kind: str, name: str, after: float = 0.0) -> list[float]:
    return [e.time for e in c.events if e.kind == kind and e.node == name and e.time >= after]


def notified(c: NodeCluster, name: str, state: State, after: float = 0.0) -> list[float]:
    return [e.time for e in c.notifications(name) if e.state == state and e.time >= after]


# --------------------------------------------------------------------------- master loss
@pytest.mark.parametrize("advert", [1.0, 0.1, 0.02])
def test_master_loss_takeover_time_is_exact(advert: float) -> None:
    c = NodeCluster([("a", 100), ("b", 90)], advert_interval=advert, delay=TINY)
    c.start()
    settled(c, "a")
    c.advance(7.3 * advert)  # an arbitrary phase of a's advert cycle
    killed = c.now
    c.kill("a")
    c.run_until_true(lambda: bool(starts(c, "b", killed)), timeout=10 * advert)
    (peer,) = c.node("b").peers()
    assert peer.last_rx is not None
    assert killed - advert <= peer.last_rx <= killed
    took = starts(c, "b", killed)[0] - peer.last_rx
    assert took == pytest.approx(3 + (256 - 90) / 256 if advert == 1.0 else down(90, advert), abs=1e-3)
    assert took == pytest.approx(down(90, advert), abs=1e-3)
    settled(c, "b")
    assert c.overlaps() == []


def test_loss_before_death_queries_keep_the_master() -> None:
    """Three lost heartbeats alone do not move the service: queries fetch an answer."""
    c = NodeCluster([("a", 100), ("b", 90)], delay=0.001)
    c.start()
    settled(c, "a")
    c.block("a", "b")
    c.advance(2.5)  # 2 adverts of silence: b starts querying every advert/4
    c.heal()
    c.advance(10)
    assert c.masters() == ["a"]
    assert starts(c, "b") == []
    assert c.node("b").statistics()["queries"] >= 1


# --------------------------------------------------------------------------- service failure
def test_service_failure_moves_within_one_message_delay_of_the_stop() -> None:
    delay = 0.01
    c = NodeCluster([("a", 100), ("b", 90)], delay=delay)
    c.start()
    settled(c, "a")
    c.advance(3.3)
    t0 = c.now
    c.fail_service("a")
    settled(c, "b")
    fault = notified(c, "a", State.FAULT, t0)[0]
    claim = notified(c, "b", State.CLAIMING, t0)[0]
    stopped = event_times(c, "stopped", "a", t0)[0]
    (start,) = starts(c, "b", t0)
    assert fault == t0  # FAULT announced at once, with priority 0
    assert claim == pytest.approx(fault + delay)  # the best peer claims on the announcement
    # a sends INACTIVE once the backend confirmed the stop; b starts on receipt.
    assert start == pytest.approx(stopped + delay)
    assert c.overlaps() == []


# --------------------------------------------------------------------------- failback, preemption
def test_failback_through_release_has_zero_overlap() -> None:
    c = NodeCluster([("a", 100), ("b", 90)])
    c.start()
    settled(c, "a")
    c.kill("a")
    settled(c, "b")
    t0 = c.now
    c.restart("a")
    settled(c, "a")
    (b_stop,) = event_times(c, "stopped", "b", t0)
    (a_start,) = starts(c, "a", t0)
    assert a_start > b_stop
    assert c.overlaps() == []
    assert c.active_during(t0, c.now) == {"a", "b"}
    assert c.node("a").term > c.node("b").term - 1


def test_preempt_false_never_takes_over_from_a_live_holder() -> None:
    c = NodeCluster([("a", 100), ("b", 90)], preempt=False)
    c.start(["b"])
    settled(c, "b")
    c.start(["a"])
    c.advance(120)
    assert c.masters() == ["b"]
    assert starts(c, "a") == []
    assert c.node("a").state == State.BACKUP
    # ... but it still takes over a dead one.
    t0 = c.now
    c.kill("b")
    settled(c, "a")
    assert starts(c, "a", t0)


def test_preempt_delay_is_respected() -> None:
    c = NodeCluster([("a", 100), ("b", 90)], preempt_delay=5.0)
    c.start(["b"])
    settled(c, "b")
    t0 = c.now
    c.start(["a"])
    settled(c, "a")
    backup = notified(c, "a", State.BACKUP, t0)[0]
    released = notified(c, "b", State.RELEASING, t0)[0]
    assert released - backup == pytest.approx(5.0, abs=0.01)
    assert c.overlaps() == []


# --------------------------------------------------------------------------- faults
def test_fault_holddown_and_exponential_backoff() -> None:
    c = NodeCluster([("a", 100), ("b", 90)], fault_holddown=2.0)
    c.start()
    settled(c, "a")
    holds = []
    for _ in range(4):
        t0 = c.now
        c.fail_service("a")
        settled(c, "a", timeout=60)  # a recovers, then preempts back
        fault = notified(c, "a", State.FAULT, t0)[0]
        recovered = notified(c, "a", State.BACKUP, t0)[0]
        holds.append(recovered - fault)
    assert holds == pytest.approx([2.0, 4.0, 8.0, 16.0], abs=1e-6)
    sim = c.sims["a"]
    assert sim.persisted is not None
    assert sim.persisted.fault_level == 4
    # Damping survives a restart of hasup.
    c.crash_supervisor("a")
    c.restart("a")
    settled(c, "a", timeout=60)
    t0 = c.now
    c.fail_service("a")
    settled(c, "a", timeout=120)
    assert notified(c, "a", State.BACKUP, t0)[0] - t0 == pytest.approx(32.0, abs=1e-6)
    assert c.overlaps() == []


def test_nodes_leaving_fault_together_start_only_the_best_one_round_trip_after_the_claim() -> None:
    """Two hold-downs ending at the same instant: each node still sees the other in
    FAULT (no candidate) and both claim at once; only the claimer whose claim every live
    peer acknowledged starts, one round trip later, and the lower rank aborts on the
    acknowledgement that carries the rival claim."""
    delay = 0.01
    env = [ProbeSpec("env", when="always", fall=1, rise=1)]
    c = NodeCluster([("a", 100), ("b", 90)], delay=delay, fault_holddown=2.0, probes=env)
    c.start()
    settled(c, "a")
    c.advance(3.3)
    t0 = c.now
    for name in ("a", "b"):
        c.probe(name, "env", False)
    for name in ("a", "b"):
        c.probe(name, "env", True)
    settled(c, "a")
    claims = {n: notified(c, n, State.CLAIMING, t0) for n in ("a", "b")}
    assert claims == {"a": [t0 + 2.0], "b": [t0 + 2.0]}  # both claimed, as they could
    # b: FAULT -> BACKUP -> CLAIMING at t0 + 2, back to BACKUP on a's answer to its query
    assert notified(c, "b", State.BACKUP, t0 + 2.0) == pytest.approx([t0 + 2.0, t0 + 2.0 + delay])
    assert starts(c, "b", t0) == []
    assert starts(c, "a", t0) == [pytest.approx(t0 + 2.0 + 2 * delay)]  # one round trip
    assert c.overlaps() == []


def test_coldstart_with_service_down_is_never_a_fault() -> None:
    probes = [ProbeSpec("http", when="active", fall=1, rise=1)]
    c = NodeCluster([("a", 100), ("b", 90)], probes=probes)
    c.start()
    for _ in range(5):  # the recipe's curl fails while nothing runs: not our business
        c.advance(0.5)
        for n in ("a", "b"):
            if c.node(n).state != State.MASTER:
                c.probe(n, "http", False)
    settled(c, "a")
    assert notified(c, "a", State.FAULT) == []
    assert notified(c, "b", State.FAULT) == []
    # A node whose service is down at boot joins as BACKUP.
    c.kill("b")
    c.restart("b")
    c.advance(10)
    assert c.states() == {"a": State.MASTER, "b": State.BACKUP}


def test_active_probe_failure_moves_the_service() -> None:
    probes = [ProbeSpec("http", when="active", fall=2, rise=1)]
    c = NodeCluster([("a", 100), ("b", 90)], probes=probes)
    c.start()
    settled(c, "a")
    assert c.node("a").wants_probe("http", c.now)
    assert not c.node("b").wants_probe("http", c.now)
    c.probe("a", "http", False)
    assert c.masters() == ["a"]
    c.probe("a", "http", False)
    assert c.node("a").state == State.FAULT
    settled(c, "b")
    assert c.overlaps() == []


def test_link_down_on_the_holder() -> None:
    c = NodeCluster([("a", 100), ("b", 90)])
    c.start()
    settled(c, "a")
    t0 = c.now
    c.link("a", False)
    assert c.node("a").state == State.FAULT
    c.run_until_true(lambda: c.masters() == ["b"], timeout=10)
    assert c.overlaps() == []  # a stopped at once; b waited for its down timer
    c.link("a", True)
    settled(c, "a", timeout=60)
    assert c.overlaps() == []
    assert starts(c, "b", t0)


# --------------------------------------------------------------------------- start-up
def test_restart_of_hasup_adopts_the_running_service() -> None:
    c = NodeCluster([("a", 100), ("b", 90)])
    c.start()
    settled(c, "a")
    c.advance(1.0)
    before = len(c.intervals("a"))
    t0 = c.now
    c.crash_supervisor("a")
    c.advance(0.5)
    c.restart("a")
    settled(c, "a")
    c.advance(10)
    assert event_times(c, "start", "a", t0) == []
    assert event_times(c, "stop", "a", t0) == []
    assert starts(c, "b") == []
    assert len(c.intervals("a")) == before  # one uninterrupted interval
    resumed = [e for e in c.notifications("a") if e.time >= t0 and e.state == State.MASTER]
    assert "resumed" in resumed[0].detail
    assert c.node("a").term == 1


def test_restart_after_takeover_stops_the_stale_copy() -> None:
    """hasup crashed for longer than the down interval: the peer took over; on restart the
    stale copy is stopped, not resumed."""
    c = NodeCluster([("a", 100), ("b", 90)])
    c.start()
    settled(c, "a")
    c.crash_supervisor("a")
    c.run_until_true(lambda: c.masters() == ["b"], timeout=10)
    t0 = c.now
    c.restart("a")
    c.run_until_true(lambda: c.active_nodes() == ["b"] or c.active_nodes() == ["a"], timeout=10)
    overlaps = c.overlaps(since=t0)
    assert all(hi - t0 <= 1.0 + c.stop_time + 0.01 for _, hi, _, _ in overlaps)
    settled(c, "a", timeout=30)


# --------------------------------------------------------------------------- split brain
def test_split_brain_newer_term_yields_and_survivor_renotifies() -> None:
    c = NodeCluster([("a", 100), ("b", 90)])
    c.start()
    settled(c, "a")
    c.partition(["a"], ["b"])
    c.run_until_true(lambda: sorted(c.masters()) == ["a", "b"], timeout=10)
    assert c.node("b").term > c.node("a").term
    c.advance(5)
    healed = c.now
    c.heal()
    c.run_until_true(lambda: len(c.masters()) == 1 and len(c.active_nodes()) == 1, timeout=10)
    assert c.masters() == ["a"]  # b's term is newer: b yields
    assert c.now - healed <= 2 * down(90, 1.0)
    renotify = [e for e in c.notifications("a") if e.time >= healed and e.state == e.previous == State.MASTER]
    assert len(renotify) == 1
    assert c.overlaps(since=c.now) == []


def test_split_brain_newer_term_yields_even_with_higher_priority() -> None:
    """Loss never forces a failback: the older tenure (b) keeps the service."""
    c = NodeCluster([("a", 100), ("b", 90)], preempt=False)
    c.start()
    settled(c, "a")
    c.kill("a")
    settled(c, "b")
    c.restart("a")
    c.advance(5)  # a joins as BACKUP (preempt = false) and learns b's term
    assert c.states() == {"a": State.BACKUP, "b": State.MASTER}
    c.partition(["a"], ["b"])
    c.run_until_true(lambda: sorted(c.masters()) == ["a", "b"], timeout=10)
    assert c.node("a").term > c.node("b").term
    c.advance(3)
    c.heal()
    c.run_until_true(lambda: len(c.masters()) == 1 and len(c.active_nodes()) == 1, timeout=10)
    assert c.masters() == ["b"]
    c.advance(30)
    assert c.masters() == ["b"]


def test_one_way_loss_resolves_with_an_alarm() -> None:
    c = NodeCluster([("a", 100), ("b", 90)])
    c.start()
    settled(c, "a")
    t0 = c.now
    c.block("a", "b")  # b stops hearing a; a still hears b
    c.run_until_true(lambda: c.masters() == ["b"] and c.active_nodes() == ["b"], timeout=20)
    alarms = [e for e in c.events if e.kind == "alarm" and e.node == "a" and e.time >= t0]
    assert any(e.detail.startswith("one_way_loss") for e in alarms)
    c.advance(30)
    assert c.masters() == ["b"]
    overlaps = c.overlaps(since=t0)
    assert overlaps
    b_start = starts(c, "b", t0)[0]
    assert max(hi for _, hi, _, _ in overlaps) - b_start <= 3 * 1.0 + c.stop_time + 0.01


# --------------------------------------------------------------------------- exit
def test_shutdown_hands_over_after_the_stop() -> None:
    c = NodeCluster([("a", 100), ("b", 90)], delay=0.002)
    c.start()
    settled(c, "a")
    t0 = c.now
    c.shutdown("a")
    c.run_until_true(lambda: c.masters() == ["b"], timeout=10)
    (stopped,) = event_times(c, "stopped", "a", t0)
    (start,) = starts(c, "b", t0)
    assert start == pytest.approx(stopped + 0.002)
    assert c.node("a").finished
    assert c.overlaps() == []


def test_leave_running_hold_stretches_the_peer_down_timer() -> None:
    c = NodeCluster([("a", 100), ("b", 90)], delay=TINY)
    c.start()
    settled(c, "a")
    c.shutdown("a", leave_running=True, hold=10.0)
    assert c.node("a").state == State.STOPPING
    c.advance(0.3)
    c.crash_supervisor("a")  # hasup exits; the service keeps running
    t0 = c.now
    (peer,) = c.node("b").peers()
    last = peer.last_rx
    assert last is not None
    c.run_until_true(lambda: bool(starts(c, "b", t0)), timeout=20)
    assert starts(c, "b", t0)[0] - last == pytest.approx(10.0, abs=1e-3)


def test_leave_running_upgrade_does_not_blip() -> None:
    c = NodeCluster([("a", 100), ("b", 90)])
    c.start()
    settled(c, "a")
    t0 = c.now
    c.shutdown("a", leave_running=True, hold=10.0)
    c.advance(0.2)
    c.crash_supervisor("a")
    c.advance(6.0)  # longer than the normal down interval
    c.restart("a")
    settled(c, "a")
    c.advance(10)
    assert starts(c, "b") == []
    assert event_times(c, "start", "a", t0) == event_times(c, "stop", "a", t0) == []


# --------------------------------------------------------------------------- quorum, switchover
def test_quorum_isolated_holder_stops() -> None:
    c = NodeCluster([("a", 100), ("b", 90), ("c", 80)])
    c.start()
    settled(c, "a")
    t0 = c.now
    c.partition(["a"], ["b", "c"])
    c.run_until_true(lambda: c.node("a").state == State.FAULT, timeout=10)
    fault = next(e for e in c.notifications("a") if e.time >= t0 and e.state == State.FAULT)
    assert "majority" in fault.detail
    # a stops 2 adverts after it lost its majority (its down timers for b and c).
    assert fault.time - t0 <= down(100, 1.0) + 2.0 + 1.0
    c.run_until_true(lambda: c.masters() == ["b"], timeout=10)
    c.advance(60)
    assert c.masters() == ["b"]
    assert starts(c, "a", fault.time) == []
    c.heal()
    settled(c, "a", timeout=60)


def test_switchover() -> None:
    c = NodeCluster([("a", 100), ("b", 90), ("c", 80)])
    c.start()
    settled(c, "a")
    c.advance(1.0)
    t0 = c.now
    with pytest.raises(ValueError, match="not a live, eligible BACKUP"):
        c.switchover("a", "z")
    assert c.switchover("a") == "b"  # the best live BACKUP
    settled(c, "b")
    (a_stopped,) = event_times(c, "stopped", "a", t0)
    assert starts(c, "b", t0)[0] > a_stopped
    c.advance(30)
    assert c.masters() == ["b"]  # a is in maintenance, so it does not preempt back
    assert c.node("a").maintenance
    assert c.overlaps() == []
    assert starts(c, "c") == []
    with pytest.raises(ValueError, match="only the MASTER"):
        c.switchover("a")


def test_a_failed_copy_reported_while_the_claim_waits_for_acks_is_stopped_not_a_fault() -> None:
    """Failback after a crash: the claimer's backend still reports its crashed copy as
    FAILED while the claim waits for the peer's acknowledgement (no start in flight).
    That copy is stopped, the claim goes on and the node starts: no FAULT, no overlap
    (found by examples/embedding.py, whose collector reports FAILED until restarted)."""
    c = NodeCluster([("a", 100), ("b", 90)], delay=0.01, fault_holddown=2.0)
    c.start()
    settled(c, "a")
    t0 = c.now
    c.fail_service("a")
    settled(c, "b")
    deadline = c.now + 10.0
    while c.node("a").state is not State.CLAIMING:
        assert c.now < deadline, "a never claimed the service back"
        c.advance(0.001)
    c.deliver("a", c.incarnation("a") or 0, lambda n, now: n.service_status(ServiceStatus.FAILED, now))
    settled(c, "a")
    assert notified(c, "a", State.FAULT, t0) == [pytest.approx(t0)]  # the crash only
    assert c.node("a").state is State.MASTER
    assert c.overlaps() == []
