"""``hasup run`` with the ``neuronex`` backend against a real stand-in process on
loopback: credentials NeuronEX rejects are one line and exit 2 at start, not a node
that runs and can never serve."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._support import missing_component, wait_until
from tests.neuronex.plant import plant_unavailable

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def standin() -> Iterator[int]:
    why = plant_unavailable()
    if why is not None:
        missing_component("paho-mqtt / pymodbus", why)
    port = _free_port()
    argv = [sys.executable, "-m", "tests.neuronex.standin", "--listen", f"127.0.0.1:{port}"]
    argv += ["--modbus", "127.0.0.1:9", "--mqtt", "127.0.0.1:9", "--source", "t", "--startup-delay", "0"]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:

        def listening() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        wait_until(listening, timeout=20, what="the stand-in's API")
        yield port
    finally:
        proc.kill()
        proc.wait()


def test_rejected_credentials_are_one_line_and_exit_2(tmp_path: Path, standin: int) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    key = tmp_path / "group.key"
    key.write_text(os.urandom(32).hex() + "\n")
    key.chmod(0o600)
    secret = tmp_path / "neuronex.pass"
    secret.write_text("not-the-password\n")
    secret.chmod(0o600)
    config = tmp_path / "hasup.toml"
    config.write_text(
        f"""[node]
name = "edge-a"
priority = 100
state_dir = "{state}"

[group]
id = 7
listen = "127.0.0.1:{_free_port()}"
peers = ["127.0.0.2:5405"]
key_file = "{key}"

[service]
backend = "neuronex"
url = "http://127.0.0.1:{standin}"
password_file = "{secret}"

[status]
listen = "off"
"""
    )
    config.chmod(0o600)
    proc = subprocess.run(
        [sys.executable, "-m", "hasup", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        f"hasup: {config}: service.password_file: NeuronEX rejected the credentials of user 'admin' "
        "(error 1009) (line 15)"
    ]
