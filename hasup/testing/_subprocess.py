"""Real ``python -m hasup run`` processes on loopback, for end-to-end tests and benchmarks.

:class:`HasupProcess` starts one, reads its ``/status`` over HTTP and stops it
cleanly; :func:`loopback_node` builds the usual test node (a command-backend HTTP
server as the service, the status endpoint on a free port); :class:`AnswerSampler`
records, every 10 ms, which nodes' services answer, so a test can assert that two
never did at once.
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
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from ._harness import TomlValue, config_text

__all__ = [
    "AnswerSampler",
    "HasupProcess",
    "free_port",
    "free_ports",
    "http_answers",
    "http_service",
    "loopback_node",
    "write_key_file",
]


def free_ports(count: int, kind: socket.SocketKind = socket.SOCK_STREAM, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports free on ``host`` now (held open together, so they differ)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, kind)
            sock.bind((host, 0))
            socks.append(sock)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for sock in socks:
            sock.close()


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port free on ``host`` now (``socket.SOCK_DGRAM`` for a UDP one)."""
    return free_ports(1, kind, host)[0]


def http_answers(port: int, *, host: str = "127.0.0.1", path: str = "/", timeout: float = 0.2) -> bool:
    """Does an HTTP server on ``host:port`` answer ``GET path`` with 200 right now?"""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=timeout) as response:
            return bool(response.status == 200)
    except (OSError, http.client.HTTPException):
        return False


def write_key_file(path: Path) -> Path:
    """Write a new random group key to ``path`` (mode 0600, as ``hasup keygen`` does)."""
    path.write_text(secrets.token_hex(32) + "\n")
    path.chmod(0o600)
    return path


def http_service(
    port: int,
    root: Path,
    *,
    server: Literal["auto", "busybox", "python"] = "auto",
    host: str = "127.0.0.1",
    **extra: TomlValue,
) -> dict[str, TomlValue]:
    """A ``[service]`` table: the command backend running a static HTTP server on
    ``host:port`` that serves ``root``; ready once the port accepts connections.

    ``server="auto"`` takes ``busybox httpd`` when installed (it starts in a few
    milliseconds, so failover figures show hasup's own latency), else
    ``python -m http.server``. ``extra`` adds keys (``stop_timeout="5s"``...).
    """
    busybox = shutil.which("busybox") if server != "python" else None
    if server == "busybox" and busybox is None:
        raise FileNotFoundError("busybox is not installed")
    if busybox is not None:
        argv = [busybox, "httpd", "-f", "-p", f"{host}:{port}", "-h", str(root)]
    else:
        argv = [sys.executable, "-m", "http.server", str(port), "--bind", host, "--directory", str(root)]
    table: dict[str, TomlValue] = {
        "backend": "command",
        "run": argv,
        "ready_tcp": f"{host}:{port}",
        "output": "discard",
    }
    table.update(extra)
    return table


