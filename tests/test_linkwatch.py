"""Interface tracking against real veth interfaces (root only; fails under CI=true otherwise)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import aclosing

import anyio
import pytest

from hasup import State
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


def ip_link(name: str, state: str) -> None:
    subprocess.run(["ip", "link", "set", name, state], check=True)


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
