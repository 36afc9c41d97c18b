"""Building supervisors for tests."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from hasup.config import Config, parse_config
from hasup.supervisor import Supervisor
from hasup.testing import MemoryNetwork, MemoryStateFile, MockBackend

KEY = "0123456789abcdef0123456789abcdef"


def config_text(
    name: str,
    priority: int,
    listen: str,
    peers: list[str],
    *,
    advert: str = "1s",
    extra_node: str = "",
    extra_group: str = "",
    service: str = 'backend = "mock"',
    probes: str = "",
    status: str = 'listen = "off"',
    state_dir: str = "/nonexistent",
) -> str:
    peer_list = ", ".join(f'"{p}"' for p in peers)
    return textwrap.dedent(
        f"""
        [node]
        name = "{name}"
        priority = {priority}
        state_dir = "{state_dir}"
        {extra_node}
        [group]
        id = 7
        listen = "{listen}"
        peers = [{peer_list}]
        advert_interval = "{advert}"
        key = "{KEY}"
        {extra_group}
        [service]
        {service}
        {probes}
        [status]
        {status}
        """
    )


def pair_configs(advert: str = "1s", **kw: str) -> tuple[Config, Config]:
    a = parse_config(config_text("edge-a", 100, "10.0.0.1:5405", ["10.0.0.2:5405"], advert=advert, **kw))
    b = parse_config(config_text("edge-b", 90, "10.0.0.2:5405", ["10.0.0.1:5405"], advert=advert, **kw))
    return a, b


class Harness:
    """Supervisors on a MemoryNetwork; each can be killed abruptly or restarted."""

    def __init__(self, tg: anyio.abc.TaskGroup, net: MemoryNetwork) -> None:
        self.tg = tg
        self.net = net
        self.sups: dict[str, Supervisor] = {}
        self.backends: dict[str, MockBackend] = {}
        self.states: dict[str, MemoryStateFile] = {}
        self.scopes: dict[str, anyio.CancelScope] = {}

    async def boot(self, config: Config, backend: MockBackend | None = None) -> Supervisor:
        name = config.node.name
        backend = backend or self.backends.get(name) or MockBackend()
        self.backends[name] = backend
        state = self.states.setdefault(name, MemoryStateFile())
        sup = Supervisor(
            config, backend=backend, probes=None, transport=self.net.endpoint(config.group.listen), state_file=state
        )
        self.sups[name] = sup

        async def runner(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            with anyio.CancelScope() as scope:
                self.scopes[name] = scope
                await sup.run(task_status=task_status)

        await self.tg.start(runner)
        return sup

    def kill(self, name: str, *, service_dies: bool = True) -> None:
        """Power off a node: its supervisor stops at once (and its service, by default)."""
        self.scopes[name].cancel()
        if service_dies:
            self.backends[name].running = False


@asynccontextmanager
async def harness(net: MemoryNetwork | None = None) -> AsyncIterator[Harness]:
    async with anyio.create_task_group() as tg:
        h = Harness(tg, net or MemoryNetwork())
        yield h
        tg.cancel_scope.cancel()
