"""The hasup container image (Dockerfile, scripts/build-image.sh), built and run for real.

Slow: the first build makes a Debian 12 root file system with mmdebstrap (downloads
about 60 MB of packages from deb.debian.org; cached in ~/.cache/hasup-image, or
$HASUP_IMAGE_CACHE), then `pip wheel`s hasup[docker] on the host. Then the image runs
as in examples/neuronex-docker/: host network, the Docker socket mounted, managing a
container beside it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import textwrap
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from hasup._version import __version__
from tests._support import wait_until

from .conftest import IMAGE, DockerDaemon

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[3]
TAG = "hasup:test"


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as r:
            return str(r.read().decode())
    except OSError:
        return None


@pytest.fixture(scope="module")
def image(docker_daemon: DockerDaemon) -> str:
    env = dict(os.environ, DOCKER_HOST=docker_daemon.host)
    t0 = time.monotonic()
    result = subprocess.run(
        ["sh", str(ROOT / "scripts" / "build-image.sh"), TAG],
        capture_output=True,
        text=True,
        env=env,
        timeout=840,
        check=False,
    )
    assert result.returncode == 0, f"build-image.sh failed:\n{result.stdout}\n{result.stderr[-4000:]}"
    # the script's last step is `docker run --rm TAG --version`
    assert result.stdout.strip().splitlines()[-1] == f"hasup {__version__}"
    print(f"figure: build-image.sh took {time.monotonic() - t0:.1f} s")
    return TAG


def test_image_runs_hasup_version(image: str, docker_client: Any) -> None:
    out = docker_client.containers.run(image, ["--version"], remove=True)
    assert out.decode().strip() == f"hasup {__version__}"
    # the docker extra is installed and importable in the image
    out = docker_client.containers.run(
        image,
        ["-c", "import docker, hasup.backends.docker; print(docker.__version__)"],
        entrypoint=["python3"],
        remove=True,
    )
    assert out.decode().strip()
    attrs = docker_client.api.inspect_image(image)
    assert attrs["Config"]["Entrypoint"] == ["hasup"]
    assert attrs["Config"]["Cmd"] == ["run", "-c", "/etc/hasup/hasup.toml"]


def test_image_manages_a_container_beside_it(
    image: str, docker_daemon: DockerDaemon, docker_client: Any, tmp_path: Path
) -> None:
    """hasup in its container, with the socket mounted, creates, starts and stops neuronex."""
    suffix = uuid.uuid4().hex[:8]
    managed, supervisor = f"neuronex-img-{suffix}", f"hasup-img-{suffix}"
    http, status = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM)
    udp, peer = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "hasup.toml").write_text(
        textwrap.dedent(
            f"""
            [node]
            name = "edge-a"
            priority = 100
            [group]
            id = 54
            listen = "127.0.0.1:{udp}"
            peers = [{{ name = "edge-b", address = "127.0.0.1:{peer}" }}]  # absent: edge-a claims
            insecure = true
            advert_interval = "100ms"
            [service]
            backend = "docker"
            container = "{managed}"
            docker_host = "unix:///var/run/docker.sock"
            stop_timeout = "5s"
            [service.create]
            image = "{IMAGE}"
            ports = ["127.0.0.1:{http}:8085"]
            [[probe]]
            name = "container-health"
            type = "backend"
            interval = "500ms"
            [status]
            listen = "127.0.0.1:{status}"
            """
        )
    )
    container = docker_client.containers.run(
        image,
        name=supervisor,
        detach=True,
        network_mode="host",
        volumes={
            str(docker_daemon.root / "docker.sock"): {"bind": "/var/run/docker.sock", "mode": "rw"},
            str(etc): {"bind": "/etc/hasup", "mode": "ro"},
            str(tmp_path / "state"): {"bind": "/var/lib/hasup", "mode": "rw"},
        },
    )
    try:

        def master() -> bool:
            text = http_get(f"http://127.0.0.1:{status}/status")
            return text is not None and json.loads(text).get("state") == "MASTER"

        wait_until(master, timeout=30, what="hasup in its container becomes MASTER")
        assert "hello from hasup-test" in (http_get(f"http://127.0.0.1:{http}/") or "")
        info = docker_client.api.inspect_container(managed)
        assert info["State"]["Health"]["Status"] == "healthy"
        assert info["Config"]["Labels"]["hasup.managed"] == "true"
        # docker stop = SIGTERM to hasup: it stops the managed container, then exits 0
        container.stop(timeout=30)
        assert container.wait(timeout=30)["StatusCode"] == 0
        assert docker_client.api.inspect_container(managed)["State"]["Running"] is False
        assert (tmp_path / "state" / "state.json").exists()
    except BaseException:
        print(container.logs().decode(errors="replace")[-4000:])
        raise
    finally:
        for name in (supervisor, managed):
            with contextlib.suppress(Exception):
                docker_client.api.remove_container(name, force=True)
