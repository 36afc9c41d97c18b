"""A long-running supervisor must not leak descriptors through the Docker backend.

Start/stop/crash cycles and a dockerd restart against the private engine; the
process's open descriptors are counted before and after (``/proc/self/fd``). The
dockerd restart is where docker-py's Unix-socket connect used to leak (see
:mod:`hasup.backends._docker_compat`): with ``filterwarnings = error`` an unclosed
socket also fails the test when the garbage collector finds it.

``HASUP_FD_CYCLES=100 pytest -s tests/backends/docker/test_fd_leak.py`` runs 100
cycles and prints the figure recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import gc
import os
import signal
from contextlib import aclosing
from typing import Any

import anyio
import pytest

from hasup._errors import BackendUnavailable
from hasup.backends.docker import CreateSpec, DockerBackend
from hasup.protocol._enums import ServiceStatus

from .conftest import IMAGE, DockerDaemon

CYCLES = int(os.environ.get("HASUP_FD_CYCLES", "8"))

pytestmark = [pytest.mark.docker, pytest.mark.timeout(120 + 10 * CYCLES)]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def wait_status(backend: DockerBackend, want: ServiceStatus, within: float = 20.0) -> None:
    with anyio.fail_after(within):
        async with aclosing(backend.watch()) as statuses:
            async for status in statuses:
                if status is want:
                    return


async def cycle(backend: DockerBackend, client: Any, name: str) -> None:
    """start, stop, start, crash (SIGKILL to PID 1), confirm the failure, stop."""
    await backend.start()
    await backend.stop()
    await backend.start()
    pid = await anyio.to_thread.run_sync(lambda: client.api.inspect_container(name)["State"]["Pid"])
    os.kill(pid, signal.SIGKILL)
    await wait_status(backend, ServiceStatus.FAILED)
    await backend.stop()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_no_descriptor_leak_over_cycles_and_a_dockerd_restart(
    docker_host: str, docker_daemon: DockerDaemon, docker_client: Any, container_name: str
) -> None:
    backend = DockerBackend(
        container=container_name, docker_host=docker_host, create=CreateSpec(image=IMAGE), start_timeout=20
    )
    try:
        await cycle(backend, docker_client, container_name)  # warm up: pool, threads, streams
        gc.collect()
        before = open_fds()
        for _ in range(CYCLES):
            await cycle(backend, docker_client, container_name)
        # dockerd goes away and comes back: calls fail (connect refused) meanwhile
        await anyio.to_thread.run_sync(docker_daemon.stop)
        for _ in range(20):
            with pytest.raises(BackendUnavailable):
                await backend.status()
        await anyio.to_thread.run_sync(docker_daemon.start)
        await backend.stop()  # the engine killed the container; stop() confirms it
        await cycle(backend, docker_client, container_name)
        gc.collect()
        after = open_fds()
    finally:
        await backend.aclose()
    print(f"figure: open fds before {before}, after {CYCLES + 1} cycles and a dockerd restart {after}")
    # The connection pool may hold one more idle connection than after the warm-up;
    # anything more grows with use.
    assert after - before <= 1, f"descriptors grew from {before} to {after}"
