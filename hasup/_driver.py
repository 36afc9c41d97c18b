"""The driver: the one place that feeds the election core and drains its outputs.

It owns the :class:`~hasup.protocol.Node`, the lock that serialises its inputs, the
datagram transport and the state file. Every input goes through :meth:`Driver.input`
(``now = anyio.current_time()``), after which :meth:`Driver.flush` persists what the
core asks to persist (before anything is sent), sends its datagrams and queues its
other actions for the executor. :meth:`Driver.timer_loop` sleeps until the core's
next timer; :meth:`Driver.receiver` feeds datagrams.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager as AsyncContextManager

import anyio
import attrs

from ._errors import HasupError
from ._fastpath import Wakeup, clock, new_lock
from ._statefile import StateFile
from .protocol import Action, Address, CoreConfig, Node, Persist, PersistentState, ServiceStatus
from .transport import LOCAL_NETWORK_ERRORS, DatagramTransport, open_udp_transport

__all__ = ["Driver"]

log = logging.getLogger("hasup")

_TIMER_SLACK = 0.0005
_FINISH_GRACE = 0.5  # how long a resigned node keeps sending its resignation


class Driver:
    """Feeds one :class:`~hasup.protocol.Node`; see the module docstring."""

    def __init__(self, state_file: StateFile, transport: DatagramTransport | None = None) -> None:
        self.state_file = state_file
        self.transport = transport
        self._node: Node | None = None
        # Replaced by the running loop's own primitives in boot() (hasup._fastpath).
        self.lock: AsyncContextManager[object] = anyio.Lock()
        self._now: Callable[[], float] = anyio.current_time
        self._wakeup = Wakeup()
        self._armed = math.inf  # deadline the timer loop currently sleeps until
        self._action_send, self.actions = anyio.create_memory_object_stream[Action](math.inf)
        #: The driver's and adapters' own counters (send errors, backend latencies...).
        self.stats: dict[str, float] = {}
        self._send_link_down = False
        self._tracked_up = True

    # ------------------------------------------------------------------ the node
    @property
    def node(self) -> Node:
        if self._node is None:
            raise RuntimeError("the supervisor is not running")
        return self._node

    @property
    def running(self) -> Node | None:
        """The node, or ``None`` before :meth:`boot`."""
        return self._node

    @property
    def tracked_up(self) -> bool:
        return self._tracked_up

    async def bind(self, listen: Address) -> None:
        """Bind hasup's own UDP socket on ``listen`` unless a transport was injected.
        Raises :class:`OSError` (the caller names the configuration key)."""
        if self.transport is None:
            self.transport = await open_udp_transport(listen)

    async def boot(self) -> tuple[int, PersistentState | None]:
        """Load and bump the boot epoch (persisted before the first send). Returns
        ``(epoch, persisted)`` for :meth:`start`."""
        self.lock, self._now = new_lock(), clock()
        persisted = await self.state_file.aload()
        epoch = self.state_file.next_epoch(persisted)
        await self.state_file.asave(attrs.evolve(persisted or PersistentState(), epoch=epoch))
        return epoch, persisted

    async def start(
        self, core: CoreConfig, epoch: int, persisted: PersistentState | None, initial: ServiceStatus
    ) -> None:
        """Create the node and feed it the backend's first answer."""
        now = self._now()
        self._node = Node(core, boot_epoch=epoch, now=now, persisted=persisted)
        async with self.lock:
            self._node.service_status(initial, now)
            await self.flush()

    def close(self) -> None:
        self._action_send.close()
        self.actions.close()

    # ------------------------------------------------------------------ inputs
    async def input(self, fn: Callable[[Node, float], object]) -> None:
        """Feed one input: ``fn(node, now)`` under the lock, then flush."""
        async with self.lock:
            fn(self.node, self._now())
            await self.flush()

    def count(self, key: str) -> None:
        self.stats[key] = self.stats.get(key, 0) + 1

    async def set_tracked_links(self, up: bool) -> None:
        """Carrier of the tracked interfaces (combined with send errors for the core)."""
        self._tracked_up = up
        async with self.lock:
            self._report_link(self.node)
            await self.flush()

    def _report_link(self, node: Node) -> None:
        node.link_status(self._tracked_up and not self._send_link_down, self._now())

    async def flush(self) -> None:
        """Persist, send, and queue actions. Caller holds :attr:`lock`."""
        node = self.node
        pending: list[Action] = []
        while (action := node.next_action()) is not None:
            if isinstance(action, Persist):
                await self._persist(action.state)
            else:
                pending.append(action)
        assert self.transport is not None
        for data, address in node.datagrams_to_send():
            try:
                await self.transport.send(data, address)
            except OSError as exc:
                self.count("send_errors")
                # The witness's network may be unreachable while the peers' is fine:
                # that is the witness's unreachability (an alarm), not our isolation.
                if exc.errno in LOCAL_NETWORK_ERRORS and not self._send_link_down and address != node.config.witness:
                    self._send_link_down = True
                    log.error("network unusable: %s", exc)
                    self._report_link(node)
                log.debug("send to %s:%d failed: %s", address[0], address[1], exc)
            else:
                if self._send_link_down and address != node.config.witness:
                    self._send_link_down = False
                    log.warning("network usable again")
                    self._report_link(node)
        for action in pending:
            self._action_send.send_nowait(action)
        # Wake the timer loop only when it sleeps too long (wake-ups dominate idle CPU).
        timer = node.get_timer()
        if node.finished or (timer if timer is not None else math.inf) < self._armed:
            self._wakeup.wake()

    async def _persist(self, state: PersistentState) -> None:
        try:
            await self.state_file.asave(state)
        except OSError as exc:
            raise HasupError(f"cannot persist state to {self.state_file.path}: {exc}") from exc

    # ------------------------------------------------------------------ tasks
    async def timer_loop(self) -> None:
        """Fire the core's timers until it has resigned (then return, bounded)."""
        finish_by: float | None = None
        node = self.node
        while True:
            now = self._now()
            if node.finished:
                # Send the resignation and its repeats, then leave (bounded).
                finish_by = finish_by if finish_by is not None else now + _FINISH_GRACE
                if node.get_timer() is None or now >= finish_by:
                    return
            deadline = node.get_timer()
            if finish_by is not None:
                deadline = min(deadline if deadline is not None else math.inf, finish_by)
            self._armed = deadline if deadline is not None else math.inf
            await self._wakeup.wait(self._armed)
            async with self.lock:
                now = self._now()
                timer = node.get_timer()
                # The event loop may wake a hair before the deadline (clock resolution):
                # treat that as due instead of sleeping again for a millisecond.
                if timer is not None and now >= timer - _TIMER_SLACK:
                    node.handle_timer(max(now, timer))
                    await self.flush()

    async def receiver(self) -> None:
        """Feed every datagram to the core."""
        assert self.transport is not None
        node = self.node
        while True:
            data, address = await self.transport.receive()
            async with self.lock:
                node.receive_datagram(data, address, self._now())
                await self.flush()