class HasupProcess:
    """One ``python -m hasup run -c CONFIG`` subprocess whose status endpoint listens
    on ``127.0.0.1:status_port``.

    Its output goes to ``log`` (appended; ``None`` discards it). :meth:`start` may be
    called again after the process ended (a restart of hasup). Use it as a context
    manager, or call :meth:`terminate` in a ``finally``, so that nothing outlives the
    test.
    """

    def __init__(
        self,
        config: Path,
        *,
        status_port: int,
        name: str | None = None,
        log: Path | None = None,
        log_level: str | None = None,
        env: Mapping[str, str | None] | None = None,
        http_port: int | None = None,
        python: str = sys.executable,
    ) -> None:
        self.config = config
        self.status_port = status_port
        self.name = name or config.stem
        self.log = log
        self.log_level = log_level
        #: Environment changes for the process: a value of ``None`` removes the variable.
        self.env = dict(env or {})
        #: The port of the node's own HTTP service, if it has one (see :meth:`answers`).
        self.http_port = http_port
        self.python = python
        self.proc: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start ``hasup run`` (it reads the config file now)."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        argv = [self.python, "-m", "hasup", "run", "-c", str(self.config)]
        if self.log_level is not None:
            argv += ["--log-level", self.log_level]
        env = dict(os.environ)
        for key, value in self.env.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        if self.log is None:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
            )
            return
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env)

    @property
    def running(self) -> bool:
        """Is the process alive (started and not exited)?"""
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} was never started")
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc is not None else None

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` (``signal.SIGHUP`` reloads the config, ``SIGTERM`` resigns)."""
        if self.proc is None:
            raise RuntimeError(f"{self.name} was never started")
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 10.0) -> int:
        """Wait for the process to exit; its return code."""
        if self.proc is None:
            raise RuntimeError(f"{self.name} was never started")
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """``kill -9`` (no resignation: the peers notice only by the missing heartbeats)."""
        if self.running:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)

    def terminate(self, timeout: float = 10.0) -> int | None:
        """Clean stop: SIGTERM (hasup stops its service and resigns), SIGKILL if it has
        not exited after ``timeout`` seconds. The return code, ``None`` if never started."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def __enter__(self) -> HasupProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.terminate()

    # ------------------------------------------------------------------ observing
    def status(self, timeout: float = 0.5) -> dict[str, Any]:
        """The ``/status`` document, or ``{}`` while the endpoint does not answer."""
        try:
            url = f"http://127.0.0.1:{self.status_port}/status"
            with urllib.request.urlopen(url, timeout=timeout) as response:
                doc: dict[str, Any] = json.load(response)
                return doc
        except (OSError, http.client.HTTPException, ValueError):
            return {}

    def state(self) -> str | None:
        """The node's state name (``"MASTER"``...), ``None`` while it does not answer."""
        state = self.status().get("state")
        return str(state) if state is not None else None

    def answers(self, timeout: float = 0.2) -> bool:
        """Does the node's own HTTP service (``http_port``) answer 200 now?"""
        if self.http_port is None:
            raise RuntimeError(f"{self.name} has no http_port")
        return http_answers(self.http_port, timeout=timeout)

    def tail(self, chars: int = 3000) -> str:
        """The end of the log (empty without one)."""
        if self.log is None or not self.log.exists():
            return ""
        return self.log.read_text(errors="replace")[-chars:]


def loopback_node(
    workdir: Path,
    name: str,
    priority: int,
    udp: int,
    peers: Sequence[int],
    *,
    advert: str = "100ms",
    group_id: int = 7,
    key_file: Path | None = None,
    server: Literal["auto", "busybox", "python"] = "auto",
    service: Mapping[str, TomlValue] | None = None,
    extra_node: str = "",
    extra_group: str = "",
    coordinator: Mapping[str, TomlValue] | None = None,
    extra: str = "",
    log_level: str | None = None,
) -> HasupProcess:
    """A node on 127.0.0.1 whose service is a static HTTP server (see
    :func:`http_service`) serving a page with the node's name; not started.

    It writes ``NAME.toml``, ``www-NAME/`` and (when started) ``NAME.log`` under
    ``workdir``, and keeps its state in ``state-NAME/``. ``udp`` is its group port,
    ``peers`` the others'; the HTTP and status ports are free ones. ``service`` adds
    or overrides keys of the ``[service]`` table; the other keywords go to
    :func:`config_text`. Without ``key_file`` the inline test key is used.
    """
    http_port, status_port = free_ports(2)
    www = workdir / f"www-{name}"
    www.mkdir(parents=True, exist_ok=True)
    (www / "index.html").write_text(name)
    table = http_service(http_port, www, server=server)
    table.update(service or {})
    text = config_text(
        name,
        priority,
        f"127.0.0.1:{udp}",
        [f"127.0.0.1:{p}" for p in peers],
        advert=advert,
        group_id=group_id,
        key_file=key_file,
        state_dir=workdir / f"state-{name}",
        extra_node=extra_node,
        extra_group=extra_group,
        service=table,
        status={"listen": f"127.0.0.1:{status_port}"},
        coordinator=coordinator,
        extra=extra,
    )
    config = workdir / f"{name}.toml"
    config.write_text(text)
    return HasupProcess(
        config,
        status_port=status_port,
        name=name,
        log=workdir / f"{name}.log",
        log_level=log_level,
        http_port=http_port,
    )


class AnswerSampler:
    """A thread that checks which nodes' HTTP services answer, every ``interval`` s.

    ``with AnswerSampler({"a": port_a, "b": port_b}) as sampler: ...``; afterwards
    :meth:`dual_active` lists the moments (``time.monotonic()``) at which two or more
    answered, and :attr:`samples` holds ``(time, names answering)`` for each round.
    """

    def __init__(self, ports: Mapping[str, int], *, interval: float = 0.01, timeout: float = 0.2) -> None:
        self.ports = dict(ports)
        self.interval = interval
        self.timeout = timeout
        self.samples: list[tuple[float, set[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hasup-answer-sampler", daemon=True)

    @classmethod
    def of(cls, nodes: Sequence[HasupProcess], **kw: float) -> AnswerSampler:
        """A sampler of the ``http_port`` of each node."""
        ports = {n.name: n.http_port for n in nodes if n.http_port is not None}
        return cls(ports, **kw)

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic()
            up = {name for name, port in self.ports.items() if http_answers(port, timeout=self.timeout)}
            self.samples.append((t, up))
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def dual_active(self) -> list[float]:
        """Times of the samples in which two or more services answered."""
        return [t for t, up in self.samples if len(up) > 1]

    def __enter__(self) -> AnswerSampler:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
