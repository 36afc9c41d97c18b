"""The Docker backend labels the containers it creates with the term (fencing token)."""

from __future__ import annotations

from typing import Any

import pytest

from hasup.backends.docker import TERM_LABEL, CreateSpec, DockerBackend

from .conftest import IMAGE

pytestmark = [pytest.mark.docker, pytest.mark.anyio]


async def test_created_container_carries_the_term(docker_host: str, docker_client: Any, container_name: str) -> None:
    spec = CreateSpec(image=IMAGE, env={"HASUP_TEST": "1"})
    b = DockerBackend(container=container_name, docker_host=docker_host, create=spec, start_timeout=20)
    try:
        await b.start(term=42)
        config = docker_client.api.inspect_container(container_name)["Config"]
        assert config["Labels"][TERM_LABEL] == "42"
        assert TERM_LABEL == "io.hasup.term"
        assert "HASUP_TERM=42" in config["Env"]
        assert "HASUP_TEST=1" in config["Env"]
        await b.stop()
    finally:
        await b.aclose()


async def test_existing_container_has_no_term_label(docker_host: str, docker_client: Any, container_name: str) -> None:
    docker_client.containers.create(IMAGE, name=container_name, detach=True, init=True)
    b = DockerBackend(container=container_name, docker_host=docker_host, start_timeout=20)
    try:
        await b.start(term=42)  # labels are fixed at create time: nothing to add
        config = docker_client.api.inspect_container(container_name)["Config"]
        assert TERM_LABEL not in (config["Labels"] or {})
        await b.stop()
    finally:
        await b.aclose()
