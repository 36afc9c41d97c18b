"""A flood of idle connections on every listener leaves the MASTER healthy (issue 15, item 5).

A real ``python -m hasup run`` node (command backend: a real HTTP server, a real http
probe every 250 ms, a ``[[sync]]`` listener, the status endpoint, 100 ms adverts) whose
descriptor limit is then lowered to 512 with ``prlimit``, as on a small box. The test
opens idle TCP connections to the status and sync ports, more than the limit, and
holds them: hasup's descriptors stay under the listener caps, the service keeps
answering, the probe never fails and the node stays MASTER; once the flood is gone
the status endpoint answers again and exports ``process_open_fds``.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from hasup._rlimit import LOW, TARGET, raise_nofile
from hasup.testing import free_port, loopback_node, write_key_file
from tests._support import missing_component, wait_until

FLOOD = 600  # per listener: more than the node's whole descriptor limit
LIMIT = 512
# status: 64 served + 64 answered 503; sync: 16; plus sockets, probes, the backend
MAX_FDS = 300


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def soft_nofile(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no 'Max open files' line")


@contextlib.contextmanager
def idle_flood(port: int, count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections to ``port`` that never send a byte (non-blocking connects:
    the kernel completes them into the listen backlog whether or not hasup accepts)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(("127.0.0.1", port))
            socks.append(s)
        yield socks
    finally:
        for s in socks:
            s.close()


def get(url: str, timeout: float = 0.5) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


@pytest.fixture
def own_limit() -> Iterator[None]:
    """The test itself holds 2 x FLOOD sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4 * FLOOD + 256
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"hard descriptor limit {hard} < {wanted}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_idle_connection_flood_on_every_listener_leaves_the_master_healthy(tmp_path: Path, own_limit: None) -> None:
    if shutil.which("prlimit") is None:
        missing_component("prlimit", "util-linux's prlimit lowers the node's descriptor limit")
    key = tmp_path / "group.key"
    write_key_file(key)
    data = tmp_path / "data"
    data.mkdir()
    sync_port = free_port()
    node = loopback_node(
        tmp_path,
        "edge-a",
        100,
        free_port(socket.SOCK_DGRAM),
        [free_port(socket.SOCK_DGRAM)],  # nobody there: a lone MASTER
        key_file=key,
        server="python",
        extra=(
            '[[probe]]\nname = "web"\ntype = "http"\n'
            f'url = "http://127.0.0.1:{{http}}/"\ninterval = "250ms"\ntimeout = "250ms"\nfall = 3\n'
            f'[[sync]]\nid = "data"\npath = "{data}"\nlisten = "127.0.0.1:{sync_port}"\n'
        ),
    )
    http_port = int(node.config.read_text().split('ready_tcp = "127.0.0.1:')[1].split('"')[0])
    node.config.write_text(node.config.read_text().replace("{http}", str(http_port)))
    base = f"http://127.0.0.1:{node.status_port}"
    with node:
        node.start()
        wait_until(lambda: node.state() == "MASTER" or not node.running, timeout=30, what="lone node MASTER")
        assert node.state() == "MASTER", node.tail()
        pid = node.pid
        assert soft_nofile(pid) >= min(TARGET, resource.getrlimit(resource.RLIMIT_NOFILE)[1])  # raised at start
        subprocess.run(["prlimit", f"--pid={pid}", f"--nofile={LIMIT}:{LIMIT}"], check=True)
        assert soft_nofile(pid) == LIMIT
        runs_before = node.status()["probes"]["web"]["runs"]

        with idle_flood(node.status_port, FLOOD), idle_flood(sync_port, FLOOD):
            peak = 0
            served = 0
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline:
                peak = max(peak, open_fds(pid))
                code, body = get(f"http://127.0.0.1:{http_port}/", timeout=1.0)
                served += code == 200 and body == "edge-a"
                assert node.running, node.tail()
            print(f"peak descriptors during the flood: {peak}, service answers: {served}")
            assert peak <= MAX_FDS, f"{peak} descriptors open during the flood"
            assert served >= 3, "the service stopped answering during the flood"

        # the flood is gone: the status endpoint answers and nothing moved
        wait_until(lambda: node.state() == "MASTER", timeout=40, what="status endpoint answering again")
        status = node.status()
        web = status["probes"]["web"]
        assert web["healthy"] and web["runs"] > runs_before + 5, web
        log = node.tail(100_000)
        assert "FAULT" not in log and "Too many open files" not in log, log
        code, metrics = get(f"{base}/metrics", timeout=2.0)
        assert code == 200 and "process_open_fds" in metrics
        open_now = float(next(line.split()[1] for line in metrics.splitlines() if line.startswith("process_open_fds")))
        assert 0 < open_now <= MAX_FDS
        assert open_fds(pid) <= MAX_FDS


def test_raise_nofile_raises_the_soft_limit_and_never_lowers_it() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        before, after = raise_nofile()
        assert before == 256
        expected = TARGET if hard == resource.RLIM_INFINITY else min(TARGET, hard)
        assert after == expected == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        # a limit already above the target is left alone
        high = TARGET * 2 if hard == resource.RLIM_INFINITY else max(min(hard, TARGET * 2), TARGET)
        resource.setrlimit(resource.RLIMIT_NOFILE, (high, hard))
        assert raise_nofile() == (high, high)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_raise_nofile_warns_when_the_hard_limit_is_low(caplog: pytest.LogCaptureFixture) -> None:
    """In a child: lowering the hard limit cannot be undone in this process."""
    code = (
        "import resource, logging; from hasup._rlimit import raise_nofile; logging.basicConfig();"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (128, 256)); print(raise_nofile())"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(128, 256)"
    assert f"below {LOW}" in result.stderr and "LimitNOFILE" in result.stderr
