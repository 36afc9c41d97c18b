"""Leadership (``[coordinator]``) and data sync (``[[sync]]``) on virtual time.

``NodeCluster`` routes the cores' ``Campaign``/``Resign`` actions to a
``FakeCoordinator`` and their ``SyncRole``/``PullData`` actions to a ``FakeSyncEngine``;
the expected timings below come from the cores' and the fakes' settings (master-down
interval, ``coordinator_timeout``, ``ttl``/``margin``/``latency``, ``pull_time``, the
takeover backoff), never from literal numbers.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from hasup.protocol import (
    Action,
    Campaign,
    PullData,
    Resign,
    StartService,
    State,
    StopService,
    SyncRole,
    down_interval,
)
from hasup.sync.snapshot import Generation
from hasup.testing import ClusterEvent, FakeCoordinator, FakeSyncEngine, NodeCluster

from .test_properties import COMMON, FAST, _pinned  # the CI fixed-seed conventions

EPS = 1e-9


def at(t: float) -> object:
    """An exact virtual time (sums of float settings: compare up to rounding)."""
    return pytest.approx(t, abs=EPS)


def one(c: NodeCluster, kind: str, name: str, after: float = 0.0) -> ClusterEvent:
    event = c.first(kind, name, after)
    assert event is not None, f"no {kind!r} event of {name} after t={after}: {c.states()}"
    return event


def became(c: NodeCluster, name: str, state: State, after: float = 0.0) -> float:
    times = [e.time for e in c.notifications(name) if e.state == state and e.previous != state and e.time >= after]
    assert times, f"{name} never became {state.name} after t={after}"
    return times[0]


def grace(c: NodeCluster, name: str) -> float:
    """The core's vacancy stagger step: master-down interval + coordinator timeout."""
    node = c.node(name)
    return node.master_down_interval() + node.config.coordinator_timeout


def sync_and_start(c: NodeCluster, name: str, after: float = 0.0) -> list[Action]:
    return [a for _, a in c.actions_of(name, SyncRole, StartService, after=after)]


def elected(c: NodeCluster, name: str, timeout: float = 30.0) -> float:
    return c.run_until_true(
        lambda: (
            c.masters() == [name]
            and all(s in (State.BACKUP, State.MASTER) for s in c.states().values() if s is not None)
        ),
        timeout=timeout,
    )


def steady(c: NodeCluster, name: str) -> float:
    """``name`` is MASTER and every peer has heard it for one advert."""
    elected(c, name)
    c.advance(c.sims[name].config.advert_interval)
    return c.now


# =========================================================================== coordinator
def test_the_grant_makes_the_best_node_claim_and_start() -> None:
    co = FakeCoordinator()
    c = NodeCluster([("a", 200), ("b", 100)], coordinator=co)
    assert c.sims["a"].config.external_leader
    assert c.sims["a"].config.coordinator_timeout == co.request_timeout
    c.start()
    listen = c.node("a").master_down_interval()
    c.run_until_true(lambda: c.masters() == ["a"], timeout=2 * listen)

    campaign = one(c, "campaign", "a")
    assert campaign.time == at(listen)  # right after the start-up listen
    assert campaign.detail == "best-ranked candidate"
    granted = one(c, "granted", "a")
    assert granted.time == campaign.time  # the key was free
    assert co.tenures[0].token == 1
    claimed = became(c, "a", State.CLAIMING)
    assert claimed == at(granted.time + co.latency)
    ((t_start, start),) = c.actions_of("a", StartService)
    assert t_start == claimed
    assert isinstance(start, StartService) and start.term == co.token == c.node("a").term
    assert became(c, "a", State.MASTER) == at(claimed + c.start_time)
    # b is a standby with a campaign waiting for the key; it never started anything.
    c.advance(c.sims["b"].config.advert_interval)
    assert co.leader == "a" and co.campaigners == ["b"]
    assert c.actions_of("b", StartService) == []
    assert c.intervals("b") == []


