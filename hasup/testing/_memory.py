"""In-memory stand-ins for the supervisor's I/O: network, backend, state file.

They run on whatever clock the event loop has, so supervisor tests on trio's
``MockClock`` (through anyio's pytest plugin) assert exact timings in milliseconds.
"""

from __future__ import annotations

import math
import random
from collections.abc import AsyncGenerator

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._errors import ServiceFailed
from .._section import Section
from .._statefile import StateFile
from ..backends.base import ServiceBackend
from ..protocol import Address, PersistentState, ServiceStatus

__all__ = ["MemoryNetwork", "MemoryStateFile", "MemoryTransport", "MockBackend"]


class MemoryNetwork:
    """Datagrams between :class:`MemoryTransport` endpoints (instant), with loss and cuts."""

    def __init__(self, *, loss: float = 0.0, seed: int = 0) -> None:
        self.loss = loss
        self._rng = random.Random(seed)
        self._endpoints: dict[Address, MemoryTransport] = {}
        self._blocked: set[tuple[Address, Address]] = set()
        self.delivered = 0
        #: (src, dst) → clock time of the last datagram delivered on that path.
        self.last_delivery: dict[tuple[Address, Address], float] = {}

    def endpoint(self, address: Address) -> MemoryTransport:
        """A transport bound to ``address`` (replaces a closed one at the same address)."""
        transport = MemoryTransport(self, address)
        self._endpoints[address] = transport
        return transport

    def block(self, src: Address, dst: Address) -> None:
        self._blocked.add((src, dst))

    def isolate(self, address: Address) -> None:
        for other in self._endpoints:
            if other != address:
                self._blocked.update({(address, other), (other, address)})

    def heal(self) -> None:
        self._blocked.clear()

    def _deliver(self, src: Address, data: bytes, dst: Address) -> None:
        target = self._endpoints.get(dst)
        if target is None or target.closed or (src, dst) in self._blocked:
            return
        if self.loss and self._rng.random() < self.loss:
            return
        self.delivered += 1
        self.last_delivery[(src, dst)] = anyio.current_time()
        target._inbox_send.send_nowait((data, src))


class MemoryTransport:
    """One endpoint of a :class:`MemoryNetwork` (implements ``DatagramTransport``)."""

    def __init__(self, network: MemoryNetwork, address: Address) -> None:
        self._network = network
        self._address = address
        self.closed = False
        self._inbox_send: MemoryObjectSendStream[tuple[bytes, Address]]
        self._inbox: MemoryObjectReceiveStream[tuple[bytes, Address]]
        self._inbox_send, self._inbox = anyio.create_memory_object_stream[tuple[bytes, Address]](math.inf)

    @property
    def local_address(self) -> Address:
        return self._address

    async def send(self, data: bytes, address: Address) -> None:
        if self.closed:
            raise OSError("transport closed")
        self._network._deliver(self._address, data, address)

    async def receive(self) -> tuple[bytes, Address]:
        return await self._inbox.receive()

    async def aclose(self) -> None:
        self.closed = True
        self._inbox_send.close()
        self._inbox.close()


class MemoryStateFile(StateFile):
    """Keeps the persisted state in memory (no threads: safe on a mock clock)."""

    def __init__(self, initial: PersistentState | None = None) -> None:
        super().__init__("/nonexistent")
        self.state = initial
        self.writes = 0
        self._epoch = 1000

    async def aload(self) -> PersistentState | None:
        return self.state

    async def asave(self, state: PersistentState) -> None:
        self.state = state
        self.writes += 1

    def next_epoch(self, previous: PersistentState | None) -> int:
        self._epoch += 1
        return max(self._epoch, (previous.epoch + 1) if previous else 0)


class MockBackend(ServiceBackend):
    """A service that takes ``start_time``/``stop_time`` to start/stop, and can crash.

    ``fail_start``/``fail_stop`` make the next calls raise. ``history`` records calls;
    ``last_term`` is the fencing token of the last start() (None before the first).
    """

    kind = "mock"

    def __init__(self, *, start_time: float = 0.05, stop_time: float = 0.05, running: bool = False) -> None:
        self.start_time = start_time
        self.stop_time = stop_time
        self.running = running
        self.fail_start = False
        self.fail_stop = False
        self.history: list[tuple[float, str]] = []
        self.last_term: int | None = None
        self._watchers: list[MemoryObjectSendStream[ServiceStatus]] = []

    def _push(self, status: ServiceStatus) -> None:
        for send in list(self._watchers):
            send.send_nowait(status)

    @classmethod
    def from_config(cls, section: Section) -> MockBackend:
        section.raw("backend")
        backend = cls(
            start_time=section.get_duration("start_time", 0.05),
            stop_time=section.get_duration("stop_time", 0.05),
        )
        section.finish()
        return backend

    def _status(self) -> ServiceStatus:
        return ServiceStatus.RUNNING if self.running else ServiceStatus.STOPPED

    async def start(self, *, term: int = 0) -> None:
        self.history.append((anyio.current_time(), "start"))
        self.last_term = term
        await anyio.sleep(self.start_time)
        if self.fail_start:
            raise ServiceFailed("mock start failure")
        self.running = True
        self._push(self._status())

    async def stop(self) -> None:
        self.history.append((anyio.current_time(), "stop"))
        await anyio.sleep(self.stop_time)
        if self.fail_stop:
            raise ServiceFailed("mock stop failure")
        self.running = False
        self.history.append((anyio.current_time(), "stopped"))
        self._push(self._status())

    def crash(self) -> None:
        """The service dies; the watch reports FAILED at once."""
        self.running = False
        self.history.append((anyio.current_time(), "crash"))
        self._push(ServiceStatus.FAILED)

    async def status(self) -> ServiceStatus:
        return self._status()

    async def watch(self) -> AsyncGenerator[ServiceStatus, None]:
        send, receive = anyio.create_memory_object_stream[ServiceStatus](math.inf)
        self._watchers.append(send)
        try:
            with send, receive:
                yield self._status()
                async for status in receive:
                    yield status
        finally:
            self._watchers.remove(send)

    def describe(self) -> str:
        return "mock"
