"""Helpers for the keepalived-migration end-to-end test (tests/test_migration_e2e.py).

* :class:`NodeNet` -- a network namespace per node, joined by one veth pair (``eth0``
  on both sides, created directly between the namespaces: nothing is added to the root
  namespace), with the addresses of the seed recipe.
* :class:`SystemdInNs` -- the real-systemd fixture (``tests/fixtures/systemd``) booted
  inside such a namespace. ``ip netns exec`` remounts ``/sys`` (an empty sysfs without
  the host's cgroup trees), which the fixture needs, so it is started with
  ``nsenter --net=/run/netns/NS``: only the network namespace changes.
* :class:`Sampler` -- one persistent sampler process per namespace (the observer's
  sampler from tests/cluster/observer.py) that GETs its node's service every 10 ms;
  the samples become a :class:`~tests.cluster.observer.Timeline`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from tests.cluster.observer import _SAMPLER_SRC, Timeline

REPO_ROOT = Path(__file__).resolve().parents[1]
SYSTEMD_FIXTURE = REPO_ROOT / "tests" / "fixtures" / "systemd"
NS_PREFIX = "hasupmig"
NS_RE = re.compile(rf"^{NS_PREFIX}(\d+)-")


def run(
    argv: Sequence[str], *, timeout: float = 60.0, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=dict(env) if env is not None else None,
    )


def _must(argv: Sequence[str]) -> None:
    proc = run(argv)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} -> {proc.returncode}: {proc.stderr.strip()}")


def netns_unavailable() -> str | None:
    """Why this test's namespaces cannot be made here, or ``None``."""
    if os.geteuid() != 0:
        return "not root"
    for tool in ("ip", "nsenter", "busctl", "bash"):
        if shutil.which(tool) is None:
            return f"{tool!r} not installed"
    name = f"{NS_PREFIX}{os.getpid()}-probe"
    try:
        proc = run(["ip", "netns", "add", name])
        if proc.returncode != 0:
            return f"ip netns add failed: {proc.stderr.strip()}"
    finally:
        run(["ip", "netns", "del", name])
    return None


