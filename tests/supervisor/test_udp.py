"""Two supervisors over real UDP sockets on 127.0.0.1, on asyncio and trio."""

from __future__ import annotations

import socket

import anyio
import pytest

from hasup import State
from hasup.config import parse_config
from hasup.supervisor import Supervisor
from hasup.testing import MemoryStateFile, MockBackend

from .helpers import config_text

pytestmark = pytest.mark.anyio


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
async def test_failover_and_failback_over_real_udp(family: str) -> None:
    host = "127.0.0.1" if family == "ipv4" else "::1"
    if family == "ipv6" and not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    pa, pb = free_udp_port(), free_udp_port()
    fmt = (lambda p: f"{host}:{p}") if family == "ipv4" else (lambda p: f"[{host}]:{p}")
    cfg_a = parse_config(config_text("edge-a", 100, fmt(pa), [fmt(pb)], advert="50ms"))
    cfg_b = parse_config(config_text("edge-b", 90, fmt(pb), [fmt(pa)], advert="50ms"))
    backends = {"a": MockBackend(start_time=0.01, stop_time=0.01), "b": MockBackend(start_time=0.01, stop_time=0.01)}
    state_a = MemoryStateFile()
    async with anyio.create_task_group() as tg:
        scope_a = anyio.CancelScope()

        async def run_a(sup: Supervisor, *, task_status: anyio.abc.TaskStatus[None]) -> None:
            with scope_a:
                await sup.run(task_status=task_status)

        a = Supervisor(cfg_a, backend=backends["a"], state_file=state_a)
        b = Supervisor(cfg_b, backend=backends["b"], state_file=MemoryStateFile())
        await tg.start(run_a, a)
        await tg.start(b.run)
        with anyio.fail_after(5):
            await a.wait_state(State.MASTER)
            await b.wait_state(State.BACKUP)
        assert b.node.peers()[0].name == "edge-a"
        assert b.statistics()["received"] > 0
        # node loss
        scope_a.cancel()
        backends["a"].running = False
        with anyio.fail_after(5):
            await b.wait_state(State.MASTER)
        assert backends["b"].running
        # failback
        a2 = Supervisor(cfg_a, backend=backends["a"], state_file=state_a)
        await tg.start(a2.run)
        with anyio.fail_after(5):
            await a2.wait_state(State.MASTER)
            await b.wait_state(State.BACKUP)
        assert backends["a"].running and not backends["b"].running
        await a2.shutdown()
        with anyio.fail_after(5):
            await b.wait_state(State.MASTER)
        await b.shutdown()
        tg.cancel_scope.cancel()


async def test_forged_datagrams_are_dropped_and_counted() -> None:
    pa, pb = free_udp_port(), free_udp_port()
    cfg_a = parse_config(config_text("edge-a", 100, f"127.0.0.1:{pa}", [f"127.0.0.1:{pb}"], advert="50ms"))
    async with anyio.create_task_group() as tg:
        a = Supervisor(cfg_a, backend=MockBackend(), state_file=MemoryStateFile())
        await tg.start(a.run)
        async with await anyio.create_udp_socket(local_host="127.0.0.1", local_port=pb) as fake:
            await fake.sendto(b"HSUP" + b"\x01\x01" + b"\x00" * 80, "127.0.0.1", pa)
            await fake.sendto(b"garbage", "127.0.0.1", pa)
            with anyio.fail_after(5):
                while a.statistics().get("dropped_bad_tag", 0) < 1 or a.statistics().get("dropped_malformed", 0) < 1:
                    await anyio.sleep(0.01)
        assert a.state in (State.INIT, State.BACKUP, State.CLAIMING, State.MASTER)
        assert a.node.peers()[0].last is None
        tg.cancel_scope.cancel()
