"""Two supervisors with [[sync]]: the standby follows, and failback pulls edits first."""

from __future__ import annotations

import socket
from pathlib import Path

import anyio
import pytest

from hasup import State
from hasup.config import parse_config
from hasup.testing import MockBackend, config_text, supervisor_harness, wait_for

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def free_port() -> int:
    # the same port must be free on 127.0.0.1 and 127.0.0.2 (TCP and UDP)
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        try:
            for host in ("127.0.0.1", "127.0.0.2"):
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    with socket.socket(socket.AF_INET, kind) as t:
                        t.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no common free port")


async def test_standby_follows_and_failback_pulls_edits_first(tmp_path: Path) -> None:
    udp, sync = free_port(), free_port()
    data = {n: tmp_path / f"data-{n}" for n in ("a", "b")}
    for d in data.values():
        d.mkdir()
    (data["a"] / "tags.json").write_text('{"v": 1}')

    def cfg(name: str, prio: int, me: str, peer: str, d: Path) -> str:
        return (
            config_text(
                name, prio, f"{me}:{udp}", [f"{peer}:{udp}"], advert="100ms", state_dir=str(tmp_path / f"state-{name}")
            )
            + f'\n[[sync]]\npath = "{d}"\nid = "data"\nlisten = "{me}:{sync}"\ninterval = "1s"\n'
        )

    cfg_a = parse_config(cfg("edge-a", 100, "127.0.0.1", "127.0.0.2", data["a"]))
    cfg_b = parse_config(cfg("edge-b", 90, "127.0.0.2", "127.0.0.1", data["b"]))
    assert cfg_a.core_config().takeover_needs_sync
    ba, bb = MockBackend(start_time=0.01, stop_time=0.01), MockBackend(start_time=0.01, stop_time=0.01)
    async with supervisor_harness() as h:  # real UDP and TCP on 127.0.0.1/127.0.0.2
        a = await h.boot(cfg_a, ba)
        b = await h.boot(cfg_b, bb)
        with anyio.fail_after(20):
            await a.wait_state(State.MASTER)
            await b.wait_state(State.BACKUP)
        # the standby follows the master's directory
        await wait_for(lambda: (data["b"] / "tags.json").exists(), within=20, what="the standby's copy")
        assert (data["b"] / "tags.json").read_text() == '{"v": 1}'
        # node loss: b serves, and edits its copy while serving
        h.kill("edge-a")
        with anyio.fail_after(20):
            await b.wait_state(State.MASTER)
        before = b.snapshot()["sync"][0]["generation"]
        (data["b"] / "tags.json").write_text('{"v": 2, "edited on": "edge-b"}')
        # the serving node publishes the edit as a new generation (file watching)
        await wait_for(lambda: b.snapshot()["sync"][0]["generation"] > before, within=20, what="a new generation")
        # a returns: before taking the service back it pulls b's data
        a2 = await h.boot(cfg_a)
        with anyio.fail_after(30):
            await a2.wait_state(State.MASTER)
        assert (data["a"] / "tags.json").read_text() == '{"v": 2, "edited on": "edge-b"}'
        assert ba.running and not bb.running  # the failback went through the release handshake
        status = a2.snapshot()["sync"][0]
        assert status["conflicts"] == 0
        # `hasup sync now` on both roles
        await wait_for(
            lambda: b.snapshot()["sync"][0]["role"] == "follower" and b.snapshot()["sync"][0]["in_sync"],
            within=20,
            what="b an in-sync follower",
        )
        assert await a2.sync_now() and await b.sync_now()
        await a2.shutdown()
        await b.shutdown()
