"""Virtual IPs in the core, on virtual time: when ``AddVips``/``RemoveVips``/``AnnounceVips``
are emitted relative to the service, through ``NodeCluster`` and a bare ``Node``."""

from __future__ import annotations

import itertools

from hasup.protocol import (
    AddVips,
    AnnounceVips,
    CoreConfig,
    KeyRing,
    Node,
    PeerSpec,
    RemoveVips,
    ServiceStatus,
    StartService,
    State,
    StopService,
)
from hasup.testing import NodeCluster

ADVERT = 0.1


def down(priority: int, advert: float = ADVERT) -> float:
    return 3 * advert + (256 - priority) * advert / 256


def cluster(**kw: object) -> NodeCluster:
    c = NodeCluster([("a", 100), ("b", 90)], advert_interval=ADVERT, vips=True, **kw)  # type: ignore[arg-type]
    c.start()
    c.run_until_true(lambda: c.masters() == ["a"] and c.states()["b"] == State.BACKUP, timeout=10)
    return c


def vip_log(c: NodeCluster, name: str | None = None) -> list[tuple[float, str, object]]:
    return [
        (t, n, a)
        for t, n, a in c.action_log
        if isinstance(a, AddVips | RemoveVips | AnnounceVips | StartService | StopService) and (name is None or n == name)
    ]


def held_intervals(c: NodeCluster, name: str, until: float, killed: float | None = None) -> list[tuple[float, float]]:
    """When ``name`` held the VIPs; a killed node's addresses go with it (``killed``)."""
    out: list[tuple[float, float]] = []
    since: float | None = None
    for t, n, a in c.action_log:
        if n != name:
            continue
        if killed is not None and since is not None and since <= killed <= t:
            out.append((since, killed))
            since = None
        if isinstance(a, AddVips) and since is None:
            since = t
        elif isinstance(a, RemoveVips) and since is not None:
            out.append((since, t))
            since = None
    if since is not None:
        out.append((since, until if killed is None or killed < since else min(until, killed)))
    return out


def overlap(c: NodeCluster, until: float, killed: dict[str, float] | None = None, since: float = 0.0) -> float:
    killed = killed or {}
    total = 0.0
    pairs = itertools.product(
        held_intervals(c, "a", until, killed.get("a")), held_intervals(c, "b", until, killed.get("b"))
    )
    for (a0, a1), (b0, b1) in pairs:
        total += max(0.0, min(a1, b1) - max(a0, b0, since))
    return total


def started_at(c: NodeCluster, name: str) -> list[float]:
    return [e.time for e in c.events if e.kind == "started" and e.node == name]


def stop_order_ok(c: NodeCluster) -> None:
    """Every StopService of a node that held the VIPs comes right after a RemoveVips."""
    for name in ("a", "b"):
        log = vip_log(c, name)
        held = False
        for _, _, action in log:
            if isinstance(action, AddVips):
                held = True
            elif isinstance(action, RemoveVips):
                held = False
            elif isinstance(action, StopService):
                assert not held, f"{name}: StopService while the VIPs are still held: {log}"


def test_boot_removes_a_left_over_copy_then_adds_after_the_confirmed_start() -> None:
    c = cluster()
    a_log = vip_log(c, "a")
    assert isinstance(a_log[0][2], RemoveVips) and "start-up" in a_log[0][2].reason
    b_log = vip_log(c, "b")
    assert [type(x[2]) for x in b_log] == [RemoveVips]  # the backup only cleans up
    (add_t,) = [t for t, _, x in a_log if isinstance(x, AddVips)]
    (started,) = started_at(c, "a")
    assert add_t == started  # at the confirmed start, not at the StartService
    assert next(t for t, _, x in a_log if isinstance(x, StartService)) < add_t


def test_node_loss_moves_the_vips_without_overlap() -> None:
    c = cluster()
    t_kill = c.now
    c.kill("a")
    c.run_until_true(lambda: c.masters() == ["b"], timeout=10)
    c.advance(1.0)
    add_b = [t for t, _, x in vip_log(c, "b") if isinstance(x, AddVips)]
    assert len(add_b) == 1
    assert add_b[0] - t_kill <= down(90) + c.start_time + 2 * c.delay
    # a dead node's addresses vanish with it (its namespace/machine): only the live view counts
    assert held_intervals(c, "b", c.now)[0][0] == add_b[0]


