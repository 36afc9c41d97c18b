"""Embedding hasup: two supervisors in one process, on 127.0.0.1 UDP.

Each node runs a "collector" that lives in this program and is managed through a
CallbackBackend. The script prints every state change, then:

1. edge-a (priority 100) becomes MASTER and starts its collector;
2. edge-a's collector crashes: edge-a stops it, enters FAULT, edge-b takes over;
3. after the fault hold-down edge-a takes the service back (failback, no overlap);
4. an operator switches the service over to edge-b;
5. both nodes shut down (each resigns and stops its collector).

Run it with ``python examples/embedding.py``; it ends by itself in a few seconds.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import anyio

from hasup import ServiceStatus, State
from hasup.backends.callback import CallbackBackend
from hasup.config import parse_config
from hasup.supervisor import Supervisor

ADVERT = "50ms"
KEY_FILE = "group.key"


class Collector:
    """Stands in for the real work (a data collector, a queue consumer, ...)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.running = False
        self.crashed = False
        self._changed = anyio.Event()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def start(self) -> None:
        await anyio.sleep(0.05)  # pretend to connect to something
        self.running, self.crashed = True, False
        print(f"           [{self.name}] collector started")
        self._notify()

    async def stop(self) -> None:
        if self.running:
            print(f"           [{self.name}] collector stopped")
        self.running = False
        self._notify()

    def crash(self) -> None:
        self.running, self.crashed = False, True
        print(f"           [{self.name}] collector crashed")
        self._notify()

    async def status(self) -> ServiceStatus:
        if self.running:
            return ServiceStatus.RUNNING
        return ServiceStatus.FAILED if self.crashed else ServiceStatus.STOPPED

    async def watch(self) -> AsyncIterator[ServiceStatus]:
        # Current status first, then one value per change: a crash is seen at once.
        while True:
            changed = self._changed
            yield await self.status()
            await changed.wait()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config_text(name: str, priority: int, port: int, peer: str, peer_port: int, tmp: Path) -> str:
    return f"""
[node]
name = "{name}"
priority = {priority}
state_dir = "{tmp / name}"

[group]
id = 7
listen = "127.0.0.1:{port}"
peers = [{{ name = "{peer}", address = "127.0.0.1:{peer_port}" }}]
key_file = "{tmp / KEY_FILE}"
advert_interval = "{ADVERT}"
fault_holddown = "500ms"

[service]
# A file must name a backend that validates on its own; the CallbackBackend passed
# to Supervisor(...) below is the one actually used.
backend = "mock"

[status]
listen = "off"
"""


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="hasup-embedding-") as tmpdir, anyio.fail_after(30):
        tmp = Path(tmpdir)
        fd = os.open(tmp / KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, os.urandom(32).hex().encode())
        os.close(fd)

        port_a, port_b = free_udp_port(), free_udp_port()
        collectors = {"edge-a": Collector("edge-a"), "edge-b": Collector("edge-b")}
        configs = {
            "edge-a": parse_config(config_text("edge-a", 100, port_a, "edge-b", port_b, tmp)),
            "edge-b": parse_config(config_text("edge-b", 90, port_b, "edge-a", port_a, tmp)),
        }
        sups = {
            name: Supervisor(
                configs[name],
                backend=CallbackBackend(c.start, c.stop, c.status, watch=c.watch, name=f"{name} collector"),
            )
            for name, c in collectors.items()
        }
        a, b = sups["edge-a"], sups["edge-b"]
        t0 = anyio.current_time()

        async def show(name: str, sup: Supervisor) -> None:
            async for event in sup.events():
                if event.kind == "state":
                    was = event.previous.name if event.previous is not None else "-"
                    print(
                        f"{event.time - t0:7.3f}s  {name}: {was} -> {event.state.name} "
                        f"(term {event.term}): {event.reason}"
                    )
                else:
                    print(f"{event.time - t0:7.3f}s  {name}: ALARM {event.reason}")

        async with anyio.create_task_group() as tg:
            for name, sup in sups.items():
                tg.start_soon(show, name, sup)
                await tg.start(sup.run)  # returns once the UDP socket is bound

            print("== start-up")
            await a.wait_state(State.MASTER)
            await b.wait_state(State.BACKUP)

            print("== edge-a's collector crashes")
            collectors["edge-a"].crash()
            await b.wait_state(State.MASTER)

            print("== edge-a recovers and takes the service back")
            await a.wait_state(State.MASTER)
            await b.wait_state(State.BACKUP)

            print("== switchover to edge-b")
            target = await a.switchover()
            await b.wait_state(State.MASTER)
            # edge-a is now in maintenance (it would otherwise preempt straight back);
            # `await a.set_maintenance(False)` would let it take the service back.
            print(f"           switched over to {target}")

            print("== shutdown")
            await a.shutdown()
            await b.shutdown()
            tg.cancel_scope.cancel()

        stats = b.statistics()
        sent, received = stats.get("sent", 0), stats.get("received", 0)
        print(f"edge-b sent {sent:.0f} and received {received:.0f} heartbeats")
        both = [name for name, c in collectors.items() if c.running]
        print("done:", "no collector left running" if not both else f"still running: {both}")


if __name__ == "__main__":
    anyio.run(main)