def test_failback_old_holder_stops_and_resigns_before_the_new_one_starts() -> None:
    co = FakeCoordinator()
    c = NodeCluster([("a", 200), ("b", 100)], coordinator=co)
    assert co.latency > c.delay  # the grant lands after the old holder's last heartbeat
    c.start(["b"])
    elected(c, "b")
    assert co.leader == "b"
    back = c.now
    c.start(["a"])
    elected(c, "a")

    asked = became(c, "b", State.RELEASING, back)
    (t_stop, _), *_ = c.actions_of("b", StopService, after=back)
    assert t_stop == asked
    stopped = one(c, "stopped", "b", back).time
    resign = one(c, "resign", "b", back)
    assert resign.detail == "held: service stopped"
    assert resign.time == stopped == at(t_stop + c.stop_time)  # only once the stop is confirmed
    assert one(c, "lease-ended", "b", back).time == resign.time
    assert one(c, "granted", "a", back).time == resign.time  # a's campaign was waiting
    start = one(c, "start", "a", back).time
    assert start == at(resign.time + co.latency)
    assert c.intervals("b")[-1][1] == stopped <= start == c.intervals("a")[0][0]
    assert c.overlaps() == []
    assert [t.name for t in co.tenures] == ["b", "a"]
    assert co.tenures[0].ended_at == resign.time and co.tenures[0].end_reason == "resigned"
    assert c.node("a").term == co.tenures[1].token > co.tenures[0].token


def test_vacant_lease_campaigns_are_staggered_by_rank() -> None:
    """The two best nodes cannot reach the coordinator: each lower-ranked node campaigns
    one stagger step (master-down interval + coordinator timeout) later, the lowest wins."""
    co = FakeCoordinator()
    c = NodeCluster([("a", 200), ("b", 150), ("c", 100)], coordinator=co)
    co.cut("a")
    co.cut("b")
    c.start()
    vacant_since = c.now  # the cores assume a vacant key from their start
    step_b, step_c = grace(c, "b"), grace(c, "c")
    c.run_until_true(lambda: c.masters() == ["c"], timeout=2 * step_c + c.start_time + 1)

    a, b, low = one(c, "campaign", "a"), one(c, "campaign", "b"), one(c, "campaign", "c")
    assert a.time == at(c.node("a").master_down_interval()) and a.detail == "best-ranked candidate"
    assert b.time == at(vacant_since + 1 * step_b) and b.detail == "leader vacant"
    assert low.time == at(vacant_since + 2 * step_c) and low.detail == "leader vacant"
    assert a.time < b.time < low.time
    assert co.campaigners == ["a", "b"]  # still waiting: they cannot reach it
    assert one(c, "granted", "c").time == low.time
    assert one(c, "start", "c").time == at(low.time + co.latency)
    assert c.overlaps() == []


def test_graceful_shutdown_resigns_at_once_and_the_peer_takes_over() -> None:
    co = FakeCoordinator()
    c = NodeCluster([("a", 200), ("b", 100)], coordinator=co)
    c.start()
    steady(c, "a")
    down = c.now
    c.shutdown("a")
    c.run_until_true(lambda: c.masters() == ["b"], timeout=co.ttl)

    stopped = one(c, "stopped", "a", down).time
    assert stopped == at(down + c.stop_time)
    resign = one(c, "resign", "a", down)
    assert (resign.time, resign.detail) == (stopped, "held: service stopped")
    assert co.tenures[0].ended_at == resign.time  # released at once, not at lease expiry
    start = one(c, "start", "b", down).time
    assert start == at(down + c.stop_time + co.latency)
    assert became(c, "b", State.MASTER, down) == at(start + c.start_time)
    assert start - down < co.ttl - co.margin  # far sooner than a lease expiry
    assert c.node("a").finished and c.overlaps() == []


