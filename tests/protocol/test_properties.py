"""Property tests: random event sequences against the group invariants (ARCHITECTURE §2).

Each example is a cluster of 2-4 nodes with distinct priorities and a list of
``(wait, event)`` steps: kills and restarts, hasup crashes, service failures, probe
failures, loss, partitions, one-way blocks, link loss, heals. The runner replays it on
virtual time and checks:

* **single copy** - while the network is *clean* (no partition, block, loss, link down,
  and no hasup crashed beside a running service) never two services active at once,
  except in the resolution window after a disturbance ends: 2 master-down intervals
  plus one stop and one start (time to hear each other, resolve, and stop);
* **one MASTER after a heal** - a clean period that lasts that window ends with exactly
  one MASTER whenever some node could serve (up, not FAULT, and a majority up when
  quorum applies);
* **no start in FAULT** - every StartService is issued in CLAIMING;
* **notify once** - per node incarnation, Notify(state != previous) count equals the
  ``transitions`` counter, and the notifications chain (each ``previous`` is the last
  announced state).
"""

from __future__ import annotations

import os
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, event, given, seed, settings
from hypothesis import strategies as st

from hasup.protocol import ProbeSpec, State, down_interval
from hasup.testing import NodeCluster

NAMES = ["a", "b", "c", "d"]
PROBES = (ProbeSpec("svc", when="active", fall=1, rise=1), ProbeSpec("env", when="always", fall=1, rise=1))
FAST = int(os.environ.get("HASUP_PROPERTY_EXAMPLES", "150"))
SLOW = 2000


@attrs.frozen
class Scenario:
    priorities: tuple[int, ...]
    advert: float
    seed: int
    steps: tuple[tuple[float, tuple[Any, ...]], ...]

    @property
    def names(self) -> list[str]:
        return NAMES[: len(self.priorities)]


