"""A port that is already taken is a user mistake: one line naming the key, exit 2.

Real ``python -m hasup run`` processes and real sockets on 127.0.0.1 hold the ports.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from hasup import ConfigError
from hasup.config import parse_config
from hasup.supervisor import Supervisor
from hasup.testing import HasupProcess, MockBackend, config_text, free_port, toml_value, write_key_file
from tests._support import wait_until

SERVICE = {"backend": "command", "run": [sys.executable, "-c", "import time; time.sleep(600)"]}


@contextlib.contextmanager
def holder(kind: int) -> Iterator[int]:
    """A socket of another process's kind holding a port (listening, for TCP)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            sock.listen()
        yield int(sock.getsockname()[1])


def write_config(tmp: Path, *, udp: int, status: int, sync: int | None = None) -> Path:
    extra = ""
    if sync is not None:
        data = tmp / "data"
        data.mkdir(exist_ok=True)
        extra = f'[[sync]]\nid = "data"\npath = {toml_value(str(data))}\nlisten = "127.0.0.1:{sync}"\n'
    peer = free_port(socket.SOCK_DGRAM)
    key = tmp / "group.key"
    if not key.exists():
        write_key_file(key)
    text = config_text(
        "edge-a",
        100,
        f"127.0.0.1:{udp}",
        [f"127.0.0.1:{peer}"],
        advert="100ms",
        key_file=key,
        state_dir=tmp / "state",
        service=SERVICE,
        status=f'listen = "127.0.0.1:{status}"',
        extra=extra,
    )
    path = tmp / "hasup.toml"
    path.write_text(text)
    return path


def run_once(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hasup", "run", "-c", str(config)], capture_output=True, text=True, timeout=60
    )


def assert_one_line(result: subprocess.CompletedProcess[str], key: str, address: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "ExceptionGroup" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"{key}: cannot listen on {address}" in lines[0]
    assert "address already in use" in lines[0]


def test_busy_status_port(tmp_path: Path) -> None:
    with holder(socket.SOCK_STREAM) as port:
        config = write_config(tmp_path, udp=free_port(socket.SOCK_DGRAM), status=port)
        result = run_once(config)
    assert_one_line(result, "status.listen", f"127.0.0.1:{port}/tcp")
    assert str(config) in result.stderr and "(line " in result.stderr


def test_busy_heartbeat_port(tmp_path: Path) -> None:
    with holder(socket.SOCK_DGRAM) as port:
        result = run_once(write_config(tmp_path, udp=port, status=free_port(socket.SOCK_STREAM)))
    assert_one_line(result, "group.listen", f"127.0.0.1:{port}/udp")


def test_busy_sync_port(tmp_path: Path) -> None:
    with holder(socket.SOCK_STREAM) as port:
        config = write_config(
            tmp_path, udp=free_port(socket.SOCK_DGRAM), status=free_port(socket.SOCK_STREAM), sync=port
        )
        result = run_once(config)
    assert_one_line(result, "sync[0].listen", f"127.0.0.1:{port}/tcp")


def test_second_node_on_one_host_with_the_same_status_port(tmp_path: Path) -> None:
    """The case of the report: two nodes on one host, both on the default status port."""
    status = free_port(socket.SOCK_STREAM)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = write_config(tmp_path / "a", udp=free_port(socket.SOCK_DGRAM), status=status)
    second = write_config(tmp_path / "b", udp=free_port(socket.SOCK_DGRAM), status=status)
    with HasupProcess(first, status_port=status, log=tmp_path / "a.log") as a:
        a.start()
        wait_until(lambda: a.state() is not None, timeout=20, what="first node serving /status")
        result = run_once(second)
        assert_one_line(result, "status.listen", f"127.0.0.1:{status}/tcp")
        assert a.state() is not None  # the first node is untouched


def test_reload_onto_a_busy_port_keeps_the_old_listener(tmp_path: Path) -> None:
    status = free_port(socket.SOCK_STREAM)
    config = write_config(tmp_path, udp=free_port(socket.SOCK_DGRAM), status=status)
    log = tmp_path / "run.log"
    with HasupProcess(config, status_port=status, log=log) as node, holder(socket.SOCK_STREAM) as busy:
        node.start()
        wait_until(lambda: node.state() is not None, timeout=20, what="node serving /status")
        good = config.read_text()
        config.write_text(good.replace(f"127.0.0.1:{status}", f"127.0.0.1:{busy}"))
        assert node.proc is not None
        node.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "reload rejected" in log.read_text(), timeout=10, what="reload rejected")
        assert f"status.listen: cannot listen on 127.0.0.1:{busy}/tcp" in log.read_text()
        assert node.proc.poll() is None and node.state() is not None  # still on the old port


@pytest.mark.anyio
async def test_supervisor_maps_a_lost_bind_race_to_config_error() -> None:
    """Between ``hasup run``'s check and the real bind another process may take the
    port: the library raises the same ConfigError, and the heartbeat socket it had
    bound already is closed again."""
    udp = free_port(socket.SOCK_DGRAM)
    with holder(socket.SOCK_STREAM) as port:
        config = parse_config(
            config_text("edge-a", 100, f"127.0.0.1:{udp}", ["127.0.0.1:9"], status=f'listen = "127.0.0.1:{port}"')
        )
        sup = Supervisor(config, backend=MockBackend())
        with pytest.raises(ConfigError, match=rf"status\.listen: cannot listen on 127\.0\.0\.1:{port}/tcp"):
            with anyio.fail_after(10):
                await sup.run()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind(("127.0.0.1", udp))  # free: nothing leaked