def test_killed_leader_blocks_the_key_until_its_lease_expires() -> None:
    co = FakeCoordinator()
    c = NodeCluster([("a", 200), ("b", 100)], coordinator=co)
    c.start()
    steady(c, "a")
    killed = c.now
    c.kill("a")
    c.run_until_true(lambda: c.masters() == ["b"], timeout=co.ttl + 1)

    # b's standby campaign (in flight since it became BACKUP) waited for the key.
    (standby,) = c.times("campaign", "b")
    assert standby < killed
    assert one(c, "lease-ended", "a", killed).time == at(killed + co.ttl)
    assert one(c, "granted", "b", killed).time == at(killed + co.ttl)
    assert one(c, "start", "b", killed).time == at(killed + co.ttl + co.latency)
    assert c.overlaps() == []


def test_leader_cut_from_the_coordinator_steps_down_before_its_lease_expires() -> None:
    """Heartbeats still flow: the cut-off leader stops ``margin`` before the expiry; the
    lower-ranked peer takes over through the vacancy stagger (the better node is cut)."""
    co = FakeCoordinator()
    c = NodeCluster([("a", 200), ("b", 100)], coordinator=co)
    c.start()
    steady(c, "a")
    cut = c.now
    co.cut("a")
    c.run_until_true(lambda: c.masters() == ["b"], timeout=co.ttl + 2 * grace(c, "b"))

    lost = one(c, "leadership-lost", "a", cut).time
    assert lost == at(cut + co.ttl - co.margin)
    assert became(c, "a", State.RELEASING, cut) == lost
    stopped = one(c, "stopped", "a", cut).time
    assert stopped == at(lost + c.stop_time)
    assert stopped < cut + co.ttl  # stopped within the margin
    expired = one(c, "lease-ended", "a", cut)
    assert (expired.time, expired.detail) == (at(cut + co.ttl), "lease expired")
    # b learns of the vacancy one latency later; a (BACKUP again, cut) still outranks it.
    campaign = one(c, "campaign", "b", expired.time)
    assert (campaign.time, campaign.detail) == (at(expired.time + co.latency + grace(c, "b")), "leader vacant")
    assert one(c, "start", "b", cut).time == at(campaign.time + co.latency)
    assert c.overlaps() == []


@pytest.mark.xfail(
    strict=True,
    reason="core: a better-ranked node cut off from the coordinator still requests a failback "
    "(TAKEOVER), so the fallback leader stops and resigns and nobody can take the key",
)
def test_fallback_leader_keeps_the_service_while_the_better_node_is_cut() -> None:
    co = FakeCoordinator()
    c = NodeCluster([("a", 200), ("b", 100)], coordinator=co)
    c.start()
    steady(c, "a")
    co.cut("a")
    took_over = c.run_until_true(lambda: c.masters() == ["b"], timeout=co.ttl + 2 * grace(c, "b"))
    c.advance(3 * grace(c, "b"))
    assert c.masters() == ["b"], f"b held the service for {c.intervals('b')} after t={took_over}"


def test_a_grant_after_the_campaign_was_withdrawn_is_given_back() -> None:
    """b campaigns alone; a better node boots while the grant is on its way: b withdraws
    (Resign(False)), and gives the grant back the moment it lands (Resign(True))."""
    co = FakeCoordinator(latency=0.5)
    c = NodeCluster([("a", 200), ("b", 100)], coordinator=co)
    c.start(["b"])
    listen = c.node("b").master_down_interval()
    assert listen + co.latency < grace(c, "b")  # b's vacancy stagger is not due yet
    c.run_until(listen + co.latency / 2)
    granted = one(c, "granted", "b")
    assert granted.time == at(listen)
    c.start(["a"])  # a's first heartbeat reaches b one delay later
    c.run_until(granted.time + co.latency)

    withdrawn, given_back = (e for e in c.events if e.kind == "resign" and e.node == "b")
    assert (withdrawn.time, withdrawn.detail) == (
        at(listen + co.latency / 2 + c.delay),
        "withdrawn: no longer the candidate",
    )
    assert (given_back.time, given_back.detail) == (
        at(granted.time + co.latency),
        "held: granted after the campaign was withdrawn",
    )
    assert co.tenures[0].ended_at == given_back.time and co.tenures[0].end_reason == "resigned"
    assert c.actions_of("b", StartService) == []


