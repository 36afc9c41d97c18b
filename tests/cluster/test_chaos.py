"""Chaos scenarios against ``python -m hasup run`` on real network stacks (issue 6).

Two nodes (n1 priority 100, n2 priority 90) in testbed namespaces, the stand-in HTTP
service on 8085, an observer sampling every 10 ms which node serves and each node's
``/status``. Each test asserts the invariant the issue names; timings are bounds, not
goals (the benchmark measures the goals).

Fast subset (default run): 100 ms adverts, plus the service-crash test at default
settings. ``@pytest.mark.slow`` (``nox -s chaos``): the same at default 1 s adverts,
repeated runs, SIGSTOP for 10 s, partition+heal at 1 s, 20 % packet loss.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests._support import missing_component

from .hasup_node import HasupCluster, hasup_runner_unavailable
from .observer import Observer
from .testbed import Node, Testbed, netns_unavailable

pytestmark = pytest.mark.netns

SERVICE_START = 1.0  # generous bound for the stand-in's start-up on a loaded 2-CPU box


def _seconds(text: str) -> float:
    return float(text[:-2]) / 1000 if text.endswith("ms") else float(text[:-1])


def master_down(advert: str, priority: int = 90) -> float:
    """RFC 5798 Master_Down_Interval as ARCHITECTURE §2 rule 1 states it."""
    a = _seconds(advert)
    return 3 * a + (256 - priority) * a / 256


@dataclass
class Cluster:
    bed: Testbed
    hs: HasupCluster
    obs: Observer
    advert: str

    @property
    def a(self) -> Node:
        return self.bed.nodes[0]

    @property
    def b(self) -> Node:
        return self.bed.nodes[1]

    def wait_steady(self, timeout: float = 30.0) -> None:
        self.obs.wait(
            lambda: (
                self._state(self.a) == "MASTER"
                and self._state(self.b) == "BACKUP"
                and self.obs.serving() == {self.a.name}
            ),
            timeout=timeout,
            what="n1 MASTER and serving, n2 BACKUP",
        )

    def _state(self, node: Node) -> str | None:
        st = self.obs.state(node.name)
        return st.state if st else None

    def hold(self, seconds: float) -> None:
        """Keep a fault in place for ``seconds`` (a fault duration, not synchronisation)."""
        end = time.monotonic() + seconds
        self.obs.wait(lambda: time.monotonic() >= end, timeout=seconds + 5, what="fault duration")


@pytest.fixture(scope="module")
def hasup_ok() -> None:
    why = netns_unavailable()
    if why is not None:
        missing_component("network namespaces", why)
    why = hasup_runner_unavailable()
    if why is not None:
        missing_component("hasup runner", why)


def _cluster(advert: str) -> Iterator[Cluster]:
    with Testbed(2) as bed:
        hs = HasupCluster(bed, advert_interval=advert)
        with Observer(bed, status_port=9105, status_interval=0.05) as obs:
            hs.start()
            c = Cluster(bed, hs, obs, advert)
            try:
                c.wait_steady()
                yield c
            finally:
                hs.stop()
    assert bed.leftovers() == {"namespaces": [], "links": [], "processes": []}


@pytest.fixture(params=["100ms", pytest.param("1s", marks=pytest.mark.slow)])
def cluster(request: pytest.FixtureRequest, hasup_ok: None) -> Iterator[Cluster]:
    yield from _cluster(request.param)


@pytest.fixture
def default_cluster(hasup_ok: None) -> Iterator[Cluster]:
    yield from _cluster("1s")


# -- node loss and failback -------------------------------------------------------------------
def test_node_loss_then_failback(cluster: Cluster) -> None:
    a, b, obs = cluster.a, cluster.b, cluster.obs
    t_kill = obs.mark("kill")
    cluster.hs.kill_node(a)
    bound = master_down(cluster.advert) + SERVICE_START
    obs.wait(lambda: b.name in obs.serving(), timeout=bound + 5, what="n2 serving")
    tl = obs.timeline()
    first = tl.first_up(t_kill, [b.name])
    assert first is not None
    assert first[0] - t_kill <= bound, f"takeover took {first[0] - t_kill:.3f}s > {bound:.3f}s"
    assert not tl.dual_active(t_kill)

    # failback: the preferred node comes back; zero dual-active
    t_boot = obs.mark("boot")
    cluster.hs.boot(a)
    obs.wait_serving({a.name}, timeout=master_down(cluster.advert) * 3 + 10, hold=0.5)
    cluster.wait_steady()
    tl = obs.timeline()
    assert tl.dual_active(t_boot) == [], "failback overlapped"
    assert tl.settled(t_boot, a.name) is not None


@pytest.mark.slow
@pytest.mark.parametrize("run", range(3))
def test_node_loss_repeated(default_cluster: Cluster, run: int) -> None:
    test_node_loss_then_failback(default_cluster)


# -- service crash ------------------------------------------------------------------------------
def test_service_crash_moves_service_fast(default_cluster: Cluster) -> None:
    """Default settings, event-driven command backend: serving again in < 1 s."""
    c = default_cluster
    t_kill = c.obs.mark("crash")
    assert c.hs.kill_service(c.a)
    c.obs.wait(lambda: c.obs.timeline().first_down(t_kill, c.a.name) is not None, timeout=5, what="n1 down")
    c.obs.wait(lambda: bool(c.obs.serving()), timeout=10, what="a service answering again")
    c.obs.wait_serving(c.obs.serving(), timeout=5, hold=0.3)
    tl = c.obs.timeline()
    down = tl.first_down(t_kill, c.a.name)
    assert down is not None
    first = tl.first_up(down)
    assert first is not None
    assert first[0] - t_kill < 1.0, f"service back after {first[0] - t_kill:.3f}s"
    assert not tl.dual_active(t_kill)


@pytest.mark.slow
@pytest.mark.parametrize("run", range(3))
def test_service_crash_repeated(default_cluster: Cluster, run: int) -> None:
    test_service_crash_moves_service_fast(default_cluster)


# -- link down (default config: no track_interface) ------------------------------------------
@pytest.mark.parametrize("side", ["switch", "node"])
def test_link_down_on_holder_default_tracking(cluster: Cluster, side: str) -> None:
    """The holder's cable pulled (``switch``: carrier lost) or its interface downed
    (``node``) with the default config: it stops at once (link tracking is on by
    default), so no 10 ms sample has both serving; the peer serves within one
    master-down interval plus the service start; after the heal the preferred node is
    back by itself."""
    c = cluster
    assert "track_interface" not in c.hs.config_path(c.a).read_text()
    md = master_down(c.advert)
    t_cut = c.obs.mark("link down")
    c.a.link_down(side)
    bound = md + SERVICE_START
    c.obs.wait(lambda: c.obs.serving() == {c.b.name}, timeout=bound + 5, what="only n2 serving")
    tl = c.obs.timeline()
    first = tl.first_up(t_cut, [c.b.name])
    assert first is not None
    assert first[0] - t_cut <= bound, f"takeover took {first[0] - t_cut:.3f}s > {bound:.3f}s"
    c.hold(md + 1)  # the link stays down for a while
    t_heal = c.obs.mark("link up")
    c.a.link_up(side)
    c.wait_steady(timeout=30)
    # One missed sample right at the end (a slow answer of the stand-in) would leave
    # no final "only n1" period: look once n1 has served alone for a second.
    c.obs.wait_serving({c.a.name}, timeout=30, hold=1.0)
    tl = c.obs.timeline()
    both = tl.dual_active(t_cut)
    stopped = tl.first_down(t_cut, c.a.name)
    back = tl.settled(t_heal, c.a.name)
    assert stopped is not None and back is not None
    print(
        f"link down ({side}, {c.advert}): n1 stopped {stopped - t_cut:.3f}s after the cut, n2 serving "
        f"{first[0] - t_cut:.3f}s after; dual-active {sum(i.length for i in both):.3f}s; "
        f"n1 back {back - t_heal:.3f}s after the heal"
    )
    assert both == [], f"both nodes served: {both}"


# -- frozen supervisor -------------------------------------------------------------------------
@pytest.mark.slow
def test_sigstop_master_for_10s(default_cluster: Cluster) -> None:
    c = default_cluster
    t_stop = c.obs.mark("sigstop")
    c.hs.freeze(c.a)
    c.hold(10)
    t_cont = c.obs.mark("sigcont")
    c.hs.thaw(c.a)
    md = master_down(c.advert)
    c.obs.wait(lambda: len(c.obs.serving()) == 1, timeout=md + 10, what="exactly one serving")
    t_one = c.obs.wait_serving(c.obs.serving(), timeout=md + 10, hold=1.0)
    tl = c.obs.timeline()
    dual = sum(i.length for i in tl.dual_active(t_stop))
    print(f"SIGSTOP 10 s: dual-active {dual:.3f}s, exactly one active {t_one - t_cont:.3f}s after SIGCONT")
    assert t_one - t_cont <= md, f"two actives {t_one - t_cont:.3f}s after SIGCONT (> {md:.3f}s)"


# -- partition ---------------------------------------------------------------------------------
def test_partition_and_heal(cluster: Cluster) -> None:
    c = cluster
    md = master_down(c.advert)
    t_cut = c.obs.mark("partition")
    c.bed.partition([c.a], [c.b])
    c.hold(md + 3)
    t_heal = c.obs.mark("heal")
    c.bed.heal()
    c.obs.wait(lambda: len(c.obs.serving()) == 1, timeout=2 * md + 10, what="exactly one serving")
    t_one = c.obs.wait_serving(c.obs.serving(), timeout=2 * md + 10, hold=1.0)
    tl = c.obs.timeline()
    dual = sum(i.length for i in tl.dual_active(t_cut, t_heal))
    after = t_one - t_heal
    print(f"partition ({c.advert}): dual-active in the cut {dual:.3f}s; one active {after:.3f}s after heal")
    assert t_one - t_heal <= 2 * md, f"{t_one - t_heal:.3f}s after heal (> {2 * md:.3f}s)"


# -- packet loss -------------------------------------------------------------------------------
@pytest.mark.slow
def test_packet_loss_20pct_no_flapping(default_cluster: Cluster) -> None:
    c = default_cluster
    t0 = c.obs.mark("loss")
    c.a.netem(loss=20)
    c.b.netem(loss=20)
    c.hold(30)
    c.bed.heal()
    tl = c.obs.timeline()
    assert tl.serving_at(tl.end) == {c.a.name}
    assert tl.service_flaps(c.a.name, t0) == 0
    assert tl.service_flaps(c.b.name, t0) == 0
    assert tl.flaps(c.a.name, t0) == 0, tl.states(c.a.name, t0)
    assert tl.flaps(c.b.name, t0) == 0, tl.states(c.b.name, t0)


# -- restart of hasup --------------------------------------------------------------------------
def test_restart_of_hasup_on_master_keeps_service(cluster: Cluster) -> None:
    """kill -9 of hasup on the master and a restart do not restart (or stop) its service.

    When the peer's down interval is shorter than hasup's own restart (Python start-up,
    ≈ 1 s: here at 100 ms adverts) the backup may claim first; then the restarted node,
    which did adopt its service, stops it on seeing that MASTER (rule 5) and fails back.
    That is rule 13's trade-off; the test then asserts the bounded outcome instead.
    """
    c = cluster
    (pid,) = c.hs.service_pids(c.a)
    t_kill = c.obs.mark("kill -9 hasup")
    c.hs.kill_supervisor(c.a)
    c.hs.boot(c.a)

    def master_again() -> bool:
        st = c.obs.state(c.a.name)
        return st is not None and st.t > t_kill and st.state == "MASTER"

    c.obs.wait(master_again, timeout=master_down(c.advert) + 10, what="restarted hasup MASTER again")
    c.obs.wait_serving({c.a.name}, timeout=10, hold=2 * _seconds(c.advert) + 0.5)
    tl = c.obs.timeline()
    assert tl.serving_at(tl.end) == {c.a.name}
    if master_down(c.advert) >= 1.0:
        assert c.hs.service_pids(c.a) == [pid], "the service was restarted"
        assert tl.no_service(t_kill) == [], "the service stopped answering"
        assert tl.dual_active(t_kill) == []
    else:
        # either resumed without a blip, or the bounded rule-13 sequence: the overlap
        # lasts at most until the restarted hasup sees the new MASTER and stops its copy
        overlap = sum(i.end - i.start for i in tl.dual_active(t_kill))
        assert overlap < 5.0, f"dual-active for {overlap:.2f} s after the restart"
