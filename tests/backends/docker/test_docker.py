"""The Docker backend against a real, private dockerd (tier 3: real components).

Nothing here sleeps to synchronise: every wait is for an event or a state, under
``anyio.fail_after``.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import pytest

from hasup._errors import BackendError, BackendUnavailable, ConfigError, ServiceFailed
from hasup._section import Section, Source
from hasup.backends.docker import CreateSpec, DockerBackend
from hasup.probes.backend import BackendProbe
from hasup.probes.base import ProbeOptions
from hasup.protocol._enums import ServiceStatus

from .conftest import IMAGE, DockerDaemon

pytestmark = [pytest.mark.docker]


def make_container(client: Any, name: str, **kwargs: Any) -> Any:
    kwargs.setdefault("init", True)
    return client.containers.create(IMAGE, name=name, detach=True, **kwargs)


class Watcher:
    """Collects ``backend.watch()`` output (status, perf_counter time) in a task."""

    def __init__(self) -> None:
        self.seen: list[tuple[ServiceStatus, float]] = []
        self._changed = anyio.Event()

    async def run(self, backend: DockerBackend) -> None:
        # aclosing: a cancelled consumer must finalise the generator now (closing its
        # event stream), not whenever the garbage collector gets to it.
        async with aclosing(backend.watch()) as statuses:
            async for status in statuses:
                self.seen.append((status, time.perf_counter()))
                self._changed.set()
                self._changed = anyio.Event()

    async def wait_for(self, status: ServiceStatus, *, after: int = 0, within: float = 10.0) -> float:
        """Wait until ``status`` is yielded at index ≥ ``after``; return when it was seen."""
        with anyio.fail_after(within):
            while True:
                for seen, at in self.seen[after:]:
                    if seen is status:
                        return at
                await self._changed.wait()

    async def wait_first(self, within: float = 10.0) -> None:
        with anyio.fail_after(within):
            while not self.seen:
                await self._changed.wait()

    def statuses(self) -> list[ServiceStatus]:
        return [s for s, _ in self.seen]


@asynccontextmanager
async def watching(backend: DockerBackend) -> AsyncIterator[Watcher]:
    watcher = Watcher()
    async with anyio.create_task_group() as tg:
        tg.start_soon(watcher.run, backend)
        # The first value is the current status: the stream is subscribed from then on.
        await watcher.wait_first()
        yield watcher
        tg.cancel_scope.cancel()


@pytest.fixture
async def backend(docker_host: str, container_name: str) -> AsyncIterator[DockerBackend]:
    b = DockerBackend(container=container_name, docker_host=docker_host, start_timeout=20, stop_timeout=5)
    yield b
    await b.aclose()


# -- configuration (no daemon needed) --------------------------------------------------
def section(data: dict[str, Any]) -> Section:
    return Section(data, path="service", source=Source("hasup.toml"))


def test_from_config_defaults() -> None:
    b = DockerBackend.from_config(section({"backend": "docker", "container": "neuronex"}))
    assert (b.container, b.docker_host, b.start_timeout, b.stop_timeout, b.create) == (
        "neuronex",
        None,
        60.0,
        10.0,
        None,
    )


def test_from_config_create_table() -> None:
    b = DockerBackend.from_config(
        section(
            {
                "backend": "docker",
                "container": "neuronex",
                "docker_host": "unix:///run/docker.sock",
                "start_timeout": "30s",
                "stop_timeout": "500ms",
                "create": {
                    "image": "emqx/neuronex:latest",
                    "ports": ["8085:8085", "127.0.0.1:9000:9000/udp", "7000"],
                    "volumes": ["/opt/neuronex/data:/opt/neuronex/data"],
                    "env": {"TZ": "UTC", "DEBUG": True},
                    "command": ["neuronex", "--foreground"],
                },
            }
        )
    )
    assert b.stop_timeout == 0.5
    assert b.create == CreateSpec(
        image="emqx/neuronex:latest",
        command=("neuronex", "--foreground"),
        ports={"8085/tcp": 8085, "9000/udp": ("127.0.0.1", 9000), "7000/tcp": None},
        volumes=("/opt/neuronex/data:/opt/neuronex/data",),
        env={"TZ": "UTC", "DEBUG": "true"},
        init=True,
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "service.container: is required"),
        ({"container": "x", "stop_timout": "1s"}, "service.stop_timout: unknown key"),
        ({"container": "x", "create": {"image": "i", "restart_policy": "always"}}, 'must be "no"'),
        ({"container": "x", "create": {"image": "i", "ports": ["80:eighty"]}}, "ports"),
        ({"container": "x", "create": {"image": "i", "command": "sh -c x"}}, "argv"),
        ({"container": "bad name"}, "not a valid container name"),
    ],
)
def test_from_config_errors(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DockerBackend.from_config(section({"backend": "docker", **data}))


@pytest.mark.anyio
async def test_unreachable_daemon_is_backend_unavailable(tmp_path: Any) -> None:
    b = DockerBackend(container="x", docker_host=f"unix://{tmp_path}/nothing.sock")
    with pytest.raises(BackendUnavailable, match="unreachable"):
        await b.status()
    probe = BackendProbe(ProbeOptions(name="health"), b)
    outcome = await probe.check()
    assert not outcome.ok
    assert "unreachable" in outcome.detail
    await b.aclose()


# -- real containers --------------------------------------------------------------------
@pytest.mark.anyio
async def test_start_stop_status(backend: DockerBackend, docker_client: Any, container_name: str) -> None:
    make_container(docker_client, container_name)
    assert await backend.status() is ServiceStatus.STOPPED
    assert await backend.check() == []

    await backend.start()  # returns once healthy (the image has a HEALTHCHECK)
    assert await backend.status() is ServiceStatus.RUNNING
    assert await backend.health() == (True, "healthy")
    probe = BackendProbe.from_config(section({}), ProbeOptions(name="health", when="always"), backend=backend)
    assert (await probe.check()).ok
    await backend.start()  # already running: no-op

    await backend.stop()
    assert await backend.status() is ServiceStatus.STOPPED
    assert docker_client.api.inspect_container(container_name)["State"]["Status"] == "exited"
    ok, detail = await backend.health()
    assert not ok
    assert "exited" in detail
    await backend.stop()  # idempotent


@pytest.mark.anyio
async def test_crash_is_a_failed_event(
    backend: DockerBackend, docker_client: Any, container_name: str
) -> None:
    make_container(docker_client, container_name)
    await backend.start()
    async with watching(backend) as watcher:
        assert watcher.statuses() == [ServiceStatus.RUNNING]
        pid = docker_client.api.inspect_container(container_name)["State"]["Pid"]
        killed_at = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        seen_at = await watcher.wait_for(ServiceStatus.FAILED)
        latency = seen_at - killed_at
        print(f"crash -> FAILED event: {latency * 1000:.1f} ms")
        assert latency < 1.0
        # Not running although hasup did not stop it: FAILED until stop() confirms.
        assert await backend.status() is ServiceStatus.FAILED
        await backend.stop()
        assert await backend.status() is ServiceStatus.STOPPED
        # Again: stop() turned FAILED into STOPPED without a Docker event, so a second
        # crash must still be reported (even if it beats the start event's inspect).
        await backend.start()
        mark = len(watcher.seen)
        os.kill(docker_client.api.inspect_container(container_name)["State"]["Pid"], signal.SIGKILL)
        await watcher.wait_for(ServiceStatus.FAILED, after=mark)
        await backend.stop()


@pytest.mark.anyio
async def test_unhealthy_is_a_failed_event(
    backend: DockerBackend, docker_client: Any, container_name: str
) -> None:
    make_container(docker_client, container_name)
    await backend.start()
    async with watching(backend) as watcher:
        # httpd keeps running but serves 404: the HEALTHCHECK (wget) fails.
        exec_id = docker_client.api.exec_create(container_name, ["rm", "/www/index.html"])
        docker_client.api.exec_start(exec_id)
        await watcher.wait_for(ServiceStatus.FAILED, within=15)
        assert docker_client.api.inspect_container(container_name)["State"]["Running"]
        ok, detail = await backend.health()
        assert not ok
        assert detail.startswith("unhealthy")
        assert await backend.status() is ServiceStatus.FAILED
        # Repaired: healthy again → RUNNING.
        exec_id = docker_client.api.exec_create(container_name, ["sh", "-c", "echo back > /www/index.html"])
        docker_client.api.exec_start(exec_id)
        await watcher.wait_for(ServiceStatus.RUNNING, after=len(watcher.seen), within=15)
    await backend.stop()


@pytest.mark.anyio
async def test_own_stop_is_stopped_not_failed(
    backend: DockerBackend, docker_client: Any, container_name: str
) -> None:
    make_container(docker_client, container_name)
    await backend.start()
    async with watching(backend) as watcher:
        await backend.stop()
        await watcher.wait_for(ServiceStatus.STOPPED)
        assert ServiceStatus.FAILED not in watcher.statuses()
        await backend.start()
        await watcher.wait_for(ServiceStatus.RUNNING, after=2)


@pytest.mark.anyio
async def test_missing_container_is_a_clear_error(backend: DockerBackend, container_name: str) -> None:
    assert await backend.status() is ServiceStatus.STOPPED
    await backend.stop()  # nothing to stop
    with pytest.raises(BackendError, match=f"{container_name}.*no such container.*service.create"):
        await backend.start()
    assert container_name in "\n".join(await backend.check())


@pytest.mark.anyio
async def test_created_from_create_table(docker_host: str, docker_client: Any, container_name: str) -> None:
    spec = CreateSpec(image=IMAGE, env={"HASUP_TEST": "1"})
    b = DockerBackend(container=container_name, docker_host=docker_host, create=spec, start_timeout=20)
    try:
        await b.start()
        info = docker_client.api.inspect_container(container_name)
        assert info["State"]["Health"]["Status"] == "healthy"
        assert info["HostConfig"]["Init"] is True
        assert info["HostConfig"]["RestartPolicy"]["Name"] in ("no", "")
        assert "HASUP_TEST=1" in info["Config"]["Env"]
        assert await b.check() == []
        await b.stop()
    finally:
        await b.aclose()


@pytest.mark.anyio
async def test_missing_image_is_a_clear_error(docker_host: str, container_name: str) -> None:
    b = DockerBackend(container=container_name, docker_host=docker_host, create=CreateSpec(image="nope/x:1"))
    with pytest.raises(BackendError, match="image 'nope/x:1' is not present"):
        await b.start()
    await b.aclose()


@pytest.mark.anyio
async def test_failing_start_is_service_failed(
    docker_host: str, docker_client: Any, container_name: str
) -> None:
    spec = CreateSpec(image=IMAGE, command=("sh", "-c", "echo boom; exit 3"))
    b = DockerBackend(container=container_name, docker_host=docker_host, create=spec, start_timeout=20)
    with pytest.raises(ServiceFailed, match=r"exited with code 3.*boom"):
        await b.start()
    assert await b.status() is ServiceStatus.FAILED
    await b.stop()
    assert await b.status() is ServiceStatus.STOPPED
    await b.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("policy", ["always", "unless-stopped", "on-failure"])
async def test_restart_policy_is_refused(
    backend: DockerBackend, docker_client: Any, container_name: str, policy: str
) -> None:
    make_container(docker_client, container_name, restart_policy={"Name": policy})
    with pytest.raises(BackendError, match=f"restart policy '{policy}'.*docker update --restart=no"):
        await backend.start()
    assert docker_client.api.inspect_container(container_name)["State"]["Status"] == "created"
    assert any("restart policy" in p for p in await backend.check())


@pytest.mark.anyio
async def test_no_loop_stall_during_backend_calls(
    backend: DockerBackend, docker_client: Any, container_name: str
) -> None:
    make_container(docker_client, container_name)
    worst = 0.0
    done = False

    async def monitor() -> None:
        nonlocal worst
        while not done:
            before = time.perf_counter()
            await anyio.sleep(0.005)
            worst = max(worst, time.perf_counter() - before - 0.005)

    async with anyio.create_task_group() as tg:
        tg.start_soon(monitor)
        async with watching(backend):
            await backend.start()
            for _ in range(10):
                await backend.status()
                await backend.health()
            await backend.stop()
            await backend.check()
        done = True
    print(f"worst loop lag: {worst * 1000:.1f} ms")
    assert worst < 0.050


@pytest.mark.anyio
async def test_cancelling_watch_and_aclose_do_not_hang(
    backend: DockerBackend, docker_client: Any, container_name: str
) -> None:
    make_container(docker_client, container_name)
    with anyio.fail_after(5):
        async with watching(backend):
            pass  # leaving cancels the watch task while its thread blocks in the stream
    async with anyio.create_task_group() as tg:
        watcher = Watcher()
        tg.start_soon(watcher.run, backend)
        with anyio.fail_after(5):
            await watcher.wait_for(ServiceStatus.STOPPED)
            await backend.aclose()  # closes the stream from the loop: watch() returns
    assert watcher.statuses() == [ServiceStatus.STOPPED]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_daemon_restart_reconnects_and_resyncs(
    backend: DockerBackend, docker_daemon: DockerDaemon, docker_client: Any, container_name: str
) -> None:
    make_container(docker_client, container_name)
    await backend.start()
    async with watching(backend) as watcher:
        assert watcher.statuses() == [ServiceStatus.RUNNING]
        await anyio.to_thread.run_sync(docker_daemon.stop)
        await watcher.wait_for(ServiceStatus.UNKNOWN)
        with pytest.raises(BackendUnavailable):
            await backend.status()
        mark = len(watcher.seen)
        restarted_at = time.perf_counter()
        await anyio.to_thread.run_sync(docker_daemon.start)
        # Without live-restore, stopping dockerd killed the container: a failure that
        # hasup did not ask for, so FAILED after the resync, until stop() confirms.
        seen_at = await watcher.wait_for(ServiceStatus.FAILED, after=mark, within=15)
        print(f"dockerd answering -> resynchronised: {(seen_at - restarted_at) * 1000:.0f} ms")
        assert await backend.status() is ServiceStatus.FAILED
        # stop() of an exited container confirms the stop; Docker emits no event for it,
        # so watch() has nothing new to say (documented): stop()'s return is the input.
        await backend.stop()
        assert await backend.status() is ServiceStatus.STOPPED
        # The watch follows the container again after the reconnect.
        mark = len(watcher.seen)
        await backend.start()
        await watcher.wait_for(ServiceStatus.RUNNING, after=mark)
        await backend.stop()
