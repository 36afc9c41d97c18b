"""Two supervisors over real UDP sockets on 127.0.0.1, on asyncio and trio."""

from __future__ import annotations

import socket

import anyio
import pytest

from hasup import State
from hasup.config import parse_config
from hasup.testing import MockBackend, config_text, free_port, supervisor_harness, wait_for

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
async def test_failover_and_failback_over_real_udp(family: str) -> None:
    host = "127.0.0.1" if family == "ipv4" else "::1"
    if family == "ipv6" and not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    pa, pb = free_port(socket.SOCK_DGRAM, host), free_port(socket.SOCK_DGRAM, host)
    fmt = (lambda p: f"{host}:{p}") if family == "ipv4" else (lambda p: f"[{host}]:{p}")
    cfg_a = parse_config(config_text("edge-a", 100, fmt(pa), [fmt(pb)], advert="50ms"))
    cfg_b = parse_config(config_text("edge-b", 90, fmt(pb), [fmt(pa)], advert="50ms"))
    ba, bb = MockBackend(start_time=0.01, stop_time=0.01), MockBackend(start_time=0.01, stop_time=0.01)
    async with supervisor_harness() as h:  # no network given: real UDP sockets
        a = await h.boot(cfg_a, ba)
        b = await h.boot(cfg_b, bb)
        with anyio.fail_after(5):
            await a.wait_state(State.MASTER)
            await b.wait_state(State.BACKUP)
        assert b.node.peers()[0].name == "edge-a"
        assert b.statistics()["received"] > 0
        # node loss
        h.kill("edge-a")
        with anyio.fail_after(5):
            await b.wait_state(State.MASTER)
        assert bb.running
        # failback (same backend and state file: the machine comes back)
        a2 = await h.boot(cfg_a)
        with anyio.fail_after(5):
            await a2.wait_state(State.MASTER)
            await b.wait_state(State.BACKUP)
        assert ba.running and not bb.running
        await a2.shutdown()
        with anyio.fail_after(5):
            await b.wait_state(State.MASTER)
        await b.shutdown()


async def test_forged_datagrams_are_dropped_and_counted() -> None:
    pa, pb = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    cfg_a = parse_config(config_text("edge-a", 100, f"127.0.0.1:{pa}", [f"127.0.0.1:{pb}"], advert="50ms"))
    backend = MockBackend(start_time=0.01, stop_time=0.01)
    async with supervisor_harness() as h:
        a = await h.boot(cfg_a, backend)
        async with await anyio.create_udp_socket(local_host="127.0.0.1", local_port=pb) as fake:
            await fake.sendto(b"HSUP" + b"\x01\x01" + b"\x00" * 80, "127.0.0.1", pa)
            await fake.sendto(b"garbage", "127.0.0.1", pa)
            await wait_for(
                lambda: (
                    a.statistics().get("dropped_bad_tag", 0) >= 1 and a.statistics().get("dropped_malformed", 0) >= 1
                ),
                within=5,
                what="both datagrams dropped",
            )
            # Neither datagram counts as a heartbeat of the peer: alone in its group, the
            # node claims after its own master-down interval and serves.
            with anyio.fail_after(5):
                await a.wait_state(State.MASTER)
            assert backend.running
            assert a.statistics().get("received", 0) == 0
            assert a.node.peers()[0].last is None
