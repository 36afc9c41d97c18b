"""``hasup demo``: two supervisors on loopback, a tiny HTTP service, three failures.

Everything is real: UDP heartbeats on 127.0.0.1, HMAC keys, a managed HTTP server
process per node, and a sampler that asks both services every 10 ms which one
answers. It prints the timeline and the measured takeover times.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import tempfile
import textwrap
from pathlib import Path

import anyio
import httpx

from .backends.command import CommandBackend
from .config import parse_config
from .protocol import State
from .supervisor import Supervisor

__all__ = ["run_demo"]


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Sampler:
    """Which nodes' services answer HTTP, every 10 ms."""

    def __init__(self, ports: dict[str, int]) -> None:
        self.ports = ports
        self.samples: list[tuple[float, frozenset[str]]] = []

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=0.05) as client:
            while True:
                up: set[str] = set()

                async def ask(name: str, port: int, up: set[str] = up) -> None:
                    try:
                        r = await client.get(f"http://127.0.0.1:{port}/")
                        if r.status_code == 200:
                            up.add(name)
                    except httpx.HTTPError:
                        pass

                async with anyio.create_task_group() as tg:
                    for name, port in self.ports.items():
                        tg.start_soon(ask, name, port)
                self.samples.append((anyio.current_time(), frozenset(up)))
                await anyio.sleep(0.01)

    def serving(self, name: str, after: float) -> float | None:
        return next((t for t, up in self.samples if t >= after and up == {name}), None)

    def overlap(self, t0: float, t1: float) -> float:
        both = [t for t, up in self.samples if t0 <= t <= t1 and len(up) > 1]
        return len(both) * 0.01

    def any_overlap(self) -> bool:
        return any(len(up) > 1 for _, up in self.samples)


def _config(tmp: Path, name: str, priority: int, port: int, peer_port: int, http_port: int, advert: float) -> str:
    web = tmp / f"www-{name}"
    web.mkdir(exist_ok=True)
    (web / "index.html").write_text(f"served by {name}\n")
    return textwrap.dedent(
        f"""
        [node]
        name = "{name}"
        priority = {priority}
        state_dir = "{tmp / ("state-" + name)}"
        [group]
        id = 51
        listen = "127.0.0.1:{port}"
        peers = ["127.0.0.1:{peer_port}"]
        advert_interval = "{int(advert * 1000)}ms"
        key_file = "{tmp / "group.key"}"
        fault_holddown = "1s"
        [service]
        backend = "command"
        run = ["{sys.executable}", "-m", "http.server", "{http_port}", "--bind", "127.0.0.1",
               "--directory", "{web}"]
        ready_tcp = "127.0.0.1:{http_port}"
        output = "discard"
        stop_timeout = "5s"
        [status]
        listen = "127.0.0.1:0"
        """
    )


