"""The supervisor: the composition root of one hasup node.

It builds the parts and runs them in one task group:

* :class:`~hasup._driver.Driver` feeds the election core (:class:`hasup.protocol.Node`)
  with ``now = anyio.current_time()``, persists and sends what it asks, fires its
  timers and queues its actions;
* :class:`~hasup._executor.Executor` carries the actions out in order (backend,
  coordinator, data sync, hooks) and reports their outcome;
* the feeds (:mod:`hasup._feeds`) turn backend events, probe runs and link changes
  into inputs; the status endpoint (:mod:`hasup._statusapi`) serves what it reads.

The public API (:class:`Supervisor`) is for the CLI and embedding programs.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack
from functools import partial
from types import TracebackType
from typing import Any

import anyio
import attrs
from anyio.abc import SocketStream, TaskStatus
from anyio.streams.stapled import MultiListener

from ._driver import Driver
from ._errors import BackendError, ConfigError, HasupError
from ._events import EventHub, SupervisorEvent
from ._executor import Executor, Timeouts
from ._feeds import probe_loop, track_links, watch_readiness, watch_service
from ._hooks import HookRunner
from ._ledger import Ledger
from ._metrics import SupervisorMetrics
from ._notify import SystemdNotifier
from ._statefile import StateFile
from .backends import ServiceBackend
from .config import Config
from .probes import Probe
from .protocol import CoreConfig, Node, ServiceStatus, State
from .transport import DatagramTransport

__all__ = ["Supervisor", "SupervisorEvent"]

log = logging.getLogger("hasup")


class Supervisor:
    """Run one node of a hasup group.

    Use it as ``async with Supervisor(config) as sup: ...`` (the supervisor runs in the
    background and resigns gracefully on exit), or start it in your own task group
    with ``await tg.start(sup.run)`` (ready once the socket is bound).
    """

    def __init__(
        self,
        config: Config,
        *,
        backend: ServiceBackend | None = None,
        probes: Sequence[Probe] | None = None,
        transport: DatagramTransport | None = None,
        state_file: StateFile | None = None,  # or hasup.testing.MemoryStateFile
        notify_systemd: bool = True,
    ) -> None:
        self.config = config
        if backend is None and config.backend_kind == "callback":
            raise ConfigError(
                'backend = "callback" needs the backend object: Supervisor(config, backend=CallbackBackend(...))',
                file=config.file,
                key="service.backend",
            )
        #: The supervisor closes only a backend it created itself.
        self._owns_backend = backend is None
        self.backend = backend if backend is not None else config.make_backend()
        self._notify_systemd = notify_systemd
        self.coordinator = config.make_coordinator()
        self.probes = list(probes) if probes is not None else config.make_probes(self.backend)
        self._state_file = state_file or StateFile(config.node.state_dir)
        self._driver = Driver(self._state_file, transport)
        self._own_transport = transport is None
        self._events = EventHub(self._driver.count)
        self._hook_runner = HookRunner(config.notify)
        self._vips = None
        if config.vips:
            from ._vip import VipManager

            self._vips = VipManager(config.vips)
        self.metrics = SupervisorMetrics(
            config.node.name,
            lambda: self._driver.running,
            self.statistics,
            vips=self._vips.status if self._vips is not None else None,
        )
        self._leadership = None
        if self.coordinator is not None:
            from ._leadership import LeaderLink

            self._leadership = LeaderLink(self.coordinator, self._driver)
        self._sync = None
        if config.sync:
            from ._syncrunner import SyncRunner

            self._sync = SyncRunner(
                self._driver,
                config.sync_settings(),
                group_keys=config.group.secrets,
                node_name=config.node.name,
                state_dir=config.node.state_dir,
                peer_hosts=[peer.address[0] for peer in config.group.peers],
            )
        self.ledger = Ledger(config.node.state_dir, config.node.name)
        self._executor = Executor(
            self._driver,
            self.backend,
            timeouts=Timeouts(config.start_timeout, config.stop_timeout),
            metrics=self.metrics,
            events=self._events,
            hooks=self._hook_runner,
            identity=(config.node.name, config.group.id),
            leadership=self._leadership,
            sync=self._sync,
            vips=self._vips,
            ledger=self.ledger,
        )
        self._stack: AsyncExitStack | None = None
        self._stopped = anyio.Event()
        self._done = anyio.Event()
        self._status_port: int | None = None

    # ------------------------------------------------------------------ public API
    @property
    def node(self) -> Node:
        """The running election core (read-only use; feed it through this class)."""
        return self._driver.node

    @property
    def state(self) -> State:
        node = self._driver.running
        return node.state if node else State.INIT

    @property
    def maintenance(self) -> bool:
        return self.node.maintenance

    @property
    def hooks(self) -> list[Callable[[SupervisorEvent], Any]]:
        """Python callables (sync or async) called with every state change event."""
        return self._events.hooks

    @property
    def status_port(self) -> int | None:
        """The bound port of the status endpoint (useful with ``listen = "127.0.0.1:0"``)."""
        return self._status_port

    @property
    def local_address(self) -> tuple[str, int] | None:
        transport = self._driver.transport
        return transport.local_address if transport else None

    async def wait_state(self, *states: State) -> State:
        """Wait until the node is in one of ``states``; return it."""
        while self.state not in states:
            await self._events.changed()
        return self.state

    async def events(self) -> AsyncIterator[SupervisorEvent]:
        """Yield every state change and alarm from now on."""
        async for event in self._events.subscribe():
            yield event

    def statistics(self) -> dict[str, float]:
        """Core counters plus the supervisor's own (send errors, backend latencies)."""
        node = self._driver.running
        stats: dict[str, float] = dict(node.statistics()) if node else {}
        stats.update(self._driver.stats)
        if self._hook_runner.runs:
            stats["notify_hook_runs"] = self._hook_runner.runs
            stats["notify_hook_failures"] = self._hook_runner.failures
        if self._vips is not None:
            stats.update({f"vip_{k}": v for k, v in self._vips.stats.items()})
        return stats

    def render_metrics(self) -> bytes:
        """The Prometheus text exposition served at ``/metrics``."""
        return self.metrics.render()

    def snapshot(self) -> dict[str, Any]:
        """The JSON document served at ``/status``."""
        now = anyio.current_time()
        node = self._driver.running
        data: dict[str, Any] = node.snapshot(now) if node else {"node": self.config.node.name, "state": "INIT"}
        data["since_seconds"] = round(now - float(data.pop("since", now)), 3)
        data["backend"] = self.backend.describe()
        if self._sync is not None:
            data["sync"] = self._sync.status()
        if self._vips is not None:
            data["vips"] = self._vips.status()
        data["handovers"] = self.ledger.recent(10)
        data["statistics"] = self.statistics()
        data.pop("counters", None)
        return data

    async def shutdown(self, *, leave_running: bool = False, hold: float = 0.0) -> None:
        """Resign (stop the service unless ``leave_running``) and make :meth:`run` return."""
        if self._driver.running is None:
            self._stopped.set()
            return
        await self._driver.input(lambda n, now: n.shutdown(now, leave_running=leave_running, hold=hold))
        with anyio.move_on_after(self.config.stop_timeout + 10):
            await self._done.wait()

    async def switchover(self, target: str | None = None) -> str:
        """Hand the service to ``target`` (or the best BACKUP); returns its name.
        Raises ``ValueError`` when it cannot be done."""
        names: list[str] = []
        await self._driver.input(lambda n, now: names.append(n.request_switchover(now, target)))
        return names[0]

    async def set_maintenance(self, on: bool) -> None:
        await self._driver.input(lambda n, now: n.set_maintenance(on, now))

    async def set_group_maintenance(self, on: bool) -> None:
        """``hasup maintenance on|off --group``: for every node of the group, persisted."""
        await self._driver.input(lambda n, now: n.set_group_maintenance(on, now))

    @property
    def group_maintenance(self) -> bool:
        return self.node.group_maintenance

    async def forget_peer(self, name: str) -> None:
        if not any(p.name == name for p in self.node.peers()):
            raise ValueError(f"no peer named {name!r}")
        await self._driver.input(lambda n, now: n.forget_peer(name, now))

    async def sync_now(self) -> list[int]:
        """``hasup sync now``: publish (holder) or pull (standby) every ``[[sync]]`` now."""
        if self._sync is None:
            raise ValueError("no [[sync]] is configured")
        try:
            return await self._sync.sync_now()
        except TimeoutError:
            raise ValueError("the pull did not finish within pull_timeout") from None
        except (HasupError, OSError) as exc:
            raise ValueError(str(exc)) from exc

    async def confirm_stopped(self) -> None:
        await self._driver.input(lambda n, now: n.confirm_stopped(now))

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> Supervisor:
        self._stack = AsyncExitStack()
        tg = await self._stack.enter_async_context(anyio.create_task_group())
        await tg.start(self.run)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._stack is not None
        try:
            if exc_type is None:
                await self.shutdown()
            else:
                with anyio.CancelScope(shield=True), anyio.move_on_after(self.config.stop_timeout + 5):
                    await self.shutdown()
        finally:
            self._stopped.set()
            await self._stack.aclose()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until :meth:`shutdown` completes (or the surrounding scope is cancelled)."""
        driver = self._driver
        if self._vips is not None:
            self._vips.prepare()  # devices and capabilities, before anything is bound
        core = await self._resolved_core_config()
        notifier = SystemdNotifier.from_environment() if self._notify_systemd else None
        status_listener: MultiListener[SocketStream] | None = None
        try:
            status_listener = await self._bind_listeners()
            epoch, persisted = await driver.boot()
            initial = await self._initial_status()
            log.info(
                "%s: starting in group %d on %s:%d, priority %d, service %s (%s)",
                core.name,
                core.group,
                *self.config.group.listen,
                core.priority,
                initial.value,
                self.backend.describe(),
            )
            async with AsyncExitStack() as stack:
                if self.coordinator is not None:
                    # entered outside the task group so that its own tasks nest properly;
                    # leaving it resigns the lease if this node still holds it
                    await stack.enter_async_context(self.coordinator)
                tg = await stack.enter_async_context(anyio.create_task_group())
                await driver.start(core, epoch, persisted, initial)
                tg.start_soon(driver.receiver)
                tg.start_soon(watch_service, driver, self.backend)
                if self.backend.warm:
                    tg.start_soon(watch_readiness, driver, self.backend)
                tg.start_soon(self._hook_runner.run)
                tg.start_soon(self._events.run_hooks)
                if self._leadership is not None:
                    await tg.start(self._leadership.run)
                if self._sync is not None:
                    await tg.start(self._sync.run)
                if self._vips is not None:
                    await tg.start(self._vips.run)
                tg.start_soon(self._executor.run)
                tracked = self._tracked_interfaces()
                if tracked:
                    tg.start_soon(track_links, driver, tracked)
                for probe in self.probes:
                    tg.start_soon(probe_loop, driver, probe, self.metrics)
                if status_listener is not None:
                    from ._statusapi import serve_status

                    self._status_port = await tg.start(
                        partial(serve_status, operator_token=self.config.status.operator_token),
                        self,
                        status_listener,
                        self._state_file.dir,
                    )
                if notifier is not None:
                    tg.start_soon(notifier.run, self._done)
                task_status.started()
                await driver.timer_loop()
                tg.cancel_scope.cancel()
        finally:
            self._done.set()
            driver.close()
            self._events.close()
            self._hook_runner.close()
            with anyio.CancelScope(shield=True):
                if status_listener is not None:
                    await status_listener.aclose()  # closed already unless serving never began
                await self._close_resources()

    async def _bind_listeners(self) -> MultiListener[SocketStream] | None:
        """Bind the heartbeat socket and the status endpoint before anything else
        happens; a port that cannot be bound is a :class:`ConfigError` naming its key."""
        from ._listen import ListenSpec, bind_error

        listen = self.config.group.listen
        try:
            await self._driver.bind(listen)
        except OSError as exc:
            raise bind_error(self.config, ListenSpec("group.listen", *listen, "udp"), exc) from None
        status = self.config.status.listen
        if status is None:
            return None
        from ._statusapi import open_status_listener

        try:
            return await open_status_listener(status)
        except OSError as exc:
            raise bind_error(self.config, ListenSpec("status.listen", *status, "tcp"), exc) from None

    def _tracked_interfaces(self) -> tuple[str, ...]:
        """``[group] track_interface``, or by default the interfaces that carry the
        heartbeats (only with hasup's own UDP socket: an injected transport has none)."""
        group = self.config.group
        if group.track_interface is not None:
            return group.track_interface
        if not self._own_transport:
            return ()
        from ._iface import interfaces_for

        try:
            found = interfaces_for(group.listen[0], [p.address[0] for p in group.peers])
        except OSError as exc:
            log.warning(
                "link tracking off: cannot tell which interface carries the heartbeats (%s); "
                "set [group] track_interface",
                exc,
            )
            return ()
        log.info(
            "tracking link of %s (carries the heartbeats; [group] track_interface = [] turns this off)",
            ", ".join(found),
        )
        return found

    async def _close_resources(self) -> None:
        for probe in self.probes:
            try:
                await probe.aclose()
            except Exception:
                log.debug("closing %s failed", probe.describe(), exc_info=True)
        if self._owns_backend:
            try:
                await self.backend.aclose()
            except Exception:
                log.debug("closing the backend failed", exc_info=True)
        transport = self._driver.transport
        if transport is not None:
            await transport.aclose()

    async def _resolved_core_config(self) -> CoreConfig:
        """Resolve peer host names once, so that datagram sources match them."""
        core = self.config.core_config()
        if self.backend.warm != core.warm:
            core = attrs.evolve(core, warm=self.backend.warm)  # an embedder's own backend object
        if self.coordinator is not None:
            core = attrs.evolve(core, coordinator_timeout=self.coordinator.request_timeout)
        peers = []
        for peer in core.peers:
            host, port = peer.address
            if _is_ip(host):
                peers.append(peer)
                continue
            infos = await anyio.getaddrinfo(host, port, type=2)  # SOCK_DGRAM
            resolved = str(infos[0][4][0]) if infos else host
            peers.append(attrs.evolve(peer, address=(resolved, port)))
        return attrs.evolve(core, peers=tuple(peers))

    async def _initial_status(self) -> ServiceStatus:
        try:
            with anyio.fail_after(max(5.0, self.config.start_timeout)):
                return await self.backend.status()
        except (BackendError, TimeoutError) as exc:
            log.warning("cannot read the service status at start-up: %s (treated as UNKNOWN)", exc)
            return ServiceStatus.UNKNOWN


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
