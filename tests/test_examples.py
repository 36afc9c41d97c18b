"""The files under examples/ must keep working."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
NEURONEX = EXAMPLES / "neuronex-systemd"


def test_embedding_example_runs_and_moves_the_service() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "embedding.py")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    transitions = re.findall(r"s  (edge-[ab]): (\w+) -> (\w+) \(term (\d+)\)", out)
    became_master = [name for name, _, new, _ in transitions if new == "MASTER"]
    # start-up, crash takeover, failback, switchover
    assert became_master[:4] == ["edge-a", "edge-b", "edge-a", "edge-b"], out
    assert ("edge-a", "MASTER", "FAULT") in [(n, old, new) for n, old, new, _ in transitions], out
    assert "[edge-a] collector crashed" in out
    assert out.rstrip().endswith("done: no collector left running"), out


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "group.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, os.urandom(32).hex().encode() + b"\n")
    os.close(fd)
    return path


@pytest.mark.parametrize("name", ["edge-a.toml", "edge-b.toml"])
def test_neuronex_configs_pass_check_offline(name: str, tmp_path: Path, key_file: Path) -> None:
    text = (NEURONEX / name).read_text(encoding="utf-8")
    assert 'key_file = "/etc/hasup/group.key"' in text
    config = tmp_path / name
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
    assert effective["node"]["name"] == name.removesuffix(".toml")
    assert effective["group"]["authenticated"] is True
    assert effective["service"]["backend"] == "systemd"
    assert effective["service"]["unit"] == "neuronex.service"
    (probe,) = effective["probes"]
    assert probe["type"] == "http"
    assert probe["when"] == "active"
    assert 'expect_status = "200-399"' in text
    assert "http://127.0.0.1:8085/" in text


def test_neuronex_pair_is_consistent() -> None:
    from hasup.config import Config, parse_config

    def load(name: str) -> Config:
        text = (NEURONEX / name).read_text(encoding="utf-8")
        return parse_config(text.replace('key_file = "/etc/hasup/group.key"', "insecure = true"), name)

    a, b = load("edge-a.toml"), load("edge-b.toml")
    assert a.core_config().config_hash == b.core_config().config_hash
    assert {p.name for p in a.group.peers} == {"edge-b"}
    assert {p.name for p in b.group.peers} == {"edge-a"}
    assert a.node.priority > b.node.priority


def test_hasup_unit_is_hardened() -> None:
    unit = (NEURONEX / "hasup.service").read_text(encoding="utf-8")
    settings = dict(
        line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#")
    )
    assert settings["Type"] == "notify"
    assert settings["WatchdogSec"] == "2s"
    assert settings["Restart"] == "always"
    assert settings["ProtectSystem"] == "strict"
    assert settings["ReadWritePaths"].split()[0] == "/var/lib/hasup"
    assert settings["NoNewPrivileges"] == "yes"
