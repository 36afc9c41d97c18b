"""examples/neuronex-docker/ must keep working: hasup configs, compose files, stand-in."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "neuronex-docker"
NODES = ["edge-a", "edge-b"]


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "group.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, os.urandom(32).hex().encode() + b"\n")
    os.close(fd)
    return path


@pytest.mark.parametrize("node", NODES)
def test_docker_configs_pass_check_offline(node: str, tmp_path: Path, key_file: Path) -> None:
    text = (EXAMPLE / f"hasup-{node}.toml").read_text(encoding="utf-8")
    assert 'key_file = "/etc/hasup/group.key"' in text
    config = tmp_path / "hasup.toml"
    config.write_text(text.replace("/etc/hasup/group.key", str(key_file)), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "hasup", "check", "--offline", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "warning:" not in result.stdout
    effective = json.loads(result.stdout)
    assert effective["node"]["name"] == node
    assert effective["group"]["authenticated"] is True
    assert effective["service"]["backend"] == "docker"
    assert effective["service"]["container"] == "neuronex"
    assert {p["type"] for p in effective["probes"]} == {"backend", "http"}


def test_docker_pair_is_consistent() -> None:
    from hasup.config import Config, parse_config

    def load(node: str) -> Config:
        text = (EXAMPLE / f"hasup-{node}.toml").read_text(encoding="utf-8")
        return parse_config(text.replace('key_file = "/etc/hasup/group.key"', "insecure = true"), node)

    a, b = load("edge-a"), load("edge-b")
    assert a.core_config().config_hash == b.core_config().config_hash
    assert {p.name for p in a.group.peers} == {"edge-b"}
    assert {p.name for p in b.group.peers} == {"edge-a"}
    assert a.node.priority > b.node.priority


def _compose(node: str) -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")
    doc: dict[str, Any] = yaml.safe_load((EXAMPLE / f"compose.{node}.yml").read_text(encoding="utf-8"))
    return doc


@pytest.mark.parametrize("node", NODES)
def test_compose_files_give_hasup_the_lifecycle(node: str) -> None:
    services = _compose(node)["services"]
    hasup, neuronex = services["hasup"], services["neuronex"]
    assert hasup["restart"] == "always"
    assert hasup["network_mode"] == "host"
    assert any(v.endswith(":/var/run/docker.sock") for v in hasup["volumes"])
    assert any(v.endswith(":/var/lib/hasup") for v in hasup["volumes"])
    # neuronex: never restarted by dockerd, never started by `docker-compose up`
    assert neuronex["restart"] == "no"
    assert neuronex["container_name"] == "neuronex"
    assert neuronex["profiles"] == ["managed"]
    assert any(v.endswith(":/opt/neuronex/data") for v in neuronex["volumes"])
    assert "8085:8085" in neuronex["ports"]
    # hasup's stop grace period outlasts the neuronex stop_timeout (30 s)
    assert hasup["stop_grace_period"] == "60s"


def test_compose_files_differ_only_in_node_names() -> None:
    a = (EXAMPLE / "compose.edge-a.yml").read_text(encoding="utf-8")
    b = (EXAMPLE / "compose.edge-b.yml").read_text(encoding="utf-8")
    assert a.replace("edge-a", "edge-b").replace("10.0.0.127", "10.0.0.223") == b


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose (v1) is not installed")
@pytest.mark.parametrize("node", NODES)
def test_docker_compose_accepts_the_files(node: str) -> None:
    compose = str(EXAMPLE / f"compose.{node}.yml")
    result = subprocess.run(
        ["docker-compose", "-f", compose, "--profile", "managed", "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_standin_image_has_a_healthcheck_on_8085() -> None:
    dockerfile = (EXAMPLE / "standin" / "Dockerfile").read_text(encoding="utf-8")
    assert "HEALTHCHECK" in dockerfile
    assert "http://127.0.0.1:8085/" in dockerfile
    assert '"-p", "8085"' in dockerfile
