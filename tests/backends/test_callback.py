"""The callback backend: Python callables as a service, for embedding programs."""

from __future__ import annotations

import tomllib
from collections.abc import AsyncIterator
from contextlib import aclosing

import anyio
import pytest

from hasup._errors import BackendError, ConfigError, ServiceFailed
from hasup._section import Section, Source
from hasup.backends import load_backend_class
from hasup.backends.callback import CallbackBackend
from hasup.protocol._enums import ServiceStatus


class FakeService:
    """What an embedding program would manage: here, just a flag."""

    def __init__(self) -> None:
        self.running = False
        self.calls: list[str] = []

    async def start(self) -> None:
        self.calls.append("start")
        self.running = True

    async def stop(self) -> None:
        self.calls.append("stop")
        self.running = False

    async def status(self) -> ServiceStatus:
        return ServiceStatus.RUNNING if self.running else ServiceStatus.STOPPED


@pytest.mark.anyio
async def test_delegates_to_callables() -> None:
    service = FakeService()
    backend = CallbackBackend(service.start, service.stop, service.status)
    assert await backend.status() is ServiceStatus.STOPPED
    await backend.start()
    assert await backend.status() is ServiceStatus.RUNNING
    await backend.stop()
    assert service.calls == ["start", "stop"]
    assert backend.describe() == "callback: FakeService.start"
    assert load_backend_class("callback") is CallbackBackend


@pytest.mark.anyio
async def test_exceptions_are_mapped() -> None:
    async def broken() -> None:
        raise RuntimeError("disk full")

    async def bad_status() -> ServiceStatus:
        return "running"  # type: ignore[return-value]

    backend = CallbackBackend(broken, broken, bad_status)
    with pytest.raises(ServiceFailed, match="start callback failed: RuntimeError") as info:
        await backend.start()
    assert isinstance(info.value.__cause__, RuntimeError)
    with pytest.raises(BackendError, match="stop callback failed") as stop_info:
        await backend.stop()
    assert not isinstance(stop_info.value, ServiceFailed)
    with pytest.raises(BackendError, match=r"expected a hasup\.ServiceStatus"):
        await backend.status()


@pytest.mark.anyio
async def test_backend_errors_pass_through() -> None:
    async def refuse() -> None:
        raise ServiceFailed("collector license expired")

    service = FakeService()
    backend = CallbackBackend(refuse, service.stop, service.status)
    with pytest.raises(ServiceFailed, match=r"^collector license expired$"):
        await backend.start()


@pytest.mark.anyio
async def test_custom_watch() -> None:
    service = FakeService()
    changes: list[ServiceStatus] = [ServiceStatus.RUNNING, ServiceStatus.FAILED]
    closed = anyio.Event()

    async def watch() -> AsyncIterator[ServiceStatus]:
        try:
            for status in changes:
                yield status
            await anyio.sleep_forever()
        finally:
            closed.set()

    backend = CallbackBackend(service.start, service.stop, service.status, watch=watch)
    seen: list[ServiceStatus] = []
    with anyio.fail_after(5):
        async with aclosing(backend.watch()) as statuses:
            async for status in statuses:
                seen.append(status)
                if len(seen) == 2:
                    break
        await closed.wait()  # closing ours closed the embedder's iterator too
    assert seen == changes


@pytest.mark.anyio
async def test_watch_errors_are_mapped() -> None:
    service = FakeService()

    async def watch() -> AsyncIterator[ServiceStatus]:
        yield ServiceStatus.RUNNING
        raise ConnectionError("bus gone")

    backend = CallbackBackend(service.start, service.stop, service.status, watch=watch)
    async with aclosing(backend.watch()) as statuses:
        assert await anext(statuses) is ServiceStatus.RUNNING
        with pytest.raises(BackendError, match="watch callback failed: ConnectionError"):
            await anext(statuses)


@pytest.mark.anyio
async def test_default_watch_polls_status() -> None:
    service = FakeService()
    backend = CallbackBackend(service.start, service.stop, service.status, poll_interval=0.01)
    seen: list[ServiceStatus] = []
    with anyio.fail_after(5):
        async with aclosing(backend.watch()) as statuses:
            async for status in statuses:
                seen.append(status)
                if status is ServiceStatus.STOPPED:
                    service.running = True  # changed behind the backend's back
                else:
                    break
    assert seen == [ServiceStatus.STOPPED, ServiceStatus.RUNNING]


def test_not_callable() -> None:
    with pytest.raises(TypeError, match="stop must be callable"):
        CallbackBackend(FakeService().start, "systemctl stop x", FakeService().status)  # type: ignore[arg-type]


def test_from_config_is_refused() -> None:
    text = '[service]\nbackend = "callback"\n'
    section = Section(tomllib.loads(text)["service"], path="service", source=Source("hasup.toml", text))
    with pytest.raises(ConfigError, match=r"hasup\.toml: service\.backend: .* Python API only") as info:
        CallbackBackend.from_config(section)
    assert info.value.line == 2