# =========================================================================== data sync
def test_standby_follows_the_holder_which_serves() -> None:
    sync = FakeSyncEngine()
    c = NodeCluster([("a", 200), ("b", 100)], sync=sync)
    assert c.sims["b"].config.takeover_needs_sync
    c.start()
    elected(c, "a")
    assert sync.role("a") == SyncRole("serve")
    assert sync.role("b") == SyncRole("follow", "a", c.sims["a"].address[0])
    sync.write("a", 3)
    assert sync.generation("b") == sync.generation("a") == 3
    c.advance(c.sims["a"].config.advert_interval)  # one heartbeat carries it
    wire = FakeSyncEngine.wire(3)
    assert wire == Generation(3).to_wire()
    assert c.node("a").peer_sync_generations(c.now) == [wire]  # the holder sees its standby
    assert c.node("b").peer_sync_generations(c.now) == [wire]  # the standby sees its holder
    assert sync.violations == []


def test_node_about_to_start_goes_idle_before_start_service() -> None:
    sync = FakeSyncEngine()
    c = NodeCluster([("a", 200), ("b", 100)], sync=sync)
    c.start()
    steady(c, "a")
    assert sync.role("b").role == "follow"
    killed = c.now
    c.kill("a")
    elected(c, "b")

    start = one(c, "start", "b", killed)
    # One round: stop following (complete before the next action), start, then serve.
    assert c.actions_of("b", SyncRole, StartService, after=killed) == [
        (start.time, SyncRole("idle")),
        (start.time, StartService(c.node("b").term, start.detail)),
        (start.time, SyncRole("serve")),
    ]
    assert [(n, r.role) for t, n, r in sync.role_changes if t >= killed] == [
        ("a", "idle"),  # its engines died with it
        ("b", "idle"),
        ("b", "serve"),
    ]
    assert sync.violations == []


def test_preempting_node_pulls_first_and_starts_only_after_the_result() -> None:
    sync = FakeSyncEngine(pull_time=0.3)
    c = NodeCluster([("a", 200), ("b", 100)], sync=sync)
    c.start(["b"])
    elected(c, "b")
    sync.write("b", 5)  # edits a failback must not lose
    back = c.now
    c.start(["a"])
    c.run_until_true(lambda: bool(c.actions_of("a", PullData)), timeout=c.node("a").master_down_interval())
    ((t_pull, pull),) = c.actions_of("a", PullData)
    assert pull == PullData("b", c.sims["b"].address[0])
    c.run_until(t_pull + sync.pull_time - EPS)
    assert c.node("a").needs_sync and c.masters() == ["b"] and c.node("b").state == State.MASTER
    elected(c, "a")

    done = one(c, "pulled", "a", back).time
    assert done == at(t_pull + sync.pull_time)
    assert sync.pulls[-1].ok and sync.pulls[-1].generation == 5 == sync.generation("a")
    # The takeover request goes out with the result; b hears it one delay later.
    assert became(c, "b", State.RELEASING, back) == at(done + c.delay)
    assert one(c, "start", "a", back).time > done
    assert c.overlaps() == [] and sync.violations == []


def test_failed_pull_backs_off_and_does_not_take_over() -> None:
    sync = FakeSyncEngine(pull_time=0.3)
    c = NodeCluster([("a", 200), ("b", 100)], sync=sync)
    c.start(["b"])
    elected(c, "b")
    sync.fail_pulls("a", times=2)
    back = c.now
    c.start(["a"])
    mdi = c.node("a").master_down_interval()
    first_backoff = min(max(2 * 0.0, mdi), 60.0)  # the core's takeover backoff, from 0
    second_backoff = min(max(2 * first_backoff, mdi), 60.0)
    elected(c, "a", timeout=first_backoff + second_backoff + 10)

    pulls = [t for t, _ in c.actions_of("a", PullData, after=back)]
    failed = c.times("pull-failed", "a", back)
    assert len(pulls) == 3 and len(failed) == 2
    assert failed[0] == at(pulls[0] + sync.pull_time)
    assert pulls[1] == at(failed[0] + first_backoff)
    assert failed[1] == at(pulls[1] + sync.pull_time)
    assert pulls[2] == at(failed[1] + second_backoff)
    pulled = one(c, "pulled", "a", back).time
    assert pulled == at(pulls[2] + sync.pull_time)
    # Until the good pull, b kept the service and a asked for nothing.
    assert [e for e in c.notifications("b") if back < e.time <= pulled] == []
    assert became(c, "b", State.RELEASING, back) == at(pulled + c.delay)
    assert one(c, "start", "a", back).time > pulled
    assert c.overlaps() == [] and sync.violations == []