def test_failback_removes_before_stop_and_never_overlaps() -> None:
    c = cluster()
    t_kill = c.now
    c.kill("a")
    c.run_until_true(lambda: c.masters() == ["b"], timeout=10)
    c.advance(1.0)
    t_back = c.now
    c.restart("a")
    c.run_until_true(lambda: c.masters() == ["a"] and c.states()["b"] == State.BACKUP, timeout=30)
    c.advance(1.0)
    stop_order_ok(c)
    assert overlap(c, c.now, {"a": t_kill}) == 0.0
    a_adds = [t for t, _, x in vip_log(c, "a") if isinstance(x, AddVips) and t >= t_back]
    b_removes = [t for t, _, x in vip_log(c, "b") if isinstance(x, RemoveVips) and t >= t_back]
    assert a_adds and b_removes and b_removes[0] < a_adds[0]


def test_service_failure_failback_and_switchover_remove_before_stop() -> None:
    c = cluster()
    c.fail_service("a")
    c.run_until_true(lambda: c.masters() == ["b"], timeout=10)
    c.run_until_true(lambda: c.masters() == ["a"] and c.states()["b"] == State.BACKUP, timeout=30)  # failback
    c.switchover("a", "b")
    c.run_until_true(lambda: c.masters() == ["b"], timeout=10)
    c.advance(0.5)
    assert [n for n in ("a", "b") if held_intervals(c, n, c.now)[-1][1] == c.now] == ["b"]
    stop_order_ok(c)
    assert overlap(c, c.now) == 0.0


def test_fault_removes_at_once() -> None:
    c = cluster()
    t = c.now
    c.link("a", False)
    removed = [x for x in vip_log(c, "a") if isinstance(x[2], RemoveVips) and x[0] >= t]
    assert removed and removed[0][0] == t  # the same instant as the FAULT
    assert c.states()["a"] == State.FAULT


def test_split_brain_resolved_announces_again() -> None:
    c = cluster()
    c.partition(["a"], ["b"])
    c.run_until_true(lambda: sorted(c.masters()) == ["a", "b"], timeout=10)
    c.advance(0.5)
    t_heal = c.now
    c.heal()
    c.run_until_true(lambda: len(c.masters()) == 1 and c.states()["b"] == State.BACKUP, timeout=10)
    c.advance(1.0)
    stop_order_ok(c)
    (winner,) = c.masters()
    announced = [x for x in vip_log(c, winner) if isinstance(x[2], AnnounceVips) and x[0] >= t_heal]
    assert announced, vip_log(c, winner)
    # after the heal the loser gives them up as soon as it hears the winner (one advert)
    assert overlap(c, c.now, since=t_heal) <= ADVERT + 2 * c.delay


def test_restart_of_hasup_on_the_holder_keeps_the_vips() -> None:
    c = cluster()
    t = c.now
    c.crash_supervisor("a")
    c.restart("a")
    c.run_until_true(lambda: c.masters() == ["a"], timeout=10)
    c.advance(1.0)
    assert [type(x[2]) for x in vip_log(c, "a") if x[0] >= t and isinstance(x[2], RemoveVips)] == []


def test_leave_running_shutdown_keeps_the_vips() -> None:
    c = cluster()
    t = c.now
    c.shutdown("a", leave_running=True, hold=5.0)
    c.advance(0.5)
    assert [x for x in vip_log(c, "a") if x[0] >= t and isinstance(x[2], RemoveVips)] == []


def test_a_vip_that_cannot_be_added_faults_the_node() -> None:
    config = CoreConfig(
        name="a",
        group=1,
        priority=100,
        peers=(PeerSpec(("10.0.0.2", 5405), "b"),),
        keys=KeyRing.insecure(),
        advert_interval=ADVERT,
        vips=True,
    )
    node = Node(config, boot_epoch=1, now=0.0)
    node.service_status(ServiceStatus.STOPPED, 0.0)
    now = 0.0
    actions: list[object] = []
    start: StartService | None = None
    while now < 5 and start is None:
        now += 0.05
        node.handle_timer(now)
        while (action := node.next_action()) is not None:
            actions.append(action)
            if isinstance(action, StartService):
                start = action
    assert start is not None
    node.action_result(start, True, now)
    add = [a for a in iter(node.next_action, None) if isinstance(a, AddVips)]
    assert len(add) == 1 and node.state == State.MASTER
    node.action_result(add[0], False, now, "no such device")
    after = list(iter(node.next_action, None))
    assert node.state == State.FAULT
    kinds = [type(a) for a in after if isinstance(a, RemoveVips | StopService)]
    assert kinds == [RemoveVips, StopService]
