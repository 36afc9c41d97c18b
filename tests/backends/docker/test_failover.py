"""Two ``python -m hasup run`` supervisors on loopback, each managing its own container.

edge-a (priority 100) manages ``neuronex-a``, edge-b (90) manages ``neuronex-b``; both
are created by the Docker backend from ``[service.create]`` (``hasup-test/httpd:1``,
busybox httpd with a 1 s HEALTHCHECK) with a fixed published port per node, and each
node has a ``type = "backend"`` probe reporting Docker's HEALTHCHECK.

A sampler thread records every 10 ms which containers Docker reports running and which
published ports answer HTTP; the test asserts that no sample ever shows two of either,
through crash failover, failback and a graceful SIGTERM handover.

The containers sit on a bridge network of their own with a random 10.x.y.0/24 subnet,
not on ``docker0``: other private dockerds on the machine (concurrent test sessions)
share ``docker0`` by name and hand out the same 172.17.0.x addresses, and an address
collided with another engine's container makes the published port stop answering.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._support import wait_until

from .conftest import IMAGE, DockerDaemon

pytestmark = [pytest.mark.docker, pytest.mark.timeout(120)]

CONTAINERS = ("neuronex-a", "neuronex-b")


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=0.2) as r:
            return bool(r.status == 200 and b"hello from hasup-test" in r.read())
    except (OSError, http.client.HTTPException):  # reset or cut short mid-answer: not serving
        return False


class Node:
    """One supervisor process and the container it manages."""

    def __init__(
        self, tmp: Path, name: str, priority: int, udp: int, peer: tuple[str, int], host: str, network: str
    ) -> None:
        self.name = name
        self.container = f"neuronex-{name[-1]}"
        self.http = free_port(socket.SOCK_STREAM)
        self.status_port = free_port(socket.SOCK_STREAM)
        self.config = tmp / f"{name}.toml"
        self.log = tmp / f"{name}.log"
        peer_name, peer_port = peer
        self.config.write_text(
            textwrap.dedent(
                f"""
                [node]
                name = "{name}"
                priority = {priority}
                preempt = true
                preempt_delay = "500ms"
                state_dir = "{tmp / ('state-' + name)}"

                [group]
                id = 52
                listen = "127.0.0.1:{udp}"
                peers = [{{ name = "{peer_name}", address = "127.0.0.1:{peer_port}" }}]
                advert_interval = "100ms"
                key_file = "{tmp / 'group.key'}"
                fault_holddown = "3s"

                [service]
                backend = "docker"
                container = "{self.container}"
                docker_host = "{host}"
                start_timeout = "20s"
                stop_timeout = "5s"

                [service.create]
                image = "{IMAGE}"
                ports = ["127.0.0.1:{self.http}:8085"]
                network = "{network}"

                [[probe]]
                name = "container-health"
                type = "backend"
                interval = "200ms"
                fall = 2
                rise = 1

                [status]
                listen = "127.0.0.1:{self.status_port}"
                """
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hasup", "run", "-c", str(self.config)],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    def state(self) -> object:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.status_port}/status", timeout=0.5) as r:
                return json.load(r).get("state")
        except OSError:
            return None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class Sampler(threading.Thread):
    """Every 10 ms: which managed containers run (Docker's view), which ports answer.

    It has a Docker client of its own (a requests session is not shared across
    threads: two threads on one pool discard connections unclosed) and closes it when
    stopped. A failed sample is recorded, not fatal; :meth:`first` and :meth:`stop`
    report them, so a dead sampler cannot pass for "never happened".
    """

    def __init__(self, make_client: Any, nodes: list[Node]) -> None:
        super().__init__(daemon=True)
        self.client = make_client()
        self.nodes = nodes
        #: (time, running container names, names of the nodes whose port answers)
        self.samples: list[tuple[float, frozenset[str], frozenset[str]]] = []
        self.errors: list[str] = []
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                now = time.monotonic()
                try:
                    listed = self.client.api.containers(filters={"label": "hasup.managed=true", "status": "running"})
                except Exception as exc:  # recorded; reported by the test
                    self.errors.append(f"{now:.3f} {type(exc).__name__}: {exc}")
                else:
                    running = frozenset(name.lstrip("/") for c in listed for name in c["Names"])
                    up = frozenset(n.name for n in self.nodes if answers(n.http))
                    self.samples.append((now, running & set(CONTAINERS), up))
                self._halt.wait(max(0.0, now + 0.01 - time.monotonic()))
        finally:
            self.client.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(10)

    def overlaps(self) -> list[tuple[float, frozenset[str], frozenset[str]]]:
        return [s for s in self.samples if len(s[1]) > 1 or len(s[2]) > 1]

    def first(self, after: float, pred: Any) -> float:
        found = next((t for t, running, up in self.samples if t >= after and pred(running, up)), None)
        if found is None:
            alive = "alive" if self.is_alive() else "stopped"
            raise AssertionError(f"no such sample after {after:.3f} (sampler {alive}; errors: {self.errors[-3:]})")
        return found


def _remove_containers(client: Any) -> None:
    for name in CONTAINERS:
        with contextlib.suppress(Exception):
            client.api.remove_container(name, force=True)


@pytest.fixture
def network(docker_client: Any) -> Iterator[str]:
    """A bridge network with a random subnet, removed afterwards."""
    import docker.types

    name = f"hasup-failover-{uuid.uuid4().hex[:8]}"
    rng = random.SystemRandom()
    subnet = f"10.{rng.randrange(200, 250)}.{rng.randrange(0, 256)}.0/24"
    pool = docker.types.IPAMPool(subnet=subnet)
    ipam = docker.types.IPAMConfig(pool_configs=[pool])
    net = docker_client.networks.create(name, driver="bridge", ipam=ipam)
    try:
        yield name
    finally:
        _remove_containers(docker_client)
        with contextlib.suppress(Exception):
            net.remove()


@pytest.fixture
def pair(
    tmp_path: Path, docker_daemon: DockerDaemon, docker_client: Any, network: str
) -> Iterator[tuple[Node, Node]]:
    keygen = [sys.executable, "-m", "hasup", "keygen", str(tmp_path / "group.key")]
    subprocess.run(keygen, check=True, capture_output=True)
    _remove_containers(docker_client)
    ua, ub = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    a = Node(tmp_path, "edge-a", 100, ua, ("edge-b", ub), docker_daemon.host, network)
    b = Node(tmp_path, "edge-b", 90, ub, ("edge-a", ua), docker_daemon.host, network)
    try:
        yield a, b
    finally:
        for n in (a, b):
            n.kill()
        _remove_containers(docker_client)
        for n in (a, b):
            if n.log.exists():
                sys.stdout.write(f"--- {n.name} log ---\n{n.log.read_text()[-6000:]}\n")


def test_crash_failover_failback_and_sigterm_handover(
    pair: tuple[Node, Node], docker_client: Any, docker_daemon: DockerDaemon
) -> None:
    a, b = pair
    api = docker_client.api
    a.start()
    b.start()
    wait_until(lambda: a.state() == "MASTER" and b.state() == "BACKUP", timeout=20, what="a MASTER, b BACKUP")
    wait_until(lambda: answers(a.http), timeout=20, what="neuronex-a answers")
    # created by the backend from [service.create]: labelled, with init, restart policy "no"
    info = api.inspect_container("neuronex-a")
    assert info["Config"]["Labels"].get("hasup.managed") == "true"
    assert info["HostConfig"]["RestartPolicy"]["Name"] in ("", "no")
    assert info["HostConfig"]["Init"] is True
    assert not answers(b.http)

    sampler = Sampler(docker_daemon.client, [a, b])
    sampler.start()
    figures: dict[str, float] = {}
    try:
        # 1. crash: SIGKILL to the master container's PID 1 (docker-init) -> the backup's
        #    container runs and answers.
        pid = api.inspect_container("neuronex-a")["State"]["Pid"]
        t_kill = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: answers(b.http), timeout=15, what="neuronex-b answers after the crash")
        figures["crash -> b answers"] = time.monotonic() - t_kill
        b_running = sampler.first(t_kill, lambda r, _: "neuronex-b" in r)
        figures["crash -> neuronex-b running"] = b_running - t_kill
        # b's container answers before Docker reports it healthy, so before b says MASTER
        wait_until(lambda: b.state() == "MASTER", timeout=10, what="b MASTER")

        # 2. failback: a leaves FAULT after fault_holddown (3 s), preempts after 500 ms;
        #    b stops neuronex-b, confirms, then a starts neuronex-a.
        wait_until(
            lambda: a.state() == "MASTER" and b.state() == "BACKUP" and answers(a.http)
            and not answers(b.http),
            timeout=20,
            what="failback to edge-a",
        )
        t_b_gone = max(t for t, running, _ in sampler.samples if "neuronex-b" in running)
        figures["failback: neuronex-b gone -> neuronex-a running"] = (
            sampler.first(t_b_gone, lambda r, _: "neuronex-a" in r) - t_b_gone
        )
        t_b_silent = max(t for t, _, up in sampler.samples if "edge-b" in up)
        figures["failback: b last answer -> a answers"] = (
            sampler.first(t_b_silent, lambda _, u: "edge-a" in u) - t_b_silent
        )

        # 3. graceful SIGTERM on the master: it stops its container, resigns, b takes over.
        assert a.proc is not None
        t_term = time.monotonic()
        a.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: answers(b.http), timeout=15, what="neuronex-b answers after SIGTERM")
        figures["SIGTERM -> b answers"] = time.monotonic() - t_term
        assert a.proc.wait(15) == 0
        wait_until(lambda: b.state() == "MASTER", timeout=10, what="b MASTER after SIGTERM")
        assert api.inspect_container("neuronex-a")["State"]["Running"] is False
    finally:
        sampler.stop()

    assert not sampler.is_alive(), "the sampler did not stop"
    # a rare failed Docker call is tolerated (recorded); a sampler that mostly failed
    # would have watched nothing
    assert len(sampler.errors) * 100 <= len(sampler.samples), f"sampler errors: {sampler.errors[:5]}"
    overlaps = sampler.overlaps()
    assert overlaps == [], f"two containers running or answering at once: {overlaps[:5]}"
    times = [t for t, _, _ in sampler.samples]
    intervals = sorted(t1 - t0 for t0, t1 in itertools.pairwise(times))
    figures["samples"] = len(sampler.samples)
    figures["median sample interval"] = intervals[len(intervals) // 2]
    assert len(sampler.samples) > 200
    sys.stdout.write("".join(f"figure: {k}: {v:.3f}\n" for k, v in figures.items()))

    # b's graceful stop leaves nothing running
    assert b.proc is not None
    b.proc.send_signal(signal.SIGTERM)
    assert b.proc.wait(15) == 0
    assert api.containers(filters={"label": "hasup.managed=true", "status": "running"}) == []