def _ns_pids(ns: str) -> list[int]:
    return [int(t) for t in run(["ip", "netns", "pids", ns]).stdout.split() if t.isdigit()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def delete_namespaces(names: Sequence[str]) -> None:
    """Kill -9 whatever still runs in the namespaces, then delete them (veths go along)."""
    for ns in names:
        for pid in _ns_pids(ns):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    for ns in names:
        while time.monotonic() < deadline and _ns_pids(ns):
            time.sleep(0.02)
        run(["ip", "netns", "del", ns])


def remove_stale() -> None:
    """Namespaces of an earlier run of this test whose process is gone."""
    names = [line.split()[0] for line in run(["ip", "netns", "list"]).stdout.splitlines() if line.strip()]
    stale = [n for n in names if (m := NS_RE.match(n)) and not _pid_alive(int(m.group(1)))]
    if stale:
        delete_namespaces(stale)


class NodeNet:
    """Namespaces ``hasupmig<pid>-<role>`` joined by a veth pair named ``eth0`` on both ends."""

    def __init__(self, addrs: Mapping[str, str], prefix_len: int = 24) -> None:
        if len(addrs) != 2:
            raise ValueError("a veth pair joins two namespaces")
        remove_stale()
        self.addrs = dict(addrs)
        self.ns = {role: f"{NS_PREFIX}{os.getpid()}-{role}" for role in addrs}
        self.created: list[str] = []
        try:
            for ns in self.ns.values():
                _must(["ip", "netns", "add", ns])
                self.created.append(ns)
            a, b = self.ns.values()
            _must(["ip", "-n", a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b])
            for role, ns in self.ns.items():
                _must(["ip", "-n", ns, "link", "set", "lo", "up"])
                _must(["ip", "-n", ns, "addr", "add", f"{self.addrs[role]}/{prefix_len}", "dev", "eth0"])
                _must(["ip", "-n", ns, "link", "set", "eth0", "up"])
        except BaseException:
            self.close()
            raise

    def exec_argv(self, role: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns[role], *argv]

    def run(
        self, role: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        return run(self.exec_argv(role, argv), env=env, timeout=timeout)

    def http_get(self, role: str, url: str, timeout: float = 5.0) -> tuple[int, str]:
        """One GET from inside the namespace: (status, body); status 0 if unreachable."""
        src = (
            "import sys, urllib.request, urllib.error\n"
            "try:\n"
            f"    r = urllib.request.urlopen(sys.argv[1], timeout={timeout})\n"
            "    print(r.status); sys.stdout.write(r.read().decode())\n"
            "except urllib.error.HTTPError as e:\n"
            "    print(e.code); sys.stdout.write(e.read().decode())\n"
            "except OSError as e:\n"
            "    print(0); sys.stdout.write(repr(e))\n"
        )
        out = self.run(role, [sys.executable, "-I", "-c", src, url], timeout=timeout + 30).stdout
        status, _, body = out.partition("\n")
        return (int(status) if status.strip().isdigit() else 0), body

    def close(self) -> None:
        delete_namespaces(list(self.created))
        self.created.clear()


class SystemdInNs:
    """tests/fixtures/systemd/setup.sh DIR, run inside network namespace ``ns``."""

    def __init__(self, ns: str, directory: Path) -> None:
        self.ns = ns
        self.dir = directory
        self.bus = f"unix:path={directory}/bus/system_bus_socket"

    def start(self) -> None:
        proc = run(
            ["nsenter", f"--net=/run/netns/{self.ns}", "bash", str(SYSTEMD_FIXTURE / "setup.sh"), str(self.dir)],
            timeout=300,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"systemd fixture in {self.ns} failed: {proc.stderr.strip()[-2000:]}")

    def stop(self) -> None:
        run(["bash", str(SYSTEMD_FIXTURE / "teardown.sh"), str(self.dir)], timeout=60)

    def host_pids(self, unit: str) -> list[int]:
        """Host pids of the unit's processes, from its cgroup (bus pids are namespace pids)."""
        cgroup = Path((self.dir / "cgroup").read_text().strip())
        try:
            return [int(p) for p in (cgroup / "system.slice" / unit / "cgroup.procs").read_text().split()]
        except FileNotFoundError:
            return []

    def console_tail(self, n: int = 30) -> str:
        try:
            return "\n".join((self.dir / "log" / "console.log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class Sampler:
    """Per-namespace samplers of each node's service (HTTP 200 = serving), every ``interval``."""

    def __init__(self, net: NodeNet, port: int, interval: float = 0.01) -> None:
        self.net = net
        self.port = port
        self.interval = interval
        self._cond = threading.Condition()
        self._up: dict[str, list[tuple[float, bool]]] = {role: [] for role in net.ns}
        self._marks: list[tuple[float, str]] = []
        self._procs: list[subprocess.Popen[bytes]] = []
        self._threads: list[threading.Thread] = []

    def start(self, timeout: float = 15.0) -> None:
        for role in self.net.ns:
            argv = [sys.executable, "-I", "-u", "-c", _SAMPLER_SRC, role, self.net.addrs[role], str(self.port)]
            argv += [str(self.interval), "-", "1"]
            proc = subprocess.Popen(
                self.net.exec_argv(role, argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            self._procs.append(proc)
            assert proc.stdout is not None
            thread = threading.Thread(target=self._reader, args=(role, proc.stdout), daemon=True)
            thread.start()
            self._threads.append(thread)
        deadline = time.monotonic() + timeout
        with self._cond:
            while not all(self._up.values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("samplers did not start")
                self._cond.wait(left)

    def _reader(self, role: str, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            kind, _, rest = raw.decode(errors="replace").strip().partition(" ")
            if kind != "S":
                continue
            with contextlib.suppress(ValueError):
                t, ok = rest.split()
                with self._cond:
                    self._up[role].append((float(t), ok == "1"))
                    self._cond.notify_all()

    def stop(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
            if proc.stdout is not None:
                proc.stdout.close()
        for thread in self._threads:
            thread.join(5)
        self._procs.clear()
        self._threads.clear()

    def mark(self, label: str) -> float:
        t = time.monotonic()
        with self._cond:
            self._marks.append((t, label))
        return t

    def serving(self) -> set[str]:
        """Roles whose latest sample answered 200."""
        with self._cond:
            return {role for role, s in self._up.items() if s and s[-1][1]}

    def latest(self) -> float:
        """Time of the oldest of the roles' latest samples (both have sampled up to here)."""
        with self._cond:
            return min(s[-1][0] if s else float("-inf") for s in self._up.values())

    def timeline(self) -> Timeline:
        with self._cond:
            return Timeline(
                up={r: list(s) for r, s in self._up.items()}, marks=list(self._marks), interval=self.interval
            )
