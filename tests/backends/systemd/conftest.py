"""A real, throw-away systemd (PID 1 of its own namespaces) with its own system bus.

``tests/fixtures/systemd/setup.sh`` boots it (about 0.3 s) and ``teardown.sh`` powers
it off; both need root. The instance shares the host network namespace, so the HTTP
units listen on free loopback ports picked here.

:func:`systemd_booted` and :class:`HasupProcess` are also used by
``bench/systemd_failover.py``.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests._support import missing_component

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "systemd"

HTTP_UNIT = "hasup-http.service"
FAIL_UNIT = "hasup-fail.service"
RESTART_UNIT = "hasup-restart.service"
STUBBORN_UNIT = "hasup-stubborn.service"
MISSING_UNIT = "hasup-does-not-exist.service"
# Two stand-ins for NeuronEX, one per supervisor of the two-node failover tests.
NEURONEX_UNITS = ("neuronex-a.service", "neuronex-b.service")
_MANAGER = ("org.freedesktop.systemd1", "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
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
    neuronex_ports: dict[str, int] = field(default_factory=dict)

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


def write_units(
    units: Path, *, http_port: int, restart_port: int, www: Path, neuronex_ports: dict[str, int]
) -> None:
    http = f"/usr/bin/python3 -m http.server --bind 127.0.0.1 {{port}} --directory {www}"
    for unit, port in neuronex_ports.items():
        # Restart=no, disabled: only hasup starts it (restart_by = "hasup"), as documented
        # for NeuronEX in examples/neuronex-systemd/.
        (units / unit).write_text(
            f"[Unit]\nDescription=stand-in for NeuronEX ({unit})\n"
            f"[Service]\nType=simple\nExecStart={http.format(port=port)}\nRestart=no\n"
        )
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


class SystemdUnavailable(Exception):
    """The throw-away systemd cannot be booted here (not root, no apt, setup failed)."""


@contextmanager
def systemd_booted(prefix: str = "hasup-systemd-") -> Iterator[SystemdInstance]:
    """Boot a throw-away systemd with the test units; power it off and remove it after."""
    if os.geteuid() != 0:
        raise SystemdUnavailable("the systemd fixture needs root (unshare, mounts, cgroups)")
    for tool in ("apt-get", "dpkg-query"):
        if shutil.which(tool) is None:
            raise SystemdUnavailable(f"{tool} not found: the fixture installs its packages with apt")
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)  # the non-root test client must reach the bus socket
    http_port, restart_port = free_port(), free_port()
    neuronex_ports = {unit: free_port() for unit in NEURONEX_UNITS}
    try:
        setup = subprocess.run(
            [str(FIXTURES / "setup.sh"), str(root), str(http_port)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if setup.returncode != 0:
            raise SystemdUnavailable(f"setup.sh failed: {setup.stderr.strip()[-800:]}")
        www = root / "www"
        www.mkdir()
        (www / "index.html").write_text("hasup test unit\n")
        units = root / "units"
        write_units(
            units, http_port=http_port, restart_port=restart_port, www=www, neuronex_ports=neuronex_ports
        )
        instance = SystemdInstance(
            dir=root,
            bus=f"unix:path={root}/bus/system_bus_socket",
            init_pid=int((root / "init.pid").read_text()),
            cgroup=Path((root / "cgroup").read_text().strip()),
            http_port=http_port,
            restart_port=restart_port,
            neuronex_ports=neuronex_ports,
        )
        instance.reload()
        yield instance
    finally:
        subprocess.run(
            [str(FIXTURES / "teardown.sh"), str(root)], capture_output=True, timeout=60, check=False
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def systemd_instance() -> Iterator[SystemdInstance]:
    with ExitStack() as stack:
        try:
            instance = stack.enter_context(systemd_booted())
        except SystemdUnavailable as exc:
            missing_component("systemd", str(exc))
        yield instance


# -- two `python -m hasup run` processes, each managing its own unit ----------------------


def answers(port: int, timeout: float = 0.2) -> bool:
    """Does the HTTP server on ``port`` answer 200 right now?"""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=timeout) as response:
            return bool(response.status == 200)
    except (OSError, http.client.HTTPException):
        return False


class HasupProcess:
    """One ``python -m hasup run`` supervising one unit of the fixture's systemd.

    ``bus_in_config`` selects how the bus is found: the ``bus`` key of ``[service]``, or
    ``DBUS_SYSTEM_BUS_ADDRESS`` in the environment (the way the example's unit would
    pick up a non-default bus).
    """

    def __init__(
        self,
        instance: SystemdInstance,
        workdir: Path,
        *,
        name: str,
        priority: int,
        unit: str,
        udp: int,
        peer_udp: int,
        key_file: Path,
        advert: str,
        fault_holddown: str,
        bus_in_config: bool,
    ) -> None:
        self.instance = instance
        self.name = name
        self.unit = unit
        self.port = instance.neuronex_ports[unit]
        self.status_port = free_port()
        self.state_dir = workdir / f"state-{name}"
        self.config = workdir / f"{name}.toml"
        self.log = workdir / f"{name}.log"
        self.bus_in_config = bus_in_config
        bus = f'bus = "{instance.bus}"' if bus_in_config else ""
        self.config.write_text(
            textwrap.dedent(
                f"""
                [node]
                name = "{name}"
                priority = {priority}
                preempt = true
                preempt_delay = "0s"
                state_dir = "{self.state_dir}"
                [group]
                id = 51
                listen = "127.0.0.1:{udp}"
                peers = ["127.0.0.1:{peer_udp}"]
                key_file = "{key_file}"
                advert_interval = "{advert}"
                fault_holddown = "{fault_holddown}"
                [service]
                backend = "systemd"
                unit = "{unit}"
                start_timeout = "30s"
                stop_timeout = "10s"
                restart_by = "hasup"
                {bus}
                [status]
                listen = "127.0.0.1:{self.status_port}"
                """
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(os.environ)
        env.pop("NOTIFY_SOCKET", None)
        if self.bus_in_config:
            env.pop("DBUS_SYSTEM_BUS_ADDRESS", None)
        else:
            env["DBUS_SYSTEM_BUS_ADDRESS"] = self.instance.bus
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hasup", "run", "-c", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=env,
            )

    def status(self) -> dict[str, object]:
        try:
            url = f"http://127.0.0.1:{self.status_port}/status"
            with urllib.request.urlopen(url, timeout=0.5) as response:
                doc: dict[str, object] = json.load(response)
                return doc
        except (OSError, ValueError):
            return {}

    def state(self) -> object:
        return self.status().get("state")

    def answers(self) -> bool:
        return answers(self.port)

    def unit_pids(self) -> list[int]:
        return self.instance.host_pids(self.unit)

    def kill(self) -> None:
        """SIGKILL hasup (its unit keeps running: systemd owns it)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def terminate(self, timeout: float = 30) -> int | None:
        """SIGTERM: hasup stops its unit and resigns. SIGKILL if it does not exit."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def hasup_pair(
    instance: SystemdInstance, workdir: Path, *, advert: str, fault_holddown: str
) -> tuple[HasupProcess, HasupProcess]:
    """edge-a (priority 100, preferred) on neuronex-a, edge-b (90) on neuronex-b; not started.

    edge-a finds the bus through the ``bus`` key, edge-b through DBUS_SYSTEM_BUS_ADDRESS.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    key_file = workdir / "group.key"
    key_file.write_text(secrets.token_hex(32) + "\n")
    key_file.chmod(0o600)
    udp_a, udp_b = free_udp_port(), free_udp_port()
    nodes = []
    for name, priority, unit, udp, peer_udp, bus_in_config in (
        ("edge-a", 100, NEURONEX_UNITS[0], udp_a, udp_b, True),
        ("edge-b", 90, NEURONEX_UNITS[1], udp_b, udp_a, False),
    ):
        nodes.append(
            HasupProcess(
                instance,
                workdir,
                name=name,
                priority=priority,
                unit=unit,
                udp=udp,
                peer_udp=peer_udp,
                key_file=key_file,
                advert=advert,
                fault_holddown=fault_holddown,
                bus_in_config=bus_in_config,
            )
        )
    return nodes[0], nodes[1]


def stop_pair(instance: SystemdInstance, nodes: tuple[HasupProcess, ...]) -> None:
    """Leave nothing running: SIGTERM the supervisors, then stop their units regardless.

    Non-masters go first, so the master's resignation does not make a peer claim.
    """
    for node in sorted(nodes, key=lambda n: n.state() == "MASTER"):
        node.terminate()
    instance.systemctl("stop", *(node.unit for node in nodes))
    instance.systemctl("reset-failed", *(node.unit for node in nodes))
