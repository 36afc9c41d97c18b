"""A multi-node network testbed built from Linux network namespaces.

``Testbed(n)`` creates one namespace per node plus a *switch* namespace holding a
bridge; every node gets a veth whose other end is a port of that bridge. The veths
are created directly between namespaces, so nothing is ever added to the root
namespace. Names carry a per-run prefix (``hs<pid><k>-``), so parallel runs do not
clash; namespaces left behind by a dead run are removed by the next one.

Faults it can inject: kill -9 / SIGSTOP / SIGCONT of a process, kill -9 of whatever
listens on a port, link down/up (the node's veth, either end), ``tc netem``
loss/delay/duplicate/reorder, one-way drops with iptables, partition/heal, restart of
a node's process.

Teardown kills every process in the testbed's namespaces and deletes them (the veths
die with them). It runs from the context manager, from ``atexit`` and from
SIGTERM/SIGHUP; Ctrl-C unwinds through the context manager.

Everything here needs root and ``ip netns``; :func:`netns_unavailable` says why not.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

__all__ = [
    "PREFIX_RE",
    "NetemUnavailable",
    "Node",
    "Proc",
    "Testbed",
    "TestbedError",
    "leftovers",
    "list_netns",
    "netem_supported",
    "netns_unavailable",
    "remove_stale",
]

#: Namespaces of every testbed are named ``hs<pid><letter>-<role>``.
PREFIX_RE = re.compile(r"^hs(\d+)([a-z]+)-")
SUBNET = "10.77.0"
_counter = itertools.count()
_live: set[Testbed] = set()
_live_lock = threading.Lock()
_handlers_installed = False


class TestbedError(RuntimeError):
    """A testbed command failed."""

    __test__ = False  # not a pytest test class


class NetemUnavailable(TestbedError):
    """The kernel cannot emulate this impairment."""


_netem: bool | None = None


def netem_supported() -> bool:
    """Whether the kernel has ``sch_netem`` (probed once, in a scratch namespace)."""
    global _netem
    if _netem is None:
        ns = f"hs{os.getpid()}probe-netem"
        try:
            _run(["ip", "netns", "add", ns])
            _run(["ip", "-n", ns, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1"])
            probe = _run(
                [
                    "ip",
                    "netns",
                    "exec",
                    ns,
                    "tc",
                    "qdisc",
                    "add",
                    "dev",
                    "veth0",
                    "root",
                    "netem",
                    "delay",
                    "1ms",
                ],
                check=False,
            )
            _netem = probe.returncode == 0
        finally:
            _run(["ip", "netns", "del", ns], check=False)
    return _netem


def _run(argv: Sequence[str], *, check: bool = True, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise TestbedError(f"{' '.join(argv)} -> {proc.returncode}: {proc.stderr.strip()}")
    return proc


def netns_unavailable() -> str | None:
    """Return why namespaces cannot be used here, or ``None`` when they can."""
    if os.geteuid() != 0:
        return "not root"
    for tool in ("ip", "tc", "iptables"):
        if shutil.which(tool) is None:
            return f"{tool!r} not installed (apt-get install iproute2 iptables)"
    name = f"hs{os.getpid()}probe-x"
    try:
        _run(["ip", "netns", "add", name])
    except (TestbedError, OSError, subprocess.TimeoutExpired) as exc:
        return f"ip netns add failed: {exc}"
    finally:
        _run(["ip", "netns", "del", name], check=False)
    return None


def list_netns() -> list[str]:
    out = _run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def netns_pids(ns: str) -> list[int]:
    out = _run(["ip", "netns", "pids", ns], check=False).stdout
    return [int(tok) for tok in out.split() if tok.isdigit()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive for our purposes
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _kill_and_delete(namespaces: Iterable[str]) -> None:
    namespaces = list(namespaces)
    for ns in namespaces:
        for pid in netns_pids(ns):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    for ns in namespaces:
        while time.monotonic() < deadline and any(_pid_alive(p) for p in netns_pids(ns)):
            time.sleep(0.02)
    # node namespaces first, then the switch: each deletion takes its veths along
    for ns in sorted(namespaces, key=lambda n: n.endswith("-sw")):
        _run(["ip", "netns", "del", ns], check=False)


def remove_stale() -> list[str]:
    """Delete testbed namespaces whose creating process no longer exists."""
    stale = []
    for ns in list_netns():
        m = PREFIX_RE.match(ns)
        if m and not _pid_alive(int(m.group(1))):
            stale.append(ns)
    if stale:
        _kill_and_delete(stale)
    return stale


def leftovers(prefix: str) -> dict[str, list[str]]:
    """What is left of a testbed with this prefix: namespaces, root-namespace links, processes."""
    namespaces = [ns for ns in list_netns() if ns.startswith(prefix)]
    links = [
        line.split(":")[1].strip().split("@")[0]
        for line in _run(["ip", "-o", "link", "show"], check=False).stdout.splitlines()
        if prefix in line
    ]
    procs = [f"{pid}" for ns in namespaces for pid in netns_pids(ns)]
    return {"namespaces": namespaces, "links": links, "processes": procs}


@dataclass
class Proc:
    """A process the testbed started in a node namespace."""

    name: str
    argv: list[str]
    env: dict[str, str] | None
    cwd: str | None
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    stdout_pipe: bool = False

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def stdout(self) -> IO[bytes]:
        assert self.popen is not None
        assert self.popen.stdout is not None
        return self.popen.stdout


@dataclass
class Node:
    """One node: its namespace, address and the processes started in it."""

    bed: Testbed = field(repr=False)
    index: int
    name: str
    ns: str
    addr: str
    sw_port: str  # the switch-side veth, inside the switch namespace
    dev: str = "eth0"
    procs: dict[str, Proc] = field(default_factory=dict)

    # -- processes -------------------------------------------------------------------
    def argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv]

    def run(
        self, argv: Sequence[str], *, check: bool = True, timeout: float = 20.0
    ) -> subprocess.CompletedProcess[str]:
        return _run(self.argv(argv), check=check, timeout=timeout)

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        stdout_pipe: bool = False,
    ) -> Proc:
        """Start ``argv`` in this namespace as a new session; remember it under ``name``."""
        old = self.procs.get(name)
        if old is not None and old.alive():
            raise TestbedError(f"{self.name}: process {name!r} already running (pid {old.pid})")
        proc = Proc(
            name=name,
            argv=list(argv),
            env=dict(env) if env is not None else None,
            cwd=str(cwd) if cwd is not None else None,
            log_path=self.bed.workdir / f"{self.name}-{name}.log",
            stdout_pipe=stdout_pipe,
        )
        self.procs[name] = proc
        self._start(proc)
        return proc

    def _start(self, proc: Proc) -> None:
        log = open(proc.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            proc.popen = subprocess.Popen(
                self.argv(proc.argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if proc.stdout_pipe else log,
                stderr=log,
                env=proc.env,
                cwd=proc.cwd,
                start_new_session=True,
            )
        finally:
            log.close()

    def restart(self, name: str, *, kill_signal: int = signal.SIGKILL) -> Proc:
        """Kill (by default -9) the named process if alive and start it again, same argv."""
        proc = self.procs[name]
        if proc.alive():
            self.send_signal(name, kill_signal)
            self.wait_exit(name)
        self._start(proc)
        return proc

    def send_signal(self, name: str, sig: int) -> None:
        proc = self.procs[name]
        if proc.alive():
            os.kill(proc.pid, sig)

    def kill(self, name: str) -> None:
        self.send_signal(name, signal.SIGKILL)

    def stop(self, name: str) -> None:
        """Freeze the named process (SIGSTOP)."""
        self.send_signal(name, signal.SIGSTOP)

    def cont(self, name: str) -> None:
        self.send_signal(name, signal.SIGCONT)

    def wait_exit(self, name: str, timeout: float = 10.0) -> int:
        proc = self.procs[name]
        assert proc.popen is not None
        return proc.popen.wait(timeout)

    def terminate(self, name: str, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait, then SIGKILL. Returns the exit status."""
        proc = self.procs.get(name)
        if proc is None or proc.popen is None:
            return None
        if proc.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)
                os.kill(proc.pid, signal.SIGTERM)
            try:
                return proc.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
        return proc.popen.wait(5)

    def pids(self) -> list[int]:
        """Every live process in this namespace."""
        return [p for p in netns_pids(self.ns) if _pid_alive(p)]

    def listening_pids(self, port: int) -> list[int]:
        """PIDs of processes with a TCP socket listening on ``port`` in this namespace."""
        out = self.run(["ss", "-Hltnp", f"sport = :{port}"], check=False).stdout
        return sorted({int(m) for m in re.findall(r"pid=(\d+)", out)})

    def kill_port(
        self, port: int, sig: int = signal.SIGKILL, *, before: Callable[[], object] | None = None
    ) -> list[int]:
        """Send ``sig`` (kill -9 by default) to whatever listens on ``port``.

        ``before`` is called between the look-up and the signal (e.g. to mark the instant).
        """
        pids = self.listening_pids(port)
        if before is not None:
            before()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        return pids

    def kill_pidfile(self, path: str | os.PathLike[str], sig: int = signal.SIGKILL) -> int | None:
        try:
            pid = int(Path(path).read_text().strip())
        except (OSError, ValueError):
            return None
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        return pid

    # -- network faults -----------------------------------------------------------------
    def link_down(self, side: str = "node") -> None:
        """Take the node's veth down.

        ``side="node"``: its own end; ``"switch"``: the switch port (a cable pulled there).
        """
        self._link(side, "down")

    def link_up(self, side: str = "node") -> None:
        self._link(side, "up")

    def _link(self, side: str, state: str) -> None:
        if side == "node":
            _run(["ip", "-n", self.ns, "link", "set", self.dev, state])
        elif side == "switch":
            _run(["ip", "-n", self.bed.sw_ns, "link", "set", self.sw_port, state])
        else:
            raise ValueError(side)

    def netem(
        self,
        *,
        loss: float | None = None,
        delay_ms: float | None = None,
        jitter_ms: float | None = None,
        duplicate: float | None = None,
        reorder: float | None = None,
        direction: str = "both",
    ) -> str:
        """Impair the node's traffic. Percentages are 0..100. Returns the mechanism used.

        ``direction``: ``"egress"`` (packets the node sends), ``"ingress"`` (packets to it)
        or ``"both"``. Uses ``tc netem`` (ingress shaped at the switch port). Kernels built
        without ``sch_netem`` get an iptables fallback: loss with ``-m statistic``,
        duplication with ``-j TEE``; delay and reordering then raise
        :class:`NetemUnavailable`.
        """
        spec: list[str] = []
        if delay_ms is not None or reorder is not None:
            spec += ["delay", f"{delay_ms or 1}ms"]
            if jitter_ms:
                spec += [f"{jitter_ms}ms"]
        if loss is not None:
            spec += ["loss", f"{loss}%"]
        if duplicate is not None:
            spec += ["duplicate", f"{duplicate}%"]
        if reorder is not None:
            spec += ["reorder", f"{reorder}%", "50%"]
        if not spec:
            raise ValueError("netem needs at least one impairment")
        if netem_supported():
            for ns, dev in self._dirs(direction):
                _run(["ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", dev, "root", "netem", *spec])
            return "netem"
        if delay_ms is not None or reorder is not None:
            raise NetemUnavailable("this kernel has no sch_netem: delay/reorder cannot be emulated")
        self.netem_clear(direction)
        chains = {"egress": ["HSEM-OUT"], "ingress": ["HSEM-IN"], "both": ["HSEM-OUT", "HSEM-IN"]}[direction]
        for chain in chains:
            if loss:
                self.run(
                    [
                        "iptables",
                        "-w",
                        "-A",
                        chain,
                        "-m",
                        "statistic",
                        "--mode",
                        "random",
                        "--probability",
                        f"{loss / 100:.6f}",
                        "-j",
                        "DROP",
                    ]
                )
            if duplicate and chain == "HSEM-OUT":
                for peer in self.bed.nodes:
                    if peer is not self:
                        self.run(
                            [
                                "iptables",
                                "-w",
                                "-t",
                                "mangle",
                                "-A",
                                "HSEM-DUP",
                                "-d",
                                peer.addr,
                                "-m",
                                "statistic",
                                "--mode",
                                "random",
                                "--probability",
                                f"{duplicate / 100:.6f}",
                                "-j",
                                "TEE",
                                "--gateway",
                                peer.addr,
                            ]
                        )
        return "iptables"

    def netem_clear(self, direction: str = "both") -> None:
        if netem_supported():
            for ns, dev in self._dirs(direction):
                _run(["ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", dev, "root"], check=False)
            return
        if direction in ("egress", "both"):
            self.run(["iptables", "-w", "-F", "HSEM-OUT"], check=False)
            self.run(["iptables", "-w", "-t", "mangle", "-F", "HSEM-DUP"], check=False)
        if direction in ("ingress", "both"):
            self.run(["iptables", "-w", "-F", "HSEM-IN"], check=False)

    def _dirs(self, direction: str) -> list[tuple[str, str]]:
        out = []
        if direction in ("egress", "both"):
            out.append((self.ns, self.dev))
        if direction in ("ingress", "both"):
            out.append((self.bed.sw_ns, self.sw_port))
        if not out:
            raise ValueError(direction)
        return out

    def _setup_chains(self) -> None:
        script = "\n".join(
            [
                "*filter",
                ":HSFW-IN - [0:0]",
                ":HSFW-OUT - [0:0]",
                ":HSEM-IN - [0:0]",
                ":HSEM-OUT - [0:0]",
                # only the node's network: its own loopback traffic (the observer's samples,
                # /status) is never impaired, as with tc netem on the veth
                "-A INPUT ! -i lo -j HSFW-IN",
                "-A INPUT ! -i lo -j HSEM-IN",
                "-A OUTPUT ! -o lo -j HSFW-OUT",
                "-A OUTPUT ! -o lo -j HSEM-OUT",
                "COMMIT",
                "*mangle",
                ":HSEM-DUP - [0:0]",
                "-A POSTROUTING -j HSEM-DUP",
                "COMMIT",
                "",
            ]
        )
        proc = subprocess.run(
            self.argv(["iptables-restore", "-w", "--noflush"]),
            input=script,
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        if proc.returncode != 0:
            raise TestbedError(f"iptables-restore in {self.ns}: {proc.stderr.strip()}")

    def drop_from(self, peer: Node, proto: str | None = None) -> None:
        """One-way loss: this node drops everything it receives from ``peer`` (iptables INPUT)."""
        self.run(
            [
                "iptables",
                "-w",
                "-A",
                "HSFW-IN",
                "-s",
                peer.addr,
                *(["-p", proto] if proto else []),
                "-j",
                "DROP",
            ]
        )

    def drop_to(self, peer: Node, proto: str | None = None) -> None:
        """One-way loss: this node's packets to ``peer`` are dropped (iptables OUTPUT)."""
        self.run(
            [
                "iptables",
                "-w",
                "-A",
                "HSFW-OUT",
                "-d",
                peer.addr,
                *(["-p", proto] if proto else []),
                "-j",
                "DROP",
            ]
        )

    def firewall_clear(self) -> None:
        self.run(["iptables", "-w", "-F", "HSFW-IN"], check=False)
        self.run(["iptables", "-w", "-F", "HSFW-OUT"], check=False)

    def rtts(self, addr: str, *, count: int = 1, timeout: float = 1.0, port: int = 9) -> list[float | None]:
        """Round trips to ``addr`` in seconds (``None`` = no answer within ``timeout``).

        Each probe is a TCP connect to a closed port: the peer's RST (connection
        refused) proves the path works both ways; no ``ping`` binary needed. All probes
        run in one short-lived process inside the namespace.
        """
        out = self.run(
            [sys.executable, "-I", "-c", _RTT_SRC, addr, str(port), str(timeout), str(count)],
            check=False,
            timeout=count * (timeout + 0.5) + 10,
        ).stdout
        return [None if tok == "None" else float(tok) for tok in out.split()]

    def rtt(self, addr: str, *, timeout: float = 1.0) -> float | None:
        return self.rtts(addr, count=1, timeout=timeout)[0]

    def reachable(self, addr: str, *, timeout: float = 1.0) -> bool:
        return self.rtt(addr, timeout=timeout) is not None


_RTT_SRC = """
import socket, sys, time
addr, port, timeout, count = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
for _ in range(count):
    s = socket.socket(); s.settimeout(timeout); t = time.monotonic()
    try:
        s.connect((addr, port)); print(time.monotonic() - t)
    except ConnectionRefusedError:
        print(time.monotonic() - t)
    except OSError:
        print("None")
    finally:
        s.close()
"""


class Testbed:
    """N node namespaces joined through a bridge in a switch namespace.

    Use as a context manager; teardown is also registered with ``atexit`` and runs on
    SIGTERM/SIGHUP.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, n: int = 2, *, subnet: str = SUBNET, workdir: str | os.PathLike[str] | None = None) -> None:
        if not 2 <= n <= 5:
            raise ValueError("a testbed has 2 to 5 nodes")
        k = next(_counter)
        letters = ""
        while True:
            letters = chr(ord("a") + k % 26) + letters
            k //= 26
            if not k:
                break
        self.prefix = f"hs{os.getpid()}{letters}-"
        self.sw_ns = f"{self.prefix}sw"
        self.subnet = subnet
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix=self.prefix))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.nodes: list[Node] = [
            Node(
                bed=self,
                index=i,
                name=f"n{i + 1}",
                ns=f"{self.prefix}n{i + 1}",
                addr=f"{subnet}.{i + 1}",
                sw_port=f"p{i + 1}",
            )
            for i in range(n)
        ]
        self.closed = False
        self._closing = threading.Lock()
        _register(self)
        try:
            self._create()
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"<Testbed {self.prefix} nodes={[n.name for n in self.nodes]}>"

    @property
    def namespaces(self) -> list[str]:
        return [self.sw_ns, *(n.ns for n in self.nodes)]

    def __enter__(self) -> Testbed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getitem__(self, i: int) -> Node:
        return self.nodes[i]

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def _create(self) -> None:
        remove_stale()
        _run(["ip", "netns", "add", self.sw_ns])
        sw = ["ip", "-n", self.sw_ns]
        _run([*sw, "link", "add", "br0", "type", "bridge", "forward_delay", "0", "stp_state", "0"])
        _run([*sw, "link", "set", "lo", "up"])
        _run([*sw, "link", "set", "br0", "up"])
        for node in self.nodes:
            _run(["ip", "netns", "add", node.ns])
            _run([*sw, "link", "add", node.sw_port, "type", "veth", "peer", "name", node.dev, "netns", node.ns])
            _run([*sw, "link", "set", node.sw_port, "master", "br0"])
            _run([*sw, "link", "set", node.sw_port, "up"])
            nn = ["ip", "-n", node.ns]
            _run([*nn, "link", "set", "lo", "up"])
            _run([*nn, "addr", "add", f"{node.addr}/24", "dev", node.dev])
            _run([*nn, "link", "set", node.dev, "up"])
            node._setup_chains()

    # -- whole-bed faults -------------------------------------------------------------------
    def partition(self, *groups: Sequence[Node]) -> None:
        """Cut traffic between the groups (both directions); nodes not named form no group."""
        for i, group in enumerate(groups):
            for other in groups[i + 1 :]:
                for a in group:
                    for b in other:
                        a.drop_from(b)
                        a.drop_to(b)
                        b.drop_from(a)
                        b.drop_to(a)

    def heal(self) -> None:
        """Remove every firewall rule and netem qdisc, bring every link up."""
        for node in self.nodes:
            node.firewall_clear()
            node.netem_clear()
            with contextlib.suppress(TestbedError):
                node.link_up("node")
                node.link_up("switch")

    # -- teardown ----------------------------------------------------------------------------
    def close(self) -> None:
        with self._closing:
            if self.closed:
                return
            self.closed = True
        try:
            for node in self.nodes:
                for proc in node.procs.values():
                    if proc.popen is not None and proc.popen.poll() is None:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(proc.pid, signal.SIGKILL)
            _kill_and_delete([ns for ns in self.namespaces if ns in set(list_netns())])
            for node in self.nodes:
                for proc in node.procs.values():
                    if proc.popen is not None:
                        with contextlib.suppress(subprocess.TimeoutExpired):
                            proc.popen.wait(5)
                        if proc.popen.stdout is not None:
                            proc.popen.stdout.close()
        finally:
            _unregister(self)
            if self._own_workdir and not os.environ.get("HASUP_TESTBED_KEEP"):
                shutil.rmtree(self.workdir, ignore_errors=True)

    def leftovers(self) -> dict[str, list[str]]:
        return leftovers(self.prefix)


def _register(bed: Testbed) -> None:
    global _handlers_installed
    with _live_lock:
        _live.add(bed)
        if _handlers_installed:
            return
        _handlers_installed = True
    atexit.register(_close_all)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            previous = signal.getsignal(sig)
            signal.signal(sig, _make_handler(previous))


def _unregister(bed: Testbed) -> None:
    with _live_lock:
        _live.discard(bed)


def _close_all() -> None:
    with _live_lock:
        beds = list(_live)
    for bed in beds:
        with contextlib.suppress(Exception):
            bed.close()


def _make_handler(previous: Any) -> Any:
    def handler(signum: int, frame: Any) -> None:
        _close_all()
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_IGN:
            return
        else:
            # default disposition: exit with the conventional status (runs atexit too)
            raise SystemExit(128 + signum)

    return handler
