"""The testbed itself: teardown leaves nothing, faults do what they say, keepalived smoke."""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._support import missing_component, wait_until

from .keepalived import KeepalivedPair, keepalived_unavailable
from .observer import Observer
from .testbed import (
    Node,
    Proc,
    Testbed,
    leftovers,
    list_netns,
    netem_supported,
    netns_unavailable,
    remove_stale,
)

pytestmark = pytest.mark.netns

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def netns_ok() -> None:
    why = netns_unavailable()
    if why is not None:
        missing_component("network namespaces", why)


@pytest.fixture
def bed(netns_ok: None) -> Iterator[Testbed]:
    with Testbed(3) as tb:
        yield tb
    assert tb.leftovers() == {"namespaces": [], "links": [], "processes": []}


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _http_server(node: Node, port: int = 8085) -> Proc:
    return node.spawn("svc", [sys.executable, "-m", "http.server", str(port), "--bind", node.addr])


# -- teardown ---------------------------------------------------------------------------------
def test_teardown_leaves_nothing(netns_ok: None) -> None:
    bed = Testbed(3)
    prefix = bed.prefix
    a, b, c = bed.nodes
    assert {ns for ns in list_netns() if ns.startswith(prefix)} == set(bed.namespaces)
    plain = a.spawn("sleep", ["sleep", "1000"])
    frozen = b.spawn("frozen", ["sleep", "1000"])
    b.stop("frozen")
    # a daemon that escaped its parent: only the namespace still knows it
    c.run(["bash", "-c", "setsid sleep 1000 >/dev/null 2>&1 < /dev/null &"])
    wait_until(lambda: len(c.pids()) >= 1, timeout=5, what="orphan in n3")
    orphan = c.pids()[0]
    a.netem(loss=10)
    bed.partition([a], [b, c])
    workdir = bed.workdir
    pids = [plain.pid, frozen.pid, orphan]
    bed.close()
    assert leftovers(prefix) == {"namespaces": [], "links": [], "processes": []}
    assert not [p for p in pids if _alive(p)]
    assert not workdir.exists()
    bed.close()  # idempotent


