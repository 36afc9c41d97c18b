"""A private dockerd for the Docker backend tests (tests/fixtures/docker/setup.sh).

The engine is started once per session in a temporary directory, with the test image
``hasup-test/httpd:1`` (busybox httpd on 8085 with a 1 s HEALTHCHECK), and torn down
always. Without it the tests skip locally and fail under CI=true.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._support import missing_component

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "docker"
IMAGE = "hasup-test/httpd:1"


class DockerDaemon:
    """The running private engine: its socket, and stop/start for restart tests."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.host = f"unix://{root}/docker.sock"

    def client(self) -> Any:
        import docker

        return docker.DockerClient(base_url=self.host, version="auto", timeout=30)

    def pid(self) -> int:
        return int((self.root / "dockerd.pid").read_text().strip())

    def stop(self) -> None:
        """Stop dockerd (SIGTERM) and wait until it has exited."""
        pid = self.pid()
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.02)
        raise RuntimeError(f"dockerd {pid} did not exit within 30 s")

    def start(self) -> None:
        """(Re)start dockerd on the same data root; returns once it answers."""
        subprocess.run(["sh", str(FIXTURES / "setup.sh"), str(self.root), "start"], check=True, timeout=60)


def _teardown(root: Path) -> None:
    subprocess.run(["sh", str(FIXTURES / "teardown.sh"), str(root)], check=False, timeout=120)


@pytest.fixture(scope="session")
def docker_daemon() -> Iterator[DockerDaemon]:
    try:
        import docker  # noqa: F401
    except ImportError as exc:
        missing_component("dockerd", f"the docker SDK is not installed ({exc}): pip install 'hasup[docker]'")
    if os.geteuid() != 0:
        missing_component("dockerd", "the private dockerd fixture needs root")
    if shutil.which("apt-get") is None and shutil.which("dockerd") is None:
        missing_component("dockerd", "dockerd is not installed and apt-get is not available")
    # A short path: the socket path must fit in sun_path (108 bytes).
    root = Path(tempfile.mkdtemp(prefix="hasup-dockerd.", dir="/tmp"))
    try:
        result = subprocess.run(
            ["sh", str(FIXTURES / "setup.sh"), str(root)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if result.returncode != 0:
            log_file = root / "dockerd.log"
            log = log_file.read_text(errors="replace")[-2000:] if log_file.exists() else ""
            reason = f"setup.sh failed ({result.returncode}): {result.stderr[-2000:]}{log}"
            missing_component("dockerd", reason)
        yield DockerDaemon(root)
    finally:
        _teardown(root)


@pytest.fixture
def docker_host(docker_daemon: DockerDaemon) -> str:
    return docker_daemon.host


@pytest.fixture
def docker_client(docker_daemon: DockerDaemon) -> Iterator[Any]:
    client = docker_daemon.client()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def container_name(docker_client: Any) -> Iterator[str]:
    """A unique container name; the container is removed after the test."""
    name = f"hasup-t-{uuid.uuid4().hex[:8]}"
    yield name
    # Not created, or already gone: nothing to remove.
    with contextlib.suppress(Exception):
        docker_client.api.remove_container(name, force=True)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)