def test_failback_with_coordinator_and_sync() -> None:
    """Pull, then the failback handshake, then stop, resign and grant: in this order."""
    co, sync = FakeCoordinator(), FakeSyncEngine(pull_time=0.3)
    c = NodeCluster([("a", 200), ("b", 100)], coordinator=co, sync=sync)
    c.start(["b"])
    elected(c, "b")
    sync.write("b", 2)
    back = c.now
    c.start(["a"])
    elected(c, "a")

    t_pull = c.actions_of("a", PullData, after=back)[0][0]
    pulled = one(c, "pulled", "a", back).time
    releasing = became(c, "b", State.RELEASING, back)
    stopped = one(c, "stopped", "b", back).time
    resign = one(c, "resign", "b", back).time
    granted = one(c, "granted", "a", back).time
    start = one(c, "start", "a", back).time
    assert pulled == at(t_pull + sync.pull_time)
    assert releasing == at(pulled + c.delay)
    assert stopped == at(releasing + c.stop_time)
    assert stopped == resign == granted
    assert start == at(granted + co.latency)
    roles = sync_and_start(c, "a", back)
    i = roles.index(next(a for a in roles if isinstance(a, StartService)))
    assert roles[i - 1] == SyncRole("idle") and SyncRole("follow", "b", c.sims["b"].address[0]) in roles[:i]
    assert sync.generation("a") == 2
    assert c.overlaps() == [] and sync.violations == []


def test_actions_without_fakes_are_only_logged() -> None:
    c = NodeCluster([("a", 200), ("b", 100)], external_leader=True, takeover_needs_sync=True)
    c.start()
    c.advance(10)
    assert c.first("campaign", "a") is not None
    assert any(isinstance(a, Campaign) for _, a in c.actions_of("a"))
    assert c.masters() == [] and c.active_nodes() == []  # nobody grants: nobody serves
    assert not any(isinstance(a, Resign) for _, a in c.actions_of("a"))


def test_fakes_serve_one_cluster() -> None:
    co, sync = FakeCoordinator(), FakeSyncEngine()
    NodeCluster([("a", 1)], coordinator=co, sync=sync)
    with pytest.raises(RuntimeError):
        NodeCluster([("a", 1)], coordinator=co)
    with pytest.raises(RuntimeError):
        NodeCluster([("a", 1)], sync=sync)
    with pytest.raises(ValueError, match="margin"):
        FakeCoordinator(ttl=2.0, margin=2.0)
    ttl = 6.0
    default = FakeCoordinator(ttl=ttl)  # the EtcdCoordinator defaults
    assert default.request_timeout == min(1.0, ttl / 3)
    assert default.margin == max(default.request_timeout, ttl / 4)


# =========================================================================== property
# Random kills, restarts, graceful shutdowns, service failures, partitions between the
# nodes, cuts from the coordinator and (with sync) failing pulls, on virtual time. With a
# coordinator no exemption window is needed: a planned move stops, then resigns, then
# the next node is granted; a lost lease is given up ``margin`` before it can expire,
# which covers the stop (the documented condition: stop time < margin). So:
#
# * never two services active at the same virtual time, whatever the network does;
# * every StartService comes from the node holding the key then, with its token as term,
#   and is issued in CLAIMING;
# * nothing is synced into a running service (FakeSyncEngine.violations);
# * once everything is healed and every node is up, exactly one MASTER within the time
#   a stale lease, a start-up listen, the vacancy stagger, one stop, one pull and one
#   start take.