_CHILD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {root!r})
    from tests.cluster.testbed import Testbed
    bed = Testbed(2)
    with bed:
        bed.nodes[0].spawn("sleep", ["sleep", "1000"])
        bed.nodes[1].run(["bash", "-c", "setsid sleep 1000 >/dev/null 2>&1 < /dev/null &"])
        print(bed.prefix, bed.nodes[0].procs["sleep"].pid, flush=True)
        while True:
            time.sleep(1)
    """
)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_teardown_on_signal(netns_ok: None, sig: signal.Signals) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD.format(root=str(REPO_ROOT))],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    with proc:
        prefix, pid = proc.stdout.readline().split()
        assert leftovers(prefix)["namespaces"]
        proc.send_signal(sig)
        proc.wait(30)
    assert leftovers(prefix) == {"namespaces": [], "links": [], "processes": []}
    assert not _alive(int(pid))


def test_stale_testbed_of_killed_run_is_removed(netns_ok: None) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD.format(root=str(REPO_ROOT))],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    with proc:
        prefix, _pid = proc.stdout.readline().split()
        proc.kill()  # kill -9 of the test runner: no handler can run
        proc.wait(10)
    assert leftovers(prefix)["namespaces"]
    removed = remove_stale()
    assert {ns for ns in removed if ns.startswith(prefix)}
    assert leftovers(prefix) == {"namespaces": [], "links": [], "processes": []}


# -- network faults ---------------------------------------------------------------------------
def test_addresses_and_connectivity(bed: Testbed) -> None:
    a, b, c = bed.nodes
    assert (a.addr, b.addr, c.addr) == ("10.77.0.1", "10.77.0.2", "10.77.0.3")
    for x in bed.nodes:
        for y in bed.nodes:
            if x is not y:
                assert x.reachable(y.addr), f"{x.name} -> {y.name}"


def test_partition_and_heal(bed: Testbed) -> None:
    a, b, c = bed.nodes
    bed.partition([a], [b, c])
    assert not a.reachable(b.addr, timeout=0.3)
    assert not c.reachable(a.addr, timeout=0.3)
    assert b.reachable(c.addr)
    bed.heal()
    assert a.reachable(b.addr)
    assert c.reachable(a.addr)


@pytest.mark.parametrize("side", ["node", "switch"])
def test_link_down_up(bed: Testbed, side: str) -> None:
    a, b, _ = bed.nodes
    a.link_down(side)
    assert "NO-CARRIER" in a.run(["ip", "link", "show", a.dev]).stdout or side == "node"
    assert not a.reachable(b.addr, timeout=0.3)
    assert not b.reachable(a.addr, timeout=0.3)
    a.link_up(side)
    wait_until(lambda: a.reachable(b.addr, timeout=0.3), timeout=5, what="link back up")


def test_packet_loss(bed: Testbed) -> None:
    a, b, _ = bed.nodes
    mechanism = a.netem(loss=50, direction="egress")
    rtts = a.rtts(b.addr, count=120, timeout=0.1)
    lost = sum(r is None for r in rtts) / len(rtts)
    assert 0.25 < lost < 0.75, (mechanism, lost)
    a.netem_clear()
    assert all(r is not None for r in a.rtts(b.addr, count=20, timeout=0.5))


def test_netem_delay(bed: Testbed) -> None:
    if not netem_supported():
        pytest.skip("this kernel has no sch_netem (delay/reorder cannot be emulated; loss uses iptables)")
    a, b, _ = bed.nodes
    a.netem(delay_ms=50, direction="egress")
    rtt = a.rtt(b.addr)
    assert rtt is not None
    assert rtt >= 0.05
    a.netem_clear()


_UDP_RECV = textwrap.dedent(
    """
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], 5999))
    print("ready", flush=True)
    while True:
        data, addr = s.recvfrom(100); print(addr[0], data.decode(), flush=True)
    """
)
_UDP_SEND = (
    "import socket, sys; "
    "socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(sys.argv[2].encode(), (sys.argv[1], 5999))"
)


def test_one_way_drop(bed: Testbed) -> None:
    a, b, _ = bed.nodes
    recv_a = a.spawn("udp", [sys.executable, "-u", "-c", _UDP_RECV, a.addr], stdout_pipe=True)
    recv_b = b.spawn("udp", [sys.executable, "-u", "-c", _UDP_RECV, b.addr], stdout_pipe=True)
    assert recv_a.stdout.readline() == b"ready\n"
    assert recv_b.stdout.readline() == b"ready\n"
    a.drop_from(b)  # b -> a is cut, a -> b still works
    b.run([sys.executable, "-c", _UDP_SEND, a.addr, "lost"])
    a.run([sys.executable, "-c", _UDP_SEND, b.addr, "one"])
    assert recv_b.stdout.readline().decode().split() == [a.addr, "one"]
    a.firewall_clear()
    b.run([sys.executable, "-c", _UDP_SEND, a.addr, "two"])
    assert recv_a.stdout.readline().decode().split() == [b.addr, "two"]  # "lost" never arrived


# -- processes and the observer -------------------------------------------------------------
def test_observer_and_process_faults(bed: Testbed) -> None:
    a, b, _ = bed.nodes
    with Observer(bed, nodes=[a, b]) as obs:
        svc = _http_server(a)
        t_up = obs.wait(lambda: obs.serving() == {a.name}, timeout=10, what="n1 serving")
        # SIGSTOP: the port still accepts, but nothing answers
        t_stop = obs.mark("stop")
        a.stop("svc")
        obs.wait(lambda: not obs.serving(), timeout=5, what="frozen service not answering")
        a.cont("svc")
        obs.wait(lambda: obs.serving() == {a.name}, timeout=5, what="service answers after SIGCONT")
        # kill -9 found by port
        t_kill = obs.mark("kill")
        assert a.kill_port(8085) == [svc.pid]
        obs.wait(lambda: not obs.serving(), timeout=5, what="killed service down")
        # restart the same process
        a.restart("svc")
        obs.wait(lambda: obs.serving() == {a.name}, timeout=10, what="restarted service")
        # a second node serving at the same time is a dual-active interval
        t_dual = obs.mark("dual")
        _http_server(b)
        obs.wait_serving({a.name, b.name}, timeout=10, hold=0.1)
        b.kill("svc")
        obs.wait(lambda: obs.serving() == {a.name}, timeout=5, what="n2 down again")
        tl = obs.timeline()
    assert tl.interval == 0.01
    samples = tl.up[a.name]
    gaps = [t2 - t1 for (t1, _), (t2, _) in itertools.pairwise(samples)]
    assert sorted(gaps)[len(gaps) // 2] < 0.015  # median sampling period
    assert tl.first_up(t_up - 1, [a.name]) is not None
    assert tl.no_service(t_stop, t_kill)
    dual = tl.dual_active(t_dual)
    assert len(dual) == 1
    assert dual[0].length > 0
    assert not tl.dual_active(tl.start, t_dual)
    assert tl.service_flaps(a.name) >= 5  # up, frozen, up, killed, up (then the dual part)


# -- keepalived -------------------------------------------------------------------------------
@pytest.fixture
def ka_bed(netns_ok: None) -> Iterator[Testbed]:
    why = keepalived_unavailable()
    if why is not None:
        missing_component("keepalived", why)
    with Testbed(2) as tb:
        yield tb
    assert tb.leftovers() == {"namespaces": [], "links": [], "processes": []}


def test_keepalived_recipe_node_loss(ka_bed: Testbed) -> None:
    a, b = ka_bed.nodes
    ka = KeepalivedPair(ka_bed, "recipe")
    with Observer(ka_bed) as obs:
        ka.start()
        try:
            obs.wait(lambda: ka.steady() and obs.serving() == {a.name}, timeout=30, what="recipe steady state")
        except TimeoutError as exc:
            pytest.fail(f"{exc}; serving {obs.serving()}\n{ka.diagnostics()}")
        assert len(ka.supervisor_pids(a)) == 2  # parent + VRRP child
        t_kill = obs.mark("kill")
        ka.kill_node(a)
        obs.wait(lambda: obs.serving() == {b.name}, timeout=10, what="backup serving")
        obs.wait_serving({b.name}, timeout=5, hold=0.3)
        tl = obs.timeline()
    first = tl.first_up(t_kill, [b.name])
    assert first is not None
    # Master_Down = 3 x 1 s + (256-90)/256 s = 3.65 s after the last advert, plus start-up
    logs = {n.name: ka.notify_log(n) for n in (a, b)}
    assert first[0] - t_kill < 6.0, (first[0] - t_kill, logs)
    assert not tl.dual_active(t_kill), (tl.dual_active(t_kill), logs)
    assert ka.states()[b.name] == "MASTER", logs
    assert not ka.supervisor_pids(a)
