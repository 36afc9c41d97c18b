"""Benchmark of the Docker backend against a private dockerd.

    .venv/bin/python bench/docker_backend.py [--runs 20] [--docker-host unix:///path]

Without --docker-host it starts its own engine with tests/fixtures/docker/setup.sh in a
temporary directory and tears it down at the end (root; installs docker.io and
busybox-static when missing). Prints the median (and p90) of each figure over --runs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import docker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hasup.backends.docker import DockerBackend
from hasup.protocol._enums import ServiceStatus

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "docker"
IMAGE = "hasup-test/httpd:1"
NO_HEALTHCHECK = {"test": ["NONE"]}


class Results:
    def __init__(self) -> None:
        self.rows: list[tuple[str, list[float]]] = []

    def add(self, name: str, samples: list[float]) -> None:
        self.rows.append((name, samples))
        print(f"  {name}: median {statistics.median(samples) * 1000:.1f} ms", file=sys.stderr)

    def table(self) -> str:
        lines = ["| measurement | runs | median | p90 | min |", "|---|---|---|---|---|"]
        for name, samples in self.rows:
            ordered = sorted(samples)
            p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
            lines.append(
                f"| {name} | {len(samples)} | {statistics.median(samples) * 1000:.1f} ms "
                f"| {p90 * 1000:.1f} ms | {ordered[0] * 1000:.1f} ms |"
            )
        return "\n".join(lines)


class Watch:
    def __init__(self) -> None:
        self.seen: list[tuple[ServiceStatus, float]] = []
        self.changed = anyio.Event()

    async def run(self, backend: DockerBackend) -> None:
        async with aclosing(backend.watch()) as statuses:
            async for status in statuses:
                self.seen.append((status, time.perf_counter()))
                self.changed.set()
                self.changed = anyio.Event()

    async def wait_for(self, status: ServiceStatus, after: int) -> float:
        with anyio.move_on_after(30):
            while True:
                for seen, at in self.seen[after:]:
                    if seen is status:
                        return at
                await self.changed.wait()
        raise TimeoutError(f"no {status} after index {after} in {[s.value for s, _ in self.seen]}")


@asynccontextmanager
async def watching(backend: DockerBackend) -> AsyncIterator[Watch]:
    watch = Watch()
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch.run, backend)
        with anyio.fail_after(10):
            while not watch.seen:
                await watch.changed.wait()
        yield watch
        tg.cancel_scope.cancel()


async def timed(func: Callable[[], Any]) -> float:
    start = time.perf_counter()
    await func()
    return time.perf_counter() - start


def sync_timed(func: Callable[[], Any]) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


async def bench(host: str, runs: int, restart: Callable[[], None] | None) -> Results:
    results = Results()
    client = docker.DockerClient(base_url=host, version="auto")
    names = ["hasup-bench-plain", "hasup-bench-health"]
    for name in names:
        with contextlib.suppress(docker.errors.NotFound):
            client.api.remove_container(name, force=True)
    client.containers.create(IMAGE, name=names[0], init=True, healthcheck=NO_HEALTHCHECK)
    client.containers.create(IMAGE, name=names[1], init=True)
    plain = DockerBackend(container=names[0], docker_host=host, stop_timeout=10)
    health = DockerBackend(container=names[1], docker_host=host, stop_timeout=10)
    try:
        # Raw SDK for comparison: start returns once the process runs; then stop.
        raw_start, raw_stop, raw_inspect = [], [], []
        for _ in range(runs):
            raw_start.append(sync_timed(lambda: client.api.start(names[0])))
            raw_inspect.append(sync_timed(lambda: client.api.inspect_container(names[0])))
            raw_stop.append(sync_timed(lambda: client.api.stop(names[0], timeout=10)))
        results.add("raw SDK: api.start()", raw_start)
        results.add("raw SDK: api.stop(timeout=10), init", raw_stop)
        results.add("raw SDK: api.inspect_container()", raw_inspect)

        status_samples = []
        await plain.status()  # connect once
        for _ in range(runs * 5):
            status_samples.append(await timed(plain.status))
        results.add("backend.status() (inspect in a worker thread)", status_samples)

        start_samples, stop_samples = [], []
        for _ in range(runs):
            start_samples.append(await timed(plain.start))
            stop_samples.append(await timed(plain.stop))
        results.add("start() to running (no HEALTHCHECK)", start_samples)
        results.add("stop() confirmed, init", stop_samples)

        healthy_samples = []
        for _ in range(runs):
            healthy_samples.append(await timed(health.start))
            await health.stop()
        results.add("start() to healthy (HEALTHCHECK interval 1s)", healthy_samples)

        crash_samples = []
        async with watching(plain) as watch:
            for _ in range(runs):
                await plain.start()
                pid = client.api.inspect_container(names[0])["State"]["Pid"]
                mark = len(watch.seen)
                killed = time.perf_counter()
                os.kill(pid, signal.SIGKILL)
                crash_samples.append(await watch.wait_for(ServiceStatus.FAILED, mark) - killed)
                await plain.stop()
        results.add("crash (SIGKILL) -> FAILED from watch()", crash_samples)

        if restart is not None:
            resync_samples, script_samples = [], []
            async with watching(plain) as watch:
                for _ in range(runs):
                    await plain.stop()
                    mark = len(watch.seen)
                    began = time.perf_counter()
                    await anyio.to_thread.run_sync(restart)
                    script_samples.append(time.perf_counter() - began)
                    await watch.wait_for(ServiceStatus.UNKNOWN, mark)
                    at = await watch.wait_for(ServiceStatus.STOPPED, mark + 1)
                    resync_samples.append(at - began)
            results.add("dockerd restart -> resynchronised (from SIGTERM to dockerd)", resync_samples)
            results.add("  of which: dockerd stop + start until `docker info` answers", script_samples)
    finally:
        await plain.aclose()
        await health.aclose()
        for name in names:
            with contextlib.suppress(Exception):
                client.api.remove_container(name, force=True)
        client.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--docker-host", help="use this engine (no dockerd restart figure)")
    args = parser.parse_args()
    if args.docker_host:
        print(anyio.run(bench, args.docker_host, args.runs, None).table())
        return
    root = Path(tempfile.mkdtemp(prefix="hasup-bench.", dir="/tmp"))
    try:
        subprocess.run(["sh", str(FIXTURES / "setup.sh"), str(root)], check=True)
        host = f"unix://{root}/docker.sock"

        def restart() -> None:
            pid = int((root / "dockerd.pid").read_text())
            os.kill(pid, signal.SIGTERM)
            while True:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.01)
            subprocess.run(["sh", str(FIXTURES / "setup.sh"), str(root), "start"], check=True)

        results = anyio.run(bench, host, args.runs, restart)
        print(results.table())
    finally:
        subprocess.run(["sh", str(FIXTURES / "teardown.sh"), str(root)], check=False)


if __name__ == "__main__":
    main()