def _ops(n: int) -> st.SearchStrategy[tuple[Any, ...]]:
    node = st.integers(0, n - 1)
    return st.one_of(
        st.tuples(st.just("kill"), node),
        st.tuples(st.just("restart"), node),
        st.tuples(st.just("crash"), node),
        st.tuples(st.just("fail_service"), node),
        st.tuples(st.just("probe_svc"), node),
        st.tuples(st.just("probe_env"), node, st.booleans()),
        st.tuples(st.just("loss"), st.sampled_from([0.1, 0.3, 0.6])),
        st.tuples(st.just("partition"), st.lists(st.booleans(), min_size=n, max_size=n)),
        st.tuples(st.just("block"), node, node),
        st.tuples(st.just("link"), node, st.booleans()),
        st.tuples(st.just("heal")),
        st.tuples(st.just("heal")),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    n = draw(st.integers(2, 4))
    priorities = tuple(draw(st.lists(st.integers(1, 254), min_size=n, max_size=n, unique=True)))
    waits = st.one_of(st.sampled_from([0.0, 0.01, 0.5, 1.0, 2.0]), st.floats(0.0, 20.0))
    steps = draw(st.lists(st.tuples(waits, _ops(n)), max_size=14))
    return Scenario(
        priorities=priorities,
        advert=draw(st.sampled_from([1.0, 0.1])),
        seed=draw(st.integers(0, 2**16)),
        steps=tuple(steps),
    )


class Runner:
    """Replays a scenario, tracking when the network was clean, and checks invariants."""

    def __init__(self, sc: Scenario) -> None:
        self.sc = sc
        self.c = NodeCluster(
            list(zip(sc.names, sc.priorities, strict=True)),
            advert_interval=sc.advert,
            delay=0.001,
            jitter=0.0005,
            seed=sc.seed,
            probes=PROBES,
            fault_holddown=2 * sc.advert,
        )
        c = self.c
        worst = down_interval(1, sc.advert)
        #: time to hear each other, resolve a conflict and stop / then start
        self.settle = 2 * worst + c.start_time + c.stop_time + 0.01
        self.links_down: set[str] = set()
        self.crashed: set[str] = set()  # hasup crashed, service left as it was
        self.env_ok = dict.fromkeys(sc.names, True)
        self.dirty_windows: list[tuple[float, float]] = []  # [start, end + settle)
        self._dirty_since: float | None = None
        self.heal_checks = 0
        c.start()

    # ------------------------------------------------------------------ bookkeeping
    def clean(self) -> bool:
        c = self.c
        crashed_running = any(c.sims[n].running for n in self.crashed)
        return c.connected and not c.loss and not self.links_down and not crashed_running

    def _track(self) -> None:
        now = self.c.now
        if self.clean():
            if self._dirty_since is not None:
                self.dirty_windows.append((self._dirty_since, now + self.settle))
                self._dirty_since = None
        elif self._dirty_since is None:
            self._dirty_since = now

    def apply(self, op: tuple[Any, ...]) -> None:
        c, names = self.c, self.sc.names
        kind = op[0]
        if kind == "kill":
            name = names[op[1]]
            if c.sims[name].up or name in self.crashed:
                c.kill(name)  # power off: also ends a service left running by a crash
            self.crashed.discard(name)
        elif kind == "restart":
            name = names[op[1]]
            if not c.sims[name].up:
                c.restart(name)
                self.crashed.discard(name)
                self.env_ok[name] = True
                if name in self.links_down:
                    c.link(name, False)  # the new incarnation learns its carrier
        elif kind == "crash":
            name = names[op[1]]
            if c.sims[name].up:
                c.crash_supervisor(name)
                self.crashed.add(name)
        elif kind == "fail_service":
            name = names[op[1]]
            if c.sims[name].up and c.sims[name].running:
                c.fail_service(name)
        elif kind == "probe_svc":
            name = names[op[1]]
            if c.sims[name].up and c.node(name).wants_probe("svc", c.now):
                c.probe(name, "svc", False)
        elif kind == "probe_env":
            name = names[op[1]]
            if c.sims[name].up:
                c.probe(name, "env", op[2])
                self.env_ok[name] = op[2]
        elif kind == "loss":
            c.loss = op[1]
        elif kind == "partition":
            side = op[1]
            c.partition(
                [n for n, s in zip(names, side, strict=True) if s],
                [n for n, s in zip(names, side, strict=True) if not s],
            )
        elif kind == "block":
            if op[1] != op[2]:
                c.block(names[op[1]], names[op[2]])
        elif kind == "link":
            name, up = names[op[1]], op[2]
            if up:
                self.links_down.discard(name)
            else:
                self.links_down.add(name)
            c.link(name, up)
            for other in self.links_down:  # link(up) of one node must not reconnect a down one
                c.link(other, False)
        elif kind == "heal":
            c.heal()
            c.loss = 0.0
            for name in list(self.links_down):
                c.link(name, True)
            self.links_down.clear()
            for name in list(self.crashed):
                c.restart(name)
                self.env_ok[name] = True
            self.crashed.clear()
        self._track()

    def wait(self, dt: float) -> None:
        """Advance by ``dt``; check 'one MASTER' at the end of a long enough clean stretch."""
        c = self.c
        clean_from = c.now if self.clean() else None
        if clean_from is not None and self.dirty_windows:
            clean_from = max(clean_from, self.dirty_windows[-1][1] - self.settle)
        c.advance(dt * self.sc.advert)
        if clean_from is not None and c.now - clean_from >= self.settle and self.clean():
            self.check_one_master()

    def can_serve(self) -> bool:
        c = self.c
        up = [n for n in self.sc.names if c.sims[n].up]
        if len(self.sc.names) >= 3 and 2 * len(up) <= len(self.sc.names):
            return False
        return any(c.node(n).state not in (State.FAULT, State.STOPPING) and self.env_ok[n] for n in up)

    def check_one_master(self) -> None:
        c = self.c
        self.heal_checks += 1
        if self.can_serve():
            # A planned handover (failback after a fault clears) may be in flight: a
            # RELEASING or CLAIMING node then completes it within one stop + one start.
            busy = (State.CLAIMING, State.RELEASING)
            if not c.masters() and any(s in busy for s in c.states().values()):
                c.run_until_true(lambda: len(c.masters()) == 1, timeout=c.start_time + c.stop_time + 0.01)
            assert len(c.masters()) == 1, f"t={c.now:.3f}: {c.states()}"
        else:
            assert len(c.masters()) <= 1, f"t={c.now:.3f}: {c.states()}"

    def run(self) -> None:
        for dt, op in self.sc.steps:
            self.wait(dt)
            self.apply(op)
        # End: heal everything and let it settle.
        self.apply(("heal",))
        self.wait(self.settle / self.sc.advert + 0.01)
        self.c.advance(self.settle)
        self.check_all()

    # ------------------------------------------------------------------ invariants
    def check_all(self) -> None:
        c = self.c
        windows = list(self.dirty_windows)
        if self._dirty_since is not None:
            windows.append((self._dirty_since, float("inf")))
        for lo, hi, a, b in c.overlaps():
            assert _covered(lo, hi, windows), (
                f"{a} and {b} both active during [{lo:.4f}, {hi:.4f}] outside disturbance windows {windows}"
            )
        # Per incarnation: Notify chain and StartService only in CLAIMING.
        state: dict[str, State] = {}
        changes: dict[str, int] = {}
        for e in c.events:
            if e.kind in ("boot", "restart"):
                state[e.node] = State.INIT
                changes[e.node] = 0
            elif e.kind == "notify":
                assert e.previous == state[e.node], f"{e}: previous should be {state[e.node]}"
                if e.state != e.previous:
                    changes[e.node] += 1
                assert e.state is not None
                state[e.node] = e.state
            elif e.kind == "start":
                assert state[e.node] == State.CLAIMING, f"{e.node} started while {state[e.node].name}"
        for name, sim in c.sims.items():
            if sim.node is not None:
                assert sim.node.statistics().get("transitions", 0) == changes[name]
                assert sim.node.state == state[name]


def _covered(lo: float, hi: float, windows: list[tuple[float, float]]) -> bool:
    """Whether [lo, hi] lies within the union of ``windows``."""
    t = lo
    for a, b in sorted(windows):
        if a <= t < b or (a <= t and t == hi):
            t = max(t, b)
        if t >= hi:
            return True
    return t >= hi


def run(sc: Scenario) -> Runner:
    runner = Runner(sc)
    runner.run()
    event(f"{len(sc.priorities)} nodes")
    event(
        f"heal checks: {min(runner.heal_checks, 3)}+"
        if runner.heal_checks >= 3
        else f"heal checks: {runner.heal_checks}"
    )
    return runner


# CI replays a fixed set of examples (a fixed seed: reproducible verdicts wherever the
# checkout lives); local runs explore new ones, which is how the regression tests below
# were found. `HASUP_PROPERTY_SEED` pins a seed locally too.
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SEED = int(os.environ.get("HASUP_PROPERTY_SEED", "20261125" if IN_CI else "0"))


def _pinned(test: Any) -> Any:
    return seed(SEED)(test) if SEED else test


COMMON: dict[str, Any] = {
    "deadline": None,
    "database": None if IN_CI else settings.default.database,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}


@_pinned
@settings(max_examples=FAST, **COMMON)
@given(scenarios())
def test_invariants(sc: Scenario) -> None:
    run(sc)


@pytest.mark.slow
@pytest.mark.timeout(1200)
@_pinned
@settings(max_examples=SLOW, **COMMON)
@given(scenarios())
def test_invariants_many(sc: Scenario) -> None:
    run(sc)



def test_nodes_regaining_quorum_together_do_not_both_claim() -> None:
    """Found by test_invariants_many: with 2 of 4 nodes down, the survivors had no
    majority; when a third came back, both survivors claimed at once because their
    rank stagger had been counted from long before."""
    sc = Scenario(
        priorities=(1, 2, 3, 4),
        advert=1.0,
        seed=0,
        steps=((0.0, ("kill", 1)), (0.5, ("kill", 0)), (8.0, ("restart", 0))),
    )
    Runner(sc).run()  # raises on any overlap outside disturbance windows


def test_backup_holding_a_running_service_does_not_deadlock_a_claimer() -> None:
    """Found by test_invariants_many: a restarted node whose service still ran sat in
    BACKUP as a holder while its peer waited in CLAIMING for it to become INACTIVE."""
    sc = Scenario(
        priorities=(34, 33),
        advert=1.0,
        seed=4,
        steps=(
            (3.0, ("heal",)),
            (2.0, ("probe_svc", 1)),
            (0.0, ("restart", 1)),
            (0.5, ("probe_svc", 0)),
            (0.0, ("crash", 0)),
        ),
    )
    Runner(sc).run()


def test_claimer_yields_to_a_claimer_whose_service_runs() -> None:
    """Found by test_invariants_many: a restarted node whose service still ran claimed,
    while a higher-ranked peer also claimed and waited for it to become INACTIVE."""
    sc = Scenario(
        priorities=(236, 50, 206),
        advert=0.1,
        seed=421,
        steps=(
            (0.5, ("restart", 2)),
            (1.880032803640726, ("heal",)),
            (0.0, ("block", 1, 2)),
            (14.058566833479478, ("kill", 1)),
            (1.0, ("restart", 1)),
            (2.0, ("heal",)),
            (13.75, ("partition", [False, True, True])),
            (0.0, ("loss", 0.6)),
            (7.25, ("kill", 0)),
            (2.0, ("crash", 1)),
        ),
    )
    Runner(sc).run()


def test_nodes_recovering_from_fault_together_do_not_both_start() -> None:
    """Found by test_invariants_many: b and c left FAULT at the same instant (their
    hold-downs ended together at t=11), each still saw the other in FAULT (no candidate),
    so both claimed and started at once; c aborted only on b's CLAIMING heartbeat, after
    its start was issued: 100 ms of two active services. A claimer now starts only once
    every live peer has acknowledged its claim (docs/protocol.md, rule 2)."""
    sc = Scenario(
        priorities=(1, 3, 2),
        advert=1.0,
        seed=0,
        steps=(
            (0.5, ("kill", 0)),
            (4.0, ("fail_service", 1)),
            (0.5, ("heal",)),
            (2.0, ("fail_service", 1)),
            (2.0, ("fail_service", 2)),
        ),
    )
    Runner(sc).run()


def test_claimer_waiting_for_acks_starts_after_one_round_trip() -> None:
    """Found by test_invariants_many against a first version of the fix above: the
    claimer's query went out beside its CLAIMING burst, arrived after it and was dropped
    as a replay, so two peers answered only with their next advert and the handover took
    0.2 s longer than a stop plus a start. The query is now the claim's own heartbeat."""
    sc = Scenario(
        priorities=(1, 2, 4, 3),
        advert=1.0,
        seed=0,
        steps=((5.0, ("fail_service", 2)), (3.0, ("fail_service", 2)), (5.0, ("fail_service", 2))),
    )
    Runner(sc).run()
