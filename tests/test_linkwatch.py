"""Interface tracking against real veth interfaces (root only; fails under CI=true otherwise)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import aclosing

import anyio
import pytest

from hasup import State
from hasup._iface import interface_of_address, interfaces_for, route_interface
from hasup._linkwatch import LinkWatcher
from hasup.config import parse_config
from hasup.supervisor import Supervisor
from hasup.testing import MemoryNetwork, MemoryStateFile, MockBackend, config_text, wait_for
from tests._support import missing_component

pytestmark = pytest.mark.anyio


@pytest.fixture
def veth() -> Iterator[tuple[str, str]]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        missing_component("veth interfaces", "needs root and iproute2")
    a, b = f"hsl{os.getpid() % 100000}a", f"hsl{os.getpid() % 100000}b"
    subprocess.run(["ip", "link", "add", a, "type", "veth", "peer", "name", b], check=True)
    try:
        subprocess.run(["ip", "link", "set", a, "up"], check=True)
        subprocess.run(["ip", "link", "set", b, "up"], check=True)
        yield a, b
    finally:
        subprocess.run(["ip", "link", "del", a], check=False)


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True)


def ip_link(name: str, state: str) -> None:
    ip("link", "set", name, state)


async def test_carrier_changes_are_pushed(veth: tuple[str, str]) -> None:
    a, b = veth
    watcher = LinkWatcher([a])
    async with aclosing(watcher.watch()) as changes:
        with anyio.fail_after(5):
            async for up, _ in changes:
                if up:
                    break
            ip_link(b, "down")  # the peer end going down drops a's carrier
            async for up, detail in changes:
                assert not up and a in detail
                break
            ip_link(b, "up")
            async for up, _ in changes:
                assert up
                break


async def test_master_with_tracked_link_down_faults_and_recovers(veth: tuple[str, str]) -> None:
    a, b = veth
    net = MemoryNetwork()
    text = config_text("edge-a", 100, "10.0.0.1:5405", ["10.0.0.2:5405"], advert="50ms",
                       extra_group=f'track_interface = ["{a}"]\nfault_holddown = "100ms"')
    backend = MockBackend(start_time=0.01, stop_time=0.01)
    sup = Supervisor(parse_config(text), backend=backend, transport=net.endpoint(("10.0.0.1", 5405)),
                     state_file=MemoryStateFile())
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        with anyio.fail_after(10):
            await sup.wait_state(State.MASTER)
            ip_link(b, "down")
            await sup.wait_state(State.FAULT)
            await wait_for(lambda: not backend.running, within=10, what="the service stopped")
            ip_link(b, "up")
            await sup.wait_state(State.MASTER)  # no stuck FAULT: alone in the group, it serves again
        assert backend.running
        tg.cancel_scope.cancel()


async def test_interface_recreated_with_a_new_index_is_still_tracked(veth: tuple[str, str]) -> None:
    a, b = veth
    watcher = LinkWatcher([a])
    old_index = socket.if_nametoindex(a)
    async with aclosing(watcher.watch()) as changes:
        with anyio.fail_after(10):
            async for up, _ in changes:
                assert up
                break
            ip("link", "del", a)  # a USB NIC unplugged
            async for up, _ in changes:
                assert not up
                break
            ip("link", "add", a, "type", "veth", "peer", "name", b)
            assert socket.if_nametoindex(a) != old_index
            ip_link(a, "up")
            ip_link(b, "up")
            async for up, _ in changes:  # plugged back in: a new index, the same name
                assert up
                break


async def test_overflowed_socket_resyncs(veth: tuple[str, str]) -> None:
    a, b = veth
    watcher = LinkWatcher([a], rcvbuf=1)  # the kernel's minimum: a few messages
    async with aclosing(watcher.watch()) as changes:
        with anyio.fail_after(20):
            async for up, _ in changes:
                assert up
                break
            # nobody reads while the link flaps: the kernel drops messages (ENOBUFS)
            for _ in range(40):
                ip_link(b, "down")
                ip_link(b, "up")
            ip_link(b, "down")
            async for up, detail in changes:
                assert not up and a in detail
                break
    assert watcher.resyncs >= 1


def test_default_tracking_finds_the_interface_of_the_heartbeats(veth: tuple[str, str]) -> None:
    a, _b = veth
    # documentation addresses (RFC 5737) on the test's own veth: no traffic leaves it
    ip("addr", "add", "198.51.100.1/30", "dev", a)
    assert interface_of_address("198.51.100.1") == a
    assert route_interface("198.51.100.2") == a
    assert interfaces_for("198.51.100.1", ["198.51.100.2"]) == (a,)  # the listen address's interface
    assert interfaces_for("0.0.0.0", ["198.51.100.2", "127.0.0.2"]) == (a, "lo")  # routes to the peers
    with pytest.raises(OSError, match="no interface holds 198.51.100.9"):
        interfaces_for("198.51.100.9", ["198.51.100.2"])
    with pytest.raises(OSError, match="does not appear to be an IP"):
        interfaces_for("0.0.0.0", ["edge-b.example"])


async def test_default_config_tracks_the_heartbeat_interface(veth: tuple[str, str]) -> None:
    a, b = veth
    ip("addr", "add", "198.51.100.1/30", "dev", a)
    text = config_text("edge-a", 100, "198.51.100.1:0", ["198.51.100.2:5405"], advert="50ms",
                       extra_group='fault_holddown = "100ms"')
    assert "track_interface" not in text
    backend = MockBackend(start_time=0.01, stop_time=0.01)
    sup = Supervisor(parse_config(text), backend=backend, state_file=MemoryStateFile())  # real UDP
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        with anyio.fail_after(10):
            await sup.wait_state(State.MASTER)
            ip_link(b, "down")  # the peer end: a loses carrier
            await sup.wait_state(State.FAULT)
            await wait_for(lambda: not backend.running, within=10, what="the service stopped")
            ip_link(b, "up")
            await sup.wait_state(State.MASTER)
        tg.cancel_scope.cancel()
