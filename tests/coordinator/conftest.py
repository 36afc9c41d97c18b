"""A real 3-member etcd cluster on loopback for the coordinator tests.

``tests/fixtures/etcd/setup.sh`` installs Debian's etcd-server if needed and starts the
members on free ports with short raft timeouts (heartbeat 50 ms, election 500 ms), so
the cluster is ready in ~0.2 s and survives a member kill in about one election
timeout. Session-scoped and always torn down; without etcd the tests skip locally and
fail under CI=true.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from anyio.abc import SocketStream

from tests._support import missing_component, wait_until

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "etcd"
MEMBERS = ("m1", "m2", "m3")
EXTRA_ARGS = "--heartbeat-interval=50 --election-timeout=500"


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (held open together so they differ)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


class EtcdCluster:
    def __init__(self, root: Path, ports: list[int]) -> None:
        self.root = root
        self.ports = ports
        self.endpoints = [f"http://127.0.0.1:{ports[2 * i]}" for i in range(len(MEMBERS))]

    def endpoint(self, member: str) -> str:
        return self.endpoints[MEMBERS.index(member)]

    def _run(self, script: str, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "ETCD_EXTRA_ARGS": EXTRA_ARGS}
        return subprocess.run(
            ["bash", str(FIXTURES / script), str(self.root), *args],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            check=False,
        )

    def start(self) -> subprocess.CompletedProcess[str]:
        """Start every member that is not running (same ports, same data dirs)."""
        return self._run("setup.sh", "cluster", ",".join(map(str, self.ports)))

    def pid(self, member: str) -> int | None:
        try:
            pid = int((self.root / member / "etcd.pid").read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ValueError):
            return None
        return pid if f"--data-dir={self.root}/{member}/data".encode() in cmdline else None

    def kill(self, member: str) -> None:
        """kill -9 one member (its pid file is left: start() notices it is stale)."""
        pid = self.pid(member)
        assert pid is not None, f"{member} is not running"
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: self.pid(member) is None or _zombie(pid), timeout=5, what=f"{member} to die")

    def all_running(self) -> bool:
        return all(self.pid(m) is not None for m in MEMBERS)

    def status(self, member: str) -> dict[str, str]:
        request = urllib.request.Request(f"{self.endpoint(member)}/v3/maintenance/status", data=b"{}")
        with urllib.request.urlopen(request, timeout=2) as response:
            data: dict[str, str] = json.load(response)
            return data

    def raft_leader(self) -> str:
        """Name of the member that is raft leader now."""
        for member in MEMBERS:
            if self.pid(member) is None:
                continue
            try:
                status = self.status(member)
            except OSError:
                continue
            leader = status.get("leader")
            for candidate in MEMBERS:
                if self.pid(candidate) is None:
                    continue
                try:
                    if self.status(candidate)["header"]["member_id"] == leader:  # type: ignore[index]
                        return candidate
                except OSError:
                    continue
        raise AssertionError("no raft leader")

    def healthy(self) -> bool:
        try:
            for member in MEMBERS:
                with urllib.request.urlopen(f"{self.endpoint(member)}/health", timeout=1) as response:
                    if json.load(response).get("health") != "true":
                        return False
        except OSError:
            return False
        return True


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except (FileNotFoundError, IndexError):
        return True


@pytest.fixture(scope="session")
def etcd_cluster() -> Iterator[EtcdCluster]:
    if shutil.which("etcd") is None and (os.geteuid() != 0 or shutil.which("apt-get") is None):
        missing_component("etcd", "not installed, and cannot install it here (apt-get install etcd-server)")
    root = Path(tempfile.mkdtemp(prefix="hasup-etcd-"))
    cluster = EtcdCluster(root, free_ports(2 * len(MEMBERS)))
    try:
        result = cluster.start()
        if result.returncode != 0:
            missing_component("etcd", f"setup.sh failed: {(result.stderr or result.stdout).strip()[-800:]}")
        yield cluster
    finally:
        subprocess.run(
            ["bash", str(FIXTURES / "teardown.sh"), str(root), "--purge"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def etcd(etcd_cluster: EtcdCluster) -> EtcdCluster:
    """The cluster with all three members up and healthy (restarts what a test killed)."""
    if not etcd_cluster.all_running():
        result = etcd_cluster.start()
        assert result.returncode == 0, result.stderr
    wait_until(etcd_cluster.healthy, timeout=10, what="etcd cluster healthy")
    return etcd_cluster


@pytest.fixture
def prefix() -> str:
    return f"/hasup-test/{uuid.uuid4().hex[:12]}"


class Partition:
    """TCP forwarders to etcd members that can silently drop all traffic.

    A cut forwarder keeps accepting connections and reading bytes but delivers
    nothing, in either direction: to the client it looks like a network partition
    (requests hang until their timeout), not like a refused connection.
    """

    def __init__(self) -> None:
        self.cut = False
        self.endpoints: list[str] = []

    async def _pump(self, source: SocketStream, sink: SocketStream) -> None:
        try:
            async for chunk in source:
                if not self.cut:
                    await sink.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        finally:
            if not self.cut:
                await sink.aclose()

    async def _handle(self, client: SocketStream, port: int) -> None:
        async with client:
            if self.cut:
                async for _ in client:
                    pass
                return
            try:
                upstream = await anyio.connect_tcp("127.0.0.1", port)
            except OSError:
                return
            async with upstream, anyio.create_task_group() as tg:
                tg.start_soon(self._pump, client, upstream)
                tg.start_soon(self._pump, upstream, client)


@asynccontextmanager
async def partitionable(endpoints: list[str]) -> AsyncIterator[Partition]:
    """Forwarders in front of ``endpoints``; ``.endpoints`` are theirs, ``.cut`` drops."""
    partition = Partition()
    async with anyio.create_task_group() as tg:
        for endpoint in endpoints:
            port = int(endpoint.rsplit(":", 1)[1])
            listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
            local = listener.extra(anyio.abc.SocketAttribute.local_port)
            partition.endpoints.append(f"http://127.0.0.1:{local}")

            async def serve(listener: anyio.abc.SocketListener = listener, port: int = port) -> None:
                async def handler(client: SocketStream) -> None:
                    await partition._handle(client, port)

                async with listener:
                    await listener.serve(handler)

            tg.start_soon(serve)
        yield partition
        tg.cancel_scope.cancel()
