"""A real, throw-away systemd (PID 1 of its own namespaces) with its own system bus.

``tests/fixtures/systemd/setup.sh`` boots it (about 0.3 s) and ``teardown.sh`` powers
it off; both need root. The instance shares the host network namespace, so the HTTP
units listen on free loopback ports picked here.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests._support import missing_component

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "systemd"

HTTP_UNIT = "hasup-http.service"
FAIL_UNIT = "hasup-fail.service"
RESTART_UNIT = "hasup-restart.service"
STUBBORN_UNIT = "hasup-stubborn.service"
MISSING_UNIT = "hasup-does-not-exist.service"
_MANAGER = ("org.freedesktop.systemd1", "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class SystemdInstance:
    dir: Path
    bus: str
    init_pid: int
    cgroup: Path
    http_port: int
    restart_port: int

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": self.bus}

    def host_pids(self, unit: str) -> list[int]:
        """Host pids of a unit's processes (pids on the bus are namespace pids)."""
        procs = self.cgroup / "system.slice" / unit / "cgroup.procs"
        try:
            return [int(p) for p in procs.read_text().split()]
        except FileNotFoundError:
            return []

    def kill_main(self, unit: str, sig: int = signal.SIGKILL) -> None:
        pids = self.host_pids(unit)
        assert pids, f"{unit} has no processes"
        os.kill(pids[0], sig)

    def systemctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """systemctl inside the instance (it talks to /run/systemd/private there)."""
        return subprocess.run(
            ["nsenter", "-t", str(self.init_pid), "-m", "-p", "systemctl", *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def reload(self) -> None:
        subprocess.run(
            ["busctl", "--system", "call", *_MANAGER, "Reload"],
            env=self.env,
            check=True,
            capture_output=True,
            timeout=30,
        )


def write_units(units: Path, *, http_port: int, restart_port: int, www: Path) -> None:
    http = f"/usr/bin/python3 -m http.server --bind 127.0.0.1 {{port}} --directory {www}"
    (units / HTTP_UNIT).write_text(
        "[Unit]\nDescription=stand-in for NeuronEX\n"
        f"[Service]\nType=simple\nExecStart={http.format(port=http_port)}\nRestart=no\n"
    )
    # Type=notify: the start job itself fails when the process exits before READY=1,
    # so start() sees the failure deterministically (with Type=simple the job is
    # "done" at fork and the exit arrives later, through watch()).
    (units / FAIL_UNIT).write_text("[Service]\nType=notify\nExecStart=/bin/false\n")
    (units / RESTART_UNIT).write_text(
        "[Unit]\nStartLimitIntervalSec=0\n"
        f"[Service]\nType=simple\nExecStart={http.format(port=restart_port)}\n"
        "Restart=on-failure\nRestartSec=200ms\n"
    )
    # Ignores SIGTERM (inherited SIG_IGN survives exec), so only SIGKILL stops it.
    (units / STUBBORN_UNIT).write_text(
        "[Service]\nType=notify\nNotifyAccess=all\nTimeoutStopSec=60s\n"
        "ExecStart=/bin/sh -c \"trap '' TERM; systemd-notify --ready; exec sleep infinity\"\n"
    )


@pytest.fixture(scope="session")
def systemd_instance() -> Iterator[SystemdInstance]:
    if os.geteuid() != 0:
        missing_component("systemd", "the systemd fixture needs root (unshare, mounts, cgroups)")
    for tool in ("apt-get", "dpkg-query"):
        if shutil.which(tool) is None:
            missing_component("systemd", f"{tool} not found: the fixture installs its packages with apt")
    root = Path(tempfile.mkdtemp(prefix="hasup-systemd-"))
    root.chmod(0o755)  # the non-root test client must reach the bus socket
    http_port, restart_port = free_port(), free_port()
    try:
        setup = subprocess.run(
            [str(FIXTURES / "setup.sh"), str(root), str(http_port)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if setup.returncode != 0:
            missing_component("systemd", f"setup.sh failed: {setup.stderr.strip()[-800:]}")
        www = root / "www"
        www.mkdir()
        (www / "index.html").write_text("hasup test unit\n")
        write_units(root / "units", http_port=http_port, restart_port=restart_port, www=www)
        instance = SystemdInstance(
            dir=root,
            bus=f"unix:path={root}/bus/system_bus_socket",
            init_pid=int((root / "init.pid").read_text()),
            cgroup=Path((root / "cgroup").read_text().strip()),
            http_port=http_port,
            restart_port=restart_port,
        )
        instance.reload()
        yield instance
    finally:
        subprocess.run(
            [str(FIXTURES / "teardown.sh"), str(root)], capture_output=True, timeout=60, check=False
        )
        shutil.rmtree(root, ignore_errors=True)
