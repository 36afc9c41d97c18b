"""The ``neuronex`` warm backend against the stand-in's API logic through an httpx
MockTransport (fast tier; tests/cluster/test_neuronex_warm.py runs the real processes)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from hasup import ConfigError, ServiceFailed
from hasup._section import Section, Source
from hasup.backends import ServiceStatus
from hasup.backends.neuronex import NeuronexBackend
from tests.neuronex.standin import Standin

pytestmark = pytest.mark.anyio


class FakeNeuronex(Standin):
    """The stand-in's HTTP API without its MQTT connection (nodes only flip state)."""

    def __init__(self) -> None:
        args = argparse.Namespace(user="admin", password="0000", state_file=None, source="t", mqtt="x:1")
        super().__init__(args)
        self.calls: list[tuple[str, str]] = []
        self.up = True
        self.ignore_stop = False

    def set_running(self, name: str, on: bool) -> None:
        if not on and self.ignore_stop:
            return
        self.running[name] = on

    def transport(self) -> httpx.MockTransport:
        def handler(request: httpx.Request) -> httpx.Response:
            if not self.up:
                raise httpx.ConnectError("connection refused", request=request)
            self.calls.append((request.method, request.url.path))
            query = {k: v for k, v in request.url.params.items()}
            status, payload = self.handle(request.method, request.url.path, query, request.headers, request.content)
            return httpx.Response(status, json=payload)

        return httpx.MockTransport(handler)


def backend(fake: FakeNeuronex, **kw: Any) -> NeuronexBackend:
    kw.setdefault("poll_interval", 0.01)
    return NeuronexBackend(url="http://neuronex.test", transport=fake.transport(), **kw)


async def test_promote_starts_apps_then_drivers_and_demote_the_reverse() -> None:
    fake = FakeNeuronex()
    b = backend(fake)
    assert await b.readiness() == (True, "")
    assert await b.status() is ServiceStatus.STOPPED
    await b.start(term=4)
    assert fake.running == {"modbus-1": True, "mqtt-1": True}
    assert await b.status() is ServiceStatus.RUNNING
    ctl = [c for c in fake.calls if c[1] == "/api/v2/node/ctl"]
    assert len(ctl) == 2
    await b.stop()
    assert fake.running == {"modbus-1": False, "mqtt-1": False}
    assert await b.status() is ServiceStatus.STOPPED
    await b.stop()  # idempotent: 2009 (already stopped) is a confirmed stop
    await b.aclose()


async def test_configured_nodes_and_a_half_promoted_node_is_failed() -> None:
    fake = FakeNeuronex()
    b = backend(fake, nodes=["mqtt-1", "modbus-1"])
    fake.running["mqtt-1"] = True
    assert await b.status() is ServiceStatus.FAILED  # the core demotes it
    await b.start(term=1)  # 2007 (already running) is fine
    assert await b.status() is ServiceStatus.RUNNING
    await b.aclose()


async def test_wrong_credentials_are_a_clear_error() -> None:
    fake = FakeNeuronex()
    b = backend(fake, password="wrong")
    ready, detail = await b.readiness()
    assert not ready and "rejected the credentials of user 'admin' (error 1009)" in detail
    assert await b.check() == [detail]
    with pytest.raises(ServiceFailed, match="credentials"):
        await b.start(term=1)
    await b.aclose()


async def test_unknown_node_is_a_check_error_and_not_ready() -> None:
    fake = FakeNeuronex()
    b = backend(fake, nodes=["modbus-1", "plc-9"])
    assert await b.check() == ["NeuronEX has no node 'plc-9'"]
    assert await b.readiness() == (False, "NeuronEX has no node 'plc-9'")
    await b.aclose()


async def test_unreachable_neuronex() -> None:
    fake = FakeNeuronex()
    fake.up = False
    b = backend(fake)
    ready, detail = await b.readiness()
    assert not ready and "NeuronEX not running" in detail
    assert await b.check() == []  # names are checked when it is reachable
    assert await b.status() is ServiceStatus.STOPPED  # nothing listens: nothing collects
    await b.stop()  # confirmed: the process is down
    with pytest.raises(ServiceFailed, match="promotion failed"):
        await b.start(term=1)  # a failed start: FAULT, the next node is tried
    await b.aclose()


async def test_unconfirmed_demotion_raises() -> None:
    fake = FakeNeuronex()
    b = backend(fake, stop_timeout=0.2)
    await b.start(term=1)
    fake.ignore_stop = True
    with pytest.raises(ServiceFailed, match="demotion not confirmed"):
        await b.stop()
    await b.aclose()


async def test_a_refused_token_logs_in_again() -> None:
    fake = FakeNeuronex()
    b = backend(fake)
    assert (await b.readiness())[0]
    fake.tokens.clear()  # NeuronEX restarted: the old token is unknown
    await b.start(term=2)
    logins = [c for c in fake.calls if c[1] == "/api/v2/login"]
    assert len(logins) == 2
    await b.aclose()


def _section(tmp_path: Path, text: str) -> Section:
    import tomllib

    path = tmp_path / "hasup.toml"
    path.write_text(text)
    return Section(tomllib.loads(text)["service"], path="service", source=Source(str(path), text))


def test_config_errors_are_located(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"service\.url.*not an http"):
        NeuronexBackend.from_config(_section(tmp_path, '[service]\nbackend = "neuronex"\nurl = "ftp://x"\n'))
    with pytest.raises(ConfigError, match=r"service\.nodes"):
        NeuronexBackend.from_config(_section(tmp_path, '[service]\nbackend = "neuronex"\nnodes = []\n'))
    secret = tmp_path / "pass"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    text = f'[service]\nbackend = "neuronex"\npassword_file = "{secret}"\n'
    with pytest.raises(ConfigError, match="password_file.*chmod"):
        NeuronexBackend.from_config(_section(tmp_path, text))
    secret.chmod(0o600)
    b = NeuronexBackend.from_config(_section(tmp_path, text))
    assert b.describe() == "neuronex: http://127.0.0.1:8085 (all nodes, warm standby)"
    assert json.dumps(b.warm) == "true"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_runs_under_trio_too() -> None:
    fake = FakeNeuronex()

    async def main() -> None:
        b = backend(fake)
        await b.start(term=1)
        await b.stop()
        await b.aclose()

    anyio.run(main, backend="trio")


async def test_preflight_turns_rejected_credentials_and_unknown_nodes_into_config_errors(tmp_path: Path) -> None:
    fake = FakeNeuronex()
    text = '[service]\nbackend = "neuronex"\nnodes = ["mqtt-1", "plc-9"]\n'
    b = NeuronexBackend.from_config(_section(tmp_path, text))
    b._transport = fake.transport()
    with pytest.raises(ConfigError) as info:
        await b.preflight()
    assert str(info.value) == f"{tmp_path / 'hasup.toml'}: service.nodes: NeuronEX has no node 'plc-9' (line 3)"
    await b.aclose()
    wrong = backend(fake, password="wrong")
    with pytest.raises(ConfigError, match=r"service\.password_file: NeuronEX rejected the credentials"):
        await wrong.preflight()
    await wrong.aclose()
    fake.up = False  # not running yet: not a configuration mistake
    down = backend(fake)
    await down.preflight()
    await down.aclose()
