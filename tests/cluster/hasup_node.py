"""Run ``python -m hasup run`` in testbed namespaces.

:class:`HasupCluster` writes one config per node (the runner's TOML contract), a
shared group key, a state dir per node, and starts the supervisors with
``sys.executable`` and the repository root on ``PYTHONPATH``. The service is the same
stand-in as keepalived's: ``python -m http.server 8085 --protocol HTTP/1.1`` (HTTP/1.1 so a
client can hold a keep-alive connection) bound to the node's address,
spawned and supervised by hasup's ``command`` backend.

It offers the same surface as :class:`~tests.cluster.keepalived.KeepalivedPair`
(``start``, ``boot``, ``kill_node``, ``kill_service``, ``kill_supervisor``,
``steady``, ``idle_pids``...) so the benchmark drives both alike.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .testbed import Node, Testbed

__all__ = ["REPO_ROOT", "HasupCluster", "hasup_runner_unavailable"]

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICE_PORT = 8085
STATUS_PORT = 9105
GROUP_PORT = 5405


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def hasup_runner_unavailable() -> str | None:
    """Why ``python -m hasup run`` cannot be used (yet), or ``None``."""
    if not (REPO_ROOT / "hasup" / "__main__.py").exists():
        return "hasup/__main__.py does not exist yet"
    proc = subprocess.run(
        [sys.executable, "-m", "hasup", "run", "--help"],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=REPO_ROOT,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        return f"`python -m hasup run --help` failed: {(proc.stderr or proc.stdout).strip()[-300:]}"
    return None


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(value)


def render_config(sections: dict[str, Any]) -> str:
    """TOML text: a dict is a table, a list of dicts an array of tables (``[[vip]]``)."""
    out = []
    for name, table in sections.items():
        for entry, header in [(t, f"[[{name}]]") for t in table] if isinstance(table, list) else [(table, f"[{name}]")]:
            out.append(header)
            out.extend(f"{key} = {_toml(val)}" for key, val in entry.items() if val is not None)
            out.append("")
    return "\n".join(out)


class HasupCluster:
    """hasup on every node of a testbed: node ``i`` has priority ``100 - 10*i``."""

    kind = "hasup"

    def __init__(
        self,
        bed: Testbed,
        *,
        advert_interval: str = "1s",
        preempt: bool = True,
        nodes: list[Node] | None = None,
        extra: dict[str, Any] | None = None,
        python: str = sys.executable,
        tag: str | None = None,
        bind: str | None = None,
    ) -> None:
        self.bed = bed
        self.advert_interval = advert_interval
        self.preempt = preempt
        self.nodes = list(nodes if nodes is not None else bed.nodes)
        self.master, self.backup = self.nodes[0], self.nodes[1]
        self.python = python
        self.tag = tag or f"hasup-{advert_interval}"
        self.extra = extra or {}
        #: The stand-in service's bind address (default: the node's own address).
        self.bind = bind
        self.root = bed.workdir / self.tag
        self.root.mkdir(parents=True, exist_ok=True)
        self.key_file = self.root / "group.key"
        fd = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(os.urandom(32).hex() + "\n")
        self.priorities = {n.name: 100 - 10 * i for i, n in enumerate(self.nodes)}
        for node in self.nodes:
            self.write_config(node)

    @property
    def label(self) -> str:
        return f"hasup {self.advert_interval}"

    # -- configuration --------------------------------------------------------------------
    def node_dir(self, node: Node) -> Path:
        return self.root / node.name

    def config_path(self, node: Node) -> Path:
        return self.node_dir(node) / "hasup.toml"

    def sections(self, node: Node) -> dict[str, dict[str, Any]]:
        d = self.node_dir(node)
        sections: dict[str, dict[str, Any]] = {
            "node": {
                "name": node.name,
                "priority": self.priorities[node.name],
                "preempt": self.preempt,
                "state_dir": str(d / "state"),
            },
            "group": {
                "id": 51,
                "listen": f"{node.addr}:{GROUP_PORT}",
                "peers": [f"{p.addr}:{GROUP_PORT}" for p in self.nodes if p is not node],
                "advert_interval": self.advert_interval,
                "key_file": str(self.key_file),
            },
            "service": {
                "backend": "command",
                "run": [
                    self.python,
                    "-m",
                    "http.server",
                    str(SERVICE_PORT),
                    "--protocol",
                    "HTTP/1.1",
                    "--bind",
                    self.bind or node.addr,
                    "--directory",
                    str(d / "www"),
                ],
                "ready_tcp": f"{node.addr}:{SERVICE_PORT}",
            },
            "status": {"listen": f"127.0.0.1:{STATUS_PORT}"},
        }
        for name, table in self.extra.items():
            if isinstance(table, list):
                sections[name] = list(table)  # an array of tables ([[vip]])
            else:
                sections.setdefault(name, {}).update(table)
        return sections

    def write_config(self, node: Node, **overrides: dict[str, Any]) -> Path:
        d = self.node_dir(node)
        (d / "state").mkdir(parents=True, exist_ok=True)
        (d / "www").mkdir(parents=True, exist_ok=True)
        (d / "www" / "index.html").write_text(f"{node.name}\n")
        sections = self.sections(node)
        for name, table in overrides.items():
            sections.setdefault(name, {}).update(table)
        path = self.config_path(node)
        path.write_text(render_config(sections))
        return path

    # -- lifecycle -----------------------------------------------------------------------
    def start_supervisor(self, node: Node) -> None:
        node.spawn(
            "hasup",
            [self.python, "-m", "hasup", "run", "-c", str(self.config_path(node))],
            env=_env(),
            cwd=self.node_dir(node),
        )

    def boot(self, node: Node) -> None:
        """Start hasup on ``node`` with this cluster's config (also after a kill)."""
        self.start_supervisor(node)

    def start(self) -> None:
        """Start the preferred node first, then the others."""
        for node in self.nodes:
            self.boot(node)

    def stop(self) -> None:
        """kill -9 of every supervisor, then of every service (a reset, not a graceful exit)."""
        for node in self.nodes:
            self.kill_supervisor(node)
            self.kill_service(node)
        deadline = time.monotonic() + 5
        for node in self.nodes:
            while node.listening_pids(SERVICE_PORT) and time.monotonic() < deadline:
                time.sleep(0.02)

    def wipe_state(self) -> None:
        """Forget every node's persisted state (a fresh install); only while hasup is stopped."""
        for node in self.nodes:
            state = self.node_dir(node) / "state"
            shutil.rmtree(state, ignore_errors=True)
            state.mkdir(parents=True)

    def resign(self, node: Node, timeout: float = 15.0) -> int | None:
        """SIGTERM: graceful resign (stops the service, a peer takes over at once)."""
        return node.terminate("hasup", timeout)

    def reload(self, node: Node, **overrides: dict[str, Any]) -> None:
        """Rewrite ``node``'s config with ``overrides`` and send SIGHUP."""
        self.write_config(node, **overrides)
        node.send_signal("hasup", signal.SIGHUP)

    # -- introspection -------------------------------------------------------------------
    def status(self, node: Node, timeout: float = 1.0) -> dict[str, Any] | None:
        proc = node.run(
            ["curl", "-s", "-m", str(timeout), f"http://127.0.0.1:{STATUS_PORT}/status"],
            check=False,
            timeout=timeout + 5,
        )
        if proc.returncode != 0 or not proc.stdout.strip():
            return None
        with contextlib.suppress(ValueError):
            data = json.loads(proc.stdout)
            return data if isinstance(data, dict) else None
        return None

    def states(self) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for node in self.nodes:
            st = self.status(node)
            out[node.name] = st.get("state") if st else None
        return out

    def steady(self) -> bool:
        """Preferred node MASTER, every other node BACKUP."""
        states = self.states()
        return states[self.master.name] == "MASTER" and all(
            states[n.name] == "BACKUP" for n in self.nodes if n is not self.master
        )

    def supervisor_pids(self, node: Node) -> list[int]:
        proc = node.procs.get("hasup")
        return [proc.pid] if proc is not None and proc.alive() else []

    def service_pids(self, node: Node) -> list[int]:
        return node.listening_pids(SERVICE_PORT)

    def idle_pids(self, node: Node) -> list[int]:
        return self.supervisor_pids(node)

    # -- faults ---------------------------------------------------------------------------
    def kill_supervisor(self, node: Node) -> None:
        """kill -9 of hasup only: its service keeps running (by design)."""
        proc = node.procs.get("hasup")
        if proc is not None and proc.alive():
            os.kill(proc.pid, signal.SIGCONT)
            node.kill("hasup")
            with contextlib.suppress(Exception):
                node.wait_exit("hasup", 5)

    def kill_service(self, node: Node, *, before: Callable[[], object] | None = None) -> list[int]:
        return node.kill_port(SERVICE_PORT, before=before)

    def kill_node(self, node: Node, *, before: Callable[[], object] | None = None) -> None:
        """Node loss: kill -9 of hasup and of its service at once."""
        pids = self.supervisor_pids(node) + self.service_pids(node)
        if before is not None:
            before()  # after the look-ups, right before the signals
        _freeze_then_kill(pids)
        with contextlib.suppress(Exception):
            node.wait_exit("hasup", 5)

    def freeze(self, node: Node) -> None:
        node.stop("hasup")

    def thaw(self, node: Node) -> None:
        node.cont("hasup")

    def log(self, node: Node) -> str:
        proc = node.procs.get("hasup")
        if proc is None:
            return ""
        with contextlib.suppress(OSError):
            return proc.log_path.read_text(errors="replace")
        return ""


def _freeze_then_kill(pids: list[int]) -> None:
    """SIGSTOP every process first, then SIGKILL: none can react to another's death.

    (keepalived's parent would respawn a killed VRRP child; a VRRP child outliving its
    parent sends a priority-0 advert; hasup would notice its service die.)
    """
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
