"""Supervisors whose leadership comes from a real etcd cluster ([coordinator] type = "etcd")."""

from __future__ import annotations

import socket

import anyio
import pytest

from hasup import State
from hasup.config import parse_config
from hasup.testing import MockBackend, config_text, free_ports, supervisor_harness

from .conftest import EtcdCluster

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def etcd_config(name: str, prio: int, port: int, peer: int, etcd: EtcdCluster, prefix: str) -> str:
    coordinator = {"type": "etcd", "endpoints": etcd.endpoints, "prefix": prefix, "ttl": "2s"}
    return config_text(
        name, prio, f"127.0.0.1:{port}", [f"127.0.0.1:{peer}"], advert="100ms", coordinator=coordinator
    )


async def test_etcd_leadership_failover_failback_and_crash(etcd: EtcdCluster, prefix: str) -> None:
    pa, pb = free_ports(2, socket.SOCK_DGRAM)
    cfg_a = parse_config(etcd_config("edge-a", 100, pa, pb, etcd, prefix))
    cfg_b = parse_config(etcd_config("edge-b", 90, pb, pa, etcd, prefix))
    assert cfg_a.core_config().external_leader
    ba, bb = MockBackend(start_time=0.01, stop_time=0.01), MockBackend(start_time=0.01, stop_time=0.01)
    # no_overlap: the block fails if the two services ever ran at once (sampled every 2 ms)
    async with supervisor_harness(no_overlap=True) as h:
        a = await h.boot(cfg_a, ba)
        b = await h.boot(cfg_b, bb)
        with anyio.fail_after(20):
            await a.wait_state(State.MASTER)
            await b.wait_state(State.BACKUP)
        token_a = a.node.term
        assert token_a > 0 and ba.running
        # graceful: a stops its service, then resigns; b is granted and starts
        await h.shutdown("edge-a")
        with anyio.fail_after(10):
            await b.wait_state(State.MASTER)
        assert b.node.term > token_a and bb.running and not ba.running
        # a comes back and takes the service back through the release handshake
        a2 = await h.boot(cfg_a)
        with anyio.fail_after(20):
            await a2.wait_state(State.MASTER)
            await b.wait_state(State.BACKUP)
        assert ba.running and not bb.running
        # abrupt cancellation of a's supervisor: leaving the coordinator context still
        # resigns the lease, so b is granted at once (kill -9 → ~TTL is covered in test_etcd.py)
        killed = anyio.current_time()
        h.kill("edge-a")
        with anyio.fail_after(10):
            await b.wait_state(State.MASTER)
        took = anyio.current_time() - killed
        print(f"\ncancelled leader -> other MASTER after {took:.3f}s")
        assert bb.running
        await h.shutdown("edge-b")
    assert h.overlaps == []
