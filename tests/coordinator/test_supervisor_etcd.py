"""Supervisors whose leadership comes from a real etcd cluster ([coordinator] type = "etcd")."""

from __future__ import annotations

import socket

import anyio
import pytest

from hasup import State
from hasup.config import parse_config
from hasup.supervisor import Supervisor
from hasup.testing import MemoryStateFile, MockBackend
from tests.supervisor.helpers import config_text

from .conftest import EtcdCluster

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def free_udp() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def etcd_config(name: str, prio: int, port: int, peer: int, etcd: EtcdCluster, prefix: str) -> str:
    endpoints = ", ".join(f'"{e}"' for e in etcd.endpoints)
    return config_text(name, prio, f"127.0.0.1:{port}", [f"127.0.0.1:{peer}"], advert="100ms") + (
        f'\n[coordinator]\ntype = "etcd"\nendpoints = [{endpoints}]\nprefix = "{prefix}"\nttl = "2s"\n'
    )


async def test_etcd_leadership_failover_failback_and_crash(etcd: EtcdCluster, prefix: str) -> None:
    pa, pb = free_udp(), free_udp()
    cfg_a = parse_config(etcd_config("edge-a", 100, pa, pb, etcd, prefix))
    cfg_b = parse_config(etcd_config("edge-b", 90, pb, pa, etcd, prefix))
    assert cfg_a.core_config().external_leader
    ba, bb = MockBackend(start_time=0.01, stop_time=0.01), MockBackend(start_time=0.01, stop_time=0.01)
    overlap: list[float] = []

    async def watch_overlap() -> None:
        while True:
            if ba.running and bb.running:
                overlap.append(anyio.current_time())
            await anyio.sleep(0.002)

    state_a = MemoryStateFile()
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch_overlap)
        scope_a = anyio.CancelScope()

        async def run_a(sup: Supervisor, *, task_status: anyio.abc.TaskStatus[None]) -> None:
            with scope_a:
                await sup.run(task_status=task_status)

        a = Supervisor(cfg_a, backend=ba, state_file=state_a)
        b = Supervisor(cfg_b, backend=bb, state_file=MemoryStateFile())
        await tg.start(run_a, a)
        await tg.start(b.run)
        with anyio.fail_after(20):
            await a.wait_state(State.MASTER)
            await b.wait_state(State.BACKUP)
        token_a = a.node.term
        assert token_a > 0 and ba.running
        # graceful: a stops its service, then resigns; b is granted and starts
        await a.shutdown()
        with anyio.fail_after(10):
            await b.wait_state(State.MASTER)
        assert b.node.term > token_a and bb.running and not ba.running
        # a comes back and takes the service back through the release handshake
        a2 = Supervisor(cfg_a, backend=ba, state_file=state_a)
        scope_a = anyio.CancelScope()
        await tg.start(run_a, a2)
        with anyio.fail_after(20):
            await a2.wait_state(State.MASTER)
            await b.wait_state(State.BACKUP)
        assert ba.running and not bb.running
        # abrupt cancellation of a's supervisor: leaving the coordinator context still
        # resigns the lease, so b is granted at once (kill -9 → ~TTL is covered in test_etcd.py)
        scope_a.cancel()
        ba.running = False
        with anyio.fail_after(10):
            await b.wait_state(State.MASTER)
        await b.shutdown()
        tg.cancel_scope.cancel()
    assert overlap == []