async def run_demo(advert: float = 0.1) -> int:
    out = print
    with tempfile.TemporaryDirectory(prefix="hasup-demo-") as tmpdir:
        tmp = Path(tmpdir)
        key = tmp / "group.key"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, os.urandom(32).hex().encode())
        os.close(fd)
        udp = {n: _free_port(socket.SOCK_DGRAM) for n in ("edge-a", "edge-b")}
        http = {n: _free_port(socket.SOCK_STREAM) for n in ("edge-a", "edge-b")}
        configs = {
            "edge-a": parse_config(_config(tmp, "edge-a", 100, udp["edge-a"], udp["edge-b"], http["edge-a"], advert)),
            "edge-b": parse_config(_config(tmp, "edge-b", 90, udp["edge-b"], udp["edge-a"], http["edge-b"], advert)),
        }
        sampler = _Sampler(http)
        results: list[tuple[str, str]] = []
        t_zero = anyio.current_time()

        def stamp() -> str:
            return f"{anyio.current_time() - t_zero:7.3f}s"

        out(f"hasup demo: two nodes on 127.0.0.1, advert {advert * 1000:.0f} ms, HMAC-authenticated heartbeats")
        out("  edge-a priority 100 (preferred), edge-b priority 90; services: python -m http.server\n")
        async with anyio.create_task_group() as root:
            root.start_soon(sampler.run)
            scopes: dict[str, anyio.CancelScope] = {}
            sups: dict[str, Supervisor] = {}

            async def boot(name: str) -> None:
                sup = Supervisor(configs[name])
                sups[name] = sup

                async def runner(*, task_status: anyio.abc.TaskStatus[None]) -> None:
                    with anyio.CancelScope() as scope:
                        scopes[name] = scope
                        await sup.run(task_status=task_status)

                await root.start(runner)

            def service_pid(name: str) -> int | None:
                backend = sups[name].backend
                return backend.pid if isinstance(backend, CommandBackend) else None

            async def until(predicate: object, limit: float = 20.0) -> float:
                with anyio.fail_after(limit):
                    while not predicate():  # type: ignore[operator]  # noqa: ASYNC110 - polls the sampler
                        await anyio.sleep(0.005)
                return anyio.current_time()

            await boot("edge-a")
            await boot("edge-b")
            await sups["edge-a"].wait_state(State.MASTER)
            await until(lambda: sampler.serving("edge-a", 0) is not None)
            out(f"{stamp()}  edge-a is MASTER and serving (start-up listen of one master-down interval)")

            # 1. the service crashes on the master
            await anyio.sleep(0.5)
            pid = service_pid("edge-a")
            assert pid is not None
            t0 = anyio.current_time()
            os.killpg(pid, signal.SIGKILL)
            out(f"{stamp()}  kill -9 of edge-a's service (pid {pid})")
            t1 = await until(lambda: sampler.serving("edge-b", t0) is not None)
            results.append(("service crash -> edge-b serving", f"{(t1 - t0) * 1000:.0f} ms"))
            out(f"{stamp()}  edge-b serving, {(t1 - t0) * 1000:.0f} ms after the crash")

            # edge-a recovers from FAULT (hold-down 1 s) and takes its service back
            t2 = await until(lambda: sampler.serving("edge-a", t1) is not None)
            results.append(
                (
                    "failback after repair (hold-down 1 s)",
                    f"{(t2 - t1):.2f} s, overlap {sampler.overlap(t1, t2) * 1000:.0f} ms",
                )
            )
            out(f"{stamp()}  edge-a took the service back through the release handshake")

            # 2. the master node dies (supervisor and service gone at once)
            await anyio.sleep(0.5)
            t3 = anyio.current_time()
            pid = service_pid("edge-a")
            scopes["edge-a"].cancel()
            if pid:
                os.killpg(pid, signal.SIGKILL)
            out(f"{stamp()}  edge-a powered off (supervisor and service killed)")
            t4 = await until(lambda: sampler.serving("edge-b", t3) is not None)
            results.append(("node loss -> edge-b serving", f"{(t4 - t3) * 1000:.0f} ms"))
            out(f"{stamp()}  edge-b serving, {(t4 - t3) * 1000:.0f} ms after the node loss")

            # 3. edge-a comes back: failback without running two services
            await anyio.sleep(0.5)
            t5 = anyio.current_time()
            await boot("edge-a")
            out(f"{stamp()}  edge-a restarted")
            t6 = await until(lambda: sampler.serving("edge-a", t5) is not None)
            results.append(
                (
                    "restart -> edge-a serving again",
                    f"{(t6 - t5) * 1000:.0f} ms, overlap {sampler.overlap(t5, t6) * 1000:.0f} ms",
                )
            )
            out(f"{stamp()}  edge-a serving again")
            await anyio.sleep(0.3)

            for name in ("edge-b", "edge-a"):
                await sups[name].shutdown()
            root.cancel_scope.cancel()

        out("\nresults")
        for what, value in results:
            out(f"  {what:<40} {value}")
        never_two = not sampler.any_overlap()
        out(f"  {'never two active':<40} {'yes' if never_two else 'NO'}")
        out(f"  ({len(sampler.samples)} samples every 10 ms; takeover times include the stand-in service's own")
        out("   start-up: a Python http.server needs about 0.3 s before it answers)")
        return 0 if never_two else 1