NAMES = ["a", "b", "c", "d"]


@attrs.frozen
class LeaseScenario:
    priorities: tuple[int, ...]
    advert: float
    ttl: float
    with_sync: bool
    seed: int
    steps: tuple[tuple[float, tuple[Any, ...]], ...]

    @property
    def names(self) -> list[str]:
        return NAMES[: len(self.priorities)]


def _lease_ops(n: int) -> st.SearchStrategy[tuple[Any, ...]]:
    node = st.integers(0, n - 1)
    return st.one_of(
        st.tuples(st.just("kill"), node),
        st.tuples(st.just("restart"), node),
        st.tuples(st.just("shutdown"), node),
        st.tuples(st.just("fail_service"), node),
        st.tuples(st.just("partition"), st.lists(st.booleans(), min_size=n, max_size=n)),
        st.tuples(st.just("block"), node, node),
        st.tuples(st.just("loss"), st.sampled_from([0.1, 0.3, 0.6])),
        st.tuples(st.just("cut"), node),
        st.tuples(st.just("cut"), node),
        st.tuples(st.just("restore"), node),
        st.tuples(st.just("fail_pulls"), node, st.integers(1, 3)),
        st.tuples(st.just("write"), node),
        st.tuples(st.just("heal")),
    )


@st.composite
def lease_scenarios(draw: st.DrawFn) -> LeaseScenario:
    n = draw(st.integers(2, 4))
    waits = st.one_of(st.sampled_from([0.0, 0.01, 0.5, 1.0, 3.0]), st.floats(0.0, 20.0))
    return LeaseScenario(
        priorities=tuple(draw(st.lists(st.integers(1, 254), min_size=n, max_size=n, unique=True))),
        advert=draw(st.sampled_from([1.0, 0.1])),
        ttl=draw(st.sampled_from([2.0, 5.0])),
        with_sync=draw(st.booleans()),
        seed=draw(st.integers(0, 2**16)),
        steps=tuple(draw(st.lists(st.tuples(waits, _lease_ops(n)), max_size=14))),
    )


class LeaseRunner:
    def __init__(self, sc: LeaseScenario) -> None:
        self.sc = sc
        self.co = FakeCoordinator(ttl=sc.ttl)
        self.sync = FakeSyncEngine(pull_time=2 * sc.advert) if sc.with_sync else None
        self.c = NodeCluster(
            list(zip(sc.names, sc.priorities, strict=True)),
            advert_interval=sc.advert,
            delay=0.001,
            jitter=0.0005,
            seed=sc.seed,
            coordinator=self.co,
            sync=self.sync,
            fault_holddown=2 * sc.advert,
        )
        c, co = self.c, self.co
        assert c.stop_time < co.margin  # docs/coordinator.md: the stop must fit in the margin
        worst = down_interval(1, sc.advert)
        self.settle = (
            co.ttl  # a stale lease (dead or cut holder) runs out
            + 2 * (worst + co.request_timeout)  # start-up listen, vacancy stagger
            + c.stop_time
            + (self.sync.pull_time if self.sync else 0.0)
            + c.start_time
            + 10 * co.latency
        )
        c.start()

    def apply(self, op: tuple[Any, ...]) -> None:
        c, co, sync, names = self.c, self.co, self.sync, self.sc.names
        kind = op[0]
        name = names[op[1]] if len(op) > 1 and isinstance(op[1], int) else ""
        if kind == "kill" and c.sims[name].up:
            c.kill(name)
        elif kind == "restart":
            self.restart(name)
        elif kind == "shutdown" and c.sims[name].up and c.node(name).state != State.STOPPING:
            c.shutdown(name)
        elif kind == "fail_service" and c.sims[name].up and c.sims[name].running:
            c.fail_service(name)
        elif kind == "partition":
            side = op[1]
            c.partition(
                [n for n, s in zip(names, side, strict=True) if s],
                [n for n, s in zip(names, side, strict=True) if not s],
            )
        elif kind == "block" and op[1] != op[2]:
            c.block(names[op[1]], names[op[2]])
        elif kind == "loss":
            c.loss = op[1]
        elif kind == "cut":
            co.cut(name)
        elif kind == "restore":
            co.restore(name)
        elif kind == "fail_pulls" and sync is not None:
            sync.fail_pulls(name, op[2])
        elif kind == "write" and sync is not None and c.sims[name].running:
            sync.write(name)
        elif kind == "heal":
            c.heal()  # also restores every cut from the coordinator
            c.loss = 0.0

    def restart(self, name: str) -> None:
        c = self.c
        sim = c.sims[name]
        if sim.up and sim.node is not None and sim.node.finished:
            c.kill(name)  # the process exits after its graceful shutdown
        if not sim.up:
            c.restart(name)

    def run(self) -> None:
        c = self.c
        for dt, op in self.sc.steps:
            c.advance(dt * self.sc.advert)
            self.apply(op)
        self.check()
        # Heal everything, boot every node, and wait for exactly one MASTER.
        self.apply(("heal",))
        if self.sync is not None:
            self.sync.heal_pulls()
        for name in self.sc.names:
            self.restart(name)
        healed = c.now
        busy = (State.CLAIMING, State.RELEASING)
        c.run_until_true(
            lambda: len(c.masters()) == 1 and not any(s in busy for s in c.states().values()),
            timeout=self.settle,
        )
        event(f"one MASTER within {min(int((c.now - healed) / self.settle * 4) + 1, 4)}/4 of the bound")
        self.check()

    def check(self) -> None:
        c, co = self.c, self.co
        assert c.overlaps() == [], f"two services at once: {c.overlaps()}"
        for t, name, action in c.action_log:
            if isinstance(action, StartService):
                tenure = co.tenure_at(t)
                assert tenure is not None and tenure.name == name, f"t={t:.4f}: {name} started without the key"
                assert action.term == tenure.token
        state: dict[str, State] = {}
        for e in c.events:
            if e.kind in ("boot", "restart"):
                state[e.node] = State.INIT
            elif e.kind == "notify" and e.state is not None:
                state[e.node] = e.state
            elif e.kind == "start":
                assert state[e.node] == State.CLAIMING, f"{e.node} started while {state[e.node].name}"
        if self.sync is not None:
            assert self.sync.violations == []


@_pinned
@settings(max_examples=FAST, **COMMON)
@given(lease_scenarios())
def test_coordinator_never_two_services(sc: LeaseScenario) -> None:
    event(f"{len(sc.priorities)} nodes" + (", sync" if sc.with_sync else ""))
    LeaseRunner(sc).run()


def test_vacancy_campaigner_keeps_campaigning_when_the_watch_names_it_before_the_grant() -> None:
    """etcd may deliver the watch event of a node's own new key before the answer to its
    request: a node campaigning through the vacancy stagger must not read "the key is
    taken" as a reason to withdraw when the key is its own."""
    co = FakeCoordinator(latency=0.5)
    c = NodeCluster([("a", 200), ("b", 100)], coordinator=co)
    co.cut("a")  # a outranks b but never reaches the coordinator: b campaigns on vacancy
    c.start()
    campaign = c.run_until_true(lambda: c.first("campaign", "b") is not None, timeout=4 * grace(c, "b"))
    assert one(c, "campaign", "b").detail == "leader vacant"
    c.run_until(campaign + co.latency / 2)
    incarnation = c.incarnation("b")
    assert incarnation is not None
    assert c.deliver("b", incarnation, lambda n, now: n.leader_change("b", now))  # the watch, early
    c.run_until(campaign + co.latency + c.delay)
    assert [e for e in c.events if e.kind == "resign" and e.node == "b"] == []
    assert one(c, "granted", "b").time == at(campaign)
    assert c.actions_of("b", StartService, after=campaign) != []
