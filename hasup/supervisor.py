"""The supervisor: the only place that reads a clock, opens sockets and awaits I/O.

It feeds the election core (:class:`hasup.protocol.Node`) with ``now =
anyio.current_time()``, sends what the core wants sent, executes the core's actions
in order (awaited, verified, their outcome fed back), and sleeps until the core's
next timer or the next datagram, backend event or probe result.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import math
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, aclosing
from types import TracebackType
from typing import Any

import anyio
import attrs
from anyio.abc import TaskGroup, TaskStatus
from anyio.streams.memory import MemoryObjectSendStream

from ._errors import BackendError, ConfigError, HasupError
from ._hooks import HookEvent, HookRunner
from ._notify import SystemdNotifier
from ._statefile import StateFile
from .backends import ServiceBackend
from .config import Config
from .probes import Probe
from .protocol import (
    Action,
    Alarm,
    CoreConfig,
    Node,
    Notify,
    Persist,
    PersistentState,
    ServiceStatus,
    StartService,
    State,
    StopService,
)
from .transport import LOCAL_NETWORK_ERRORS, DatagramTransport, open_udp_transport

__all__ = ["Supervisor", "SupervisorEvent"]

log = logging.getLogger("hasup")

_TIMER_SLACK = 0.0005


@attrs.frozen
class SupervisorEvent:
    """A state change (or alarm) as seen by embedders through :meth:`Supervisor.events`."""

    kind: str  # "state" or "alarm"
    state: State
    previous: State | None
    reason: str
    term: int
    time: float
    wall_time: float


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
        from ._metrics import SupervisorMetrics

        self.metrics = SupervisorMetrics(self)
        from ._syncrunner import SyncRunner

        self._sync = SyncRunner(self) if config.sync else None
        self._claimed_at: float | None = None
        self.probes = list(probes) if probes is not None else config.make_probes(self.backend)
        self._transport = transport
        self._state_file = state_file or StateFile(config.node.state_dir)
        self._node: Node | None = None
        self._lock = anyio.Lock()
        self._wake = anyio.Event()
        self._armed = math.inf  # deadline the timer loop currently sleeps until
        self._changed = anyio.Event()
        self._action_send, self._action_receive = anyio.create_memory_object_stream[Action](math.inf)
        self._subscribers: list[MemoryObjectSendStream[SupervisorEvent]] = []
        self._stats: dict[str, float] = {}
        self._started_wall = time.time()
        self._tg: TaskGroup | None = None
        self._stack: AsyncExitStack | None = None
        self._stopped = anyio.Event()
        self._done = anyio.Event()
        self._leave_running = False
        self._hold = 0.0
        self._status_port: int | None = None
        self._warned_preempt = False
        self._send_link_down = False
        self._tracked_up = True
        #: Python callables (sync or async) called with every state change event.
        self.hooks: list[Callable[[SupervisorEvent], Any]] = []
        self._hook_runner = HookRunner(config.notify)
        self._py_hook_send, self._py_hook_receive = anyio.create_memory_object_stream[SupervisorEvent](math.inf)

    # ------------------------------------------------------------------ public API
    @property
    def node(self) -> Node:
        if self._node is None:
            raise RuntimeError("the supervisor is not running")
        return self._node

    @property
    def state(self) -> State:
        return self._node.state if self._node else State.INIT

    @property
    def status_port(self) -> int | None:
        """The bound port of the status endpoint (useful with ``listen = "127.0.0.1:0"``)."""
        return self._status_port

    @property
    def local_address(self) -> tuple[str, int] | None:
        return self._transport.local_address if self._transport else None

    async def wait_state(self, *states: State) -> State:
        """Wait until the node is in one of ``states``; return it."""
        while self.state not in states:
            await self._changed.wait()
        return self.state

    async def events(self) -> AsyncIterator[SupervisorEvent]:
        """Yield every state change and alarm from now on."""
        send, receive = anyio.create_memory_object_stream[SupervisorEvent](1000)
        self._subscribers.append(send)
        try:
            async with receive:
                async for event in receive:
                    yield event
        finally:
            self._subscribers.remove(send)

    def statistics(self) -> dict[str, float]:
        """Core counters plus the supervisor's own (send errors, backend latencies)."""
        stats: dict[str, float] = dict(self._node.statistics()) if self._node else {}
        stats.update(self._stats)
        if self._hook_runner.runs:
            stats["notify_hook_runs"] = self._hook_runner.runs
            stats["notify_hook_failures"] = self._hook_runner.failures
        return stats

    def snapshot(self) -> dict[str, Any]:
        """The JSON document served at ``/status``."""
        now = anyio.current_time()
        data: dict[str, Any] = (
            self.node.snapshot(now) if self._node else {"node": self.config.node.name, "state": "INIT"}
        )
        data["since_seconds"] = round(now - float(data.pop("since", now)), 3)
        data["backend"] = self.backend.describe()
        if self._sync is not None:
            data["sync"] = self._sync.status()
        data["statistics"] = self.statistics()
        data.pop("counters", None)
        return data

    async def shutdown(self, *, leave_running: bool = False, hold: float = 0.0) -> None:
        """Resign (stop the service unless ``leave_running``) and make :meth:`run` return."""
        if self._node is None:
            self._stopped.set()
            return
        async with self._lock:
            self.node.shutdown(anyio.current_time(), leave_running=leave_running, hold=hold)
            await self._flush()
        with anyio.move_on_after(self.config.stop_timeout + 10):
            await self._done.wait()

    async def switchover(self, target: str | None = None) -> str:
        async with self._lock:
            name = self.node.request_switchover(anyio.current_time(), target)
            await self._flush()
        return name

    async def set_maintenance(self, on: bool) -> None:
        async with self._lock:
            self.node.set_maintenance(on, anyio.current_time())
            await self._flush()

    async def forget_peer(self, name: str) -> None:
        if not any(p.name == name for p in self.node.peers()):
            raise ValueError(f"no peer named {name!r}")
        async with self._lock:
            self.node.forget_peer(name, anyio.current_time())
            await self._flush()

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
        async with self._lock:
            self.node.confirm_stopped(anyio.current_time())
            await self._flush()

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
        core_config = await self._resolved_core_config()
        persisted = await self._state_file.aload()
        epoch = self._state_file.next_epoch(persisted)
        start_state = attrs.evolve(persisted or PersistentState(), epoch=epoch)
        await self._state_file.asave(start_state)  # before the first send
        if self._transport is None:
            listen = self.config.group.listen
            try:
                self._transport = await open_udp_transport(listen)
            except OSError as exc:
                raise HasupError(f"cannot listen on {listen[0]}:{listen[1]}/udp: {exc.strerror or exc}") from None
        notifier = SystemdNotifier.from_environment() if self._notify_systemd else None
        try:
            initial = await self._initial_status()
            now = anyio.current_time()
            self._node = Node(core_config, boot_epoch=epoch, now=now, persisted=persisted)
            log.info(
                "%s: starting in group %d on %s:%d, priority %d, service %s (%s)",
                core_config.name,
                core_config.group,
                *self.config.group.listen,
                core_config.priority,
                initial.value,
                self.backend.describe(),
            )
            async with AsyncExitStack() as stack:
                if self.coordinator is not None:
                    # entered outside the task group so that its own tasks nest properly;
                    # leaving it resigns the lease if this node still holds it
                    await stack.enter_async_context(self.coordinator)
                tg = await stack.enter_async_context(anyio.create_task_group())
                self._tg = tg
                async with self._lock:
                    self.node.service_status(initial, now)
                    await self._flush()
                tg.start_soon(self._receiver)
                tg.start_soon(self._executor)
                tg.start_soon(self._watcher)
                tg.start_soon(self._hook_runner.run)
                tg.start_soon(self._run_python_hooks)
                if self.config.group.track_interface:
                    tg.start_soon(self._track_links)
                if self.coordinator is not None:
                    tg.start_soon(self._leadership)
                if self._sync is not None:
                    tg.start_soon(self._sync.run)
                for probe in self.probes:
                    tg.start_soon(self._prober, probe)
                if self.config.status.listen is not None:
                    self._status_port = await tg.start(self._serve_status)
                if notifier is not None:
                    tg.start_soon(notifier.run, self._done)
                task_status.started()
                await self._timer_loop()
                tg.cancel_scope.cancel()
        finally:
            self._done.set()
            self._action_send.close()
            self._action_receive.close()
            self._py_hook_send.close()
            self._py_hook_receive.close()
            with anyio.CancelScope(shield=True):
                await self._close_resources()
            for send in list(self._subscribers):
                send.close()

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
        if self._transport is not None:
            await self._transport.aclose()

    async def _resolved_core_config(self) -> CoreConfig:
        """Resolve peer host names once, so that datagram sources match them."""
        core = self.config.core_config()
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

    # ------------------------------------------------------------------ the core loop
    async def _timer_loop(self) -> None:
        finish_by: float | None = None
        while True:
            node = self.node
            now = anyio.current_time()
            if node.finished:
                # Send the resignation and its repeats, then leave (bounded).
                finish_by = finish_by if finish_by is not None else now + 0.5
                if node.get_timer() is None or now >= finish_by:
                    return
            deadline = node.get_timer()
            if finish_by is not None:
                deadline = min(deadline if deadline is not None else math.inf, finish_by)
            self._armed = deadline if deadline is not None else math.inf
            with anyio.CancelScope(deadline=self._armed):
                await self._wake.wait()
            self._wake = anyio.Event()
            async with self._lock:
                now = anyio.current_time()
                timer = node.get_timer()
                # The event loop may wake a hair before the deadline (clock resolution):
                # treat that as due instead of sleeping again for a millisecond.
                if timer is not None and now >= timer - _TIMER_SLACK:
                    node.handle_timer(max(now, timer))
                    await self._flush()

    async def _flush(self) -> None:
        """Persist, send, and queue actions. Caller holds ``self._lock``."""
        node = self.node
        pending: list[Action] = []
        while (action := node.next_action()) is not None:
            if isinstance(action, Persist):
                await self._persist(action.state)
            else:
                pending.append(action)
        assert self._transport is not None
        for data, address in node.datagrams_to_send():
            try:
                await self._transport.send(data, address)
            except OSError as exc:
                self._count("send_errors")
                if exc.errno in LOCAL_NETWORK_ERRORS and not self._send_link_down:
                    self._send_link_down = True
                    log.error("network unusable: %s", exc)
                    self._report_link(node)
                log.debug("send to %s:%d failed: %s", address[0], address[1], exc)
            else:
                if self._send_link_down:
                    self._send_link_down = False
                    log.warning("network usable again")
                    self._report_link(node)
        for action in pending:
            self._action_send.send_nowait(action)
        # Wake the timer loop only when it sleeps too long (wake-ups dominate idle CPU).
        timer = node.get_timer()
        if node.finished or (timer if timer is not None else math.inf) < self._armed:
            self._wake.set()
        if not self._warned_preempt:
            self._check_preempt_setting()

    def _report_link(self, node: Node) -> None:
        """One link input for the core: tracked interfaces up and sends working."""
        node.link_status(self._tracked_up and not self._send_link_down, anyio.current_time())

    async def _persist(self, state: PersistentState) -> None:
        try:
            await self._state_file.asave(state)
        except OSError as exc:
            raise HasupError(f"cannot persist state to {self._state_file.path}: {exc}") from exc

    async def _input(self, fn: Callable[[Node, float], None]) -> None:
        async with self._lock:
            fn(self.node, anyio.current_time())
            await self._flush()

    # ------------------------------------------------------------------ tasks
    async def _receiver(self) -> None:
        assert self._transport is not None
        while True:
            data, address = await self._transport.receive()
            async with self._lock:
                self.node.receive_datagram(data, address, anyio.current_time())
                await self._flush()

    async def _executor(self) -> None:
        async for action in self._action_receive:
            if isinstance(action, Notify):
                await self._on_notify(action)
            elif isinstance(action, Alarm):
                self._on_alarm(action)
            elif isinstance(action, StartService):
                if self._sync is not None:
                    await self._sync.quiesce()  # never apply a snapshot under a running service
                await self._run_action(action, self.backend.start, self.config.start_timeout)
            elif isinstance(action, StopService):
                # stop() escalates to a kill itself; the extra margin bounds a hung backend.
                await self._run_action(action, self.backend.stop, self.config.stop_timeout + 15)

    async def _run_action(self, action: StartService | StopService, call: Callable[[], Any], limit: float) -> None:
        verb = "start" if isinstance(action, StartService) else "stop"
        log.info("%s service: %s", verb, action.reason)
        began = anyio.current_time()
        ok, detail = True, ""
        try:
            with anyio.fail_after(limit):
                await call()
        except TimeoutError:
            ok, detail = False, f"{verb} did not finish within {limit:g} s"
        except BackendError as exc:
            ok, detail = False, str(exc)
        elapsed = anyio.current_time() - began
        self._stats[f"backend_{verb}_seconds"] = round(elapsed, 6)
        self.metrics.backend_call(verb, ok, elapsed)
        self._count(f"backend_{verb}_{'ok' if ok else 'failed'}")
        if ok:
            log.info("service %s in %.3f s", "started" if verb == "start" else "stopped", elapsed)
        else:
            log.error("service %s failed after %.3f s: %s", verb, elapsed, detail)
        await self._input(lambda n, now: n.action_result(action, ok, now, detail))

    async def _on_notify(self, action: Notify) -> None:
        if action.state == action.previous:
            log.warning("%s: %s (notifications re-run)", action.state.name, action.reason)
        else:
            log.info("%s: %s", action.state.name, action.reason)
            self.metrics.transition(action.previous, action.state)
            if action.state == State.CLAIMING:
                self._claimed_at = anyio.current_time()
            elif action.state == State.MASTER and action.previous == State.CLAIMING and self._claimed_at:
                self.metrics.failover(anyio.current_time() - self._claimed_at)
                self._count("failovers")
        event = SupervisorEvent(
            "state",
            action.state,
            action.previous,
            action.reason,
            action.term,
            anyio.current_time(),
            time.time(),
        )
        self._publish(event)
        self._hook_runner.submit(
            HookEvent(
                action.state,
                action.previous,
                self.config.node.name,
                self.config.group.id,
                action.term,
                action.reason,
            )
        )
        if self.hooks:
            self._py_hook_send.send_nowait(event)

    async def _run_python_hooks(self) -> None:
        """Python hooks run in order in their own task: a slow one never delays actions."""
        async for event in self._py_hook_receive:
            for hook in list(self.hooks):
                try:
                    result = hook(event)
                    if hasattr(result, "__await__"):
                        await result
                except Exception:
                    self._count("hook_failures")
                    log.exception("notification hook failed")

    def _on_alarm(self, action: Alarm) -> None:
        if action.active:
            log.error("ALARM %s: %s", action.kind, action.detail)
        else:
            log.warning("alarm %s cleared", action.kind)
        self._publish(
            SupervisorEvent(
                "alarm",
                self.state,
                None,
                f"{action.kind}: {action.detail}",
                self.node.term,
                anyio.current_time(),
                time.time(),
            )
        )

    def _publish(self, event: SupervisorEvent) -> None:
        self._changed.set()
        self._changed = anyio.Event()
        for send in list(self._subscribers):
            with contextlib.suppress(anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
                send.send_nowait(event)

    async def _watcher(self) -> None:
        backoff = 0.1
        while True:
            try:
                async with aclosing(self.backend.watch()) as statuses:
                    async for status in statuses:
                        backoff = 0.1
                        await self._observed(status)
            except BackendError as exc:
                log.warning("service watch failed: %s; retrying in %.1f s", exc, backoff)
                await self._input(lambda n, now: n.service_status(ServiceStatus.UNKNOWN, now))
            await anyio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _observed(self, status: ServiceStatus) -> None:
        node = self.node
        if status is not node.service and status is not ServiceStatus.FAILED:
            # A polled status may have been read before our own action finished:
            # confirm anything that contradicts the core before acting on it.
            try:
                status = await self.backend.status()
            except BackendError:
                status = ServiceStatus.UNKNOWN
        if status is not node.service:
            log.info("service is %s", status.value)
            await self._input(lambda n, now: n.service_status(status, now))

    async def _leadership(self) -> None:
        """External election (``[coordinator]``): campaign while the core wants to lead.

        A tenure ends when the coordinator reports the lease lost (the core stops the
        service at once, before the lease can expire) or when the core gives the service
        up (release, fault, shutdown): then the lease is resigned only after the stop is
        confirmed, so the next leader never overlaps.
        """
        coord = self.coordinator
        assert coord is not None
        poll = min(max(self.config.group.advert_interval / 2, 0.02), 0.5)
        vacant_since: float | None = None

        def may_campaign() -> bool:
            # Rank is a preference, not a veto: a better-ranked peer whose heartbeats
            # arrive but that cannot reach the coordinator (cut off from etcd) would
            # otherwise keep every node from leading. When the key stays vacant for
            # longer than the better-ranked candidates had to win it, campaign anyway
            # (etcd still lets only one win), staggered by rank.
            nonlocal vacant_since
            now = anyio.current_time()
            node = self.node
            if coord.current_leader() is not None:
                vacant_since = None
            elif vacant_since is None:
                vacant_since = now
            if node.wants_leadership(now):
                return True
            if (
                vacant_since is None
                or node.state != State.BACKUP
                or node.maintenance
                or node.effective_priority == 0
                or not self._tracked_up
            ):
                return False
            me = (node.effective_priority, self.config.node.name)
            better = sum(1 for p in node.peers() if p.live(now) and p.candidate() and p.rank > me)
            grace = node.master_down_interval() + float(getattr(coord, "request_timeout", 1.0))
            return now - vacant_since >= better * grace

        while True:
            while not may_campaign():  # noqa: ASYNC110 - core state, polled
                await anyio.sleep(poll)
            token: int | None = None
            async with anyio.create_task_group() as tg:

                async def give_up_when_unwanted() -> None:
                    while may_campaign():  # noqa: ASYNC110
                        await anyio.sleep(poll)
                    tg.cancel_scope.cancel()

                tg.start_soon(give_up_when_unwanted)
                token = await coord.campaign()
                tg.cancel_scope.cancel()
            if token is None:
                continue
            log.info("coordinator granted leadership (fencing token %d)", token)
            lost = coord.leader_lost
            await self._input(lambda n, now: n.leadership(True, token, now))  # noqa: B023 - runs at once
            while not lost.is_set():
                node = self.node
                if node.state not in (State.CLAIMING, State.MASTER) and not node.holder:
                    break
                with anyio.move_on_after(poll):
                    await lost.wait()
            if lost.is_set():
                log.error("coordinator leadership lost: %s", coord.lost_reason)
                await self._input(lambda n, now: n.leadership(False, 0, now))
            else:
                await self._input(lambda n, now: n.leadership(False, 0, now))
                await coord.resign()
                log.info("resigned leadership after the service stopped")

    async def _track_links(self) -> None:
        from ._linkwatch import LinkWatcher

        watcher = LinkWatcher(self.config.group.track_interface)
        async with aclosing(watcher.watch()) as changes:
            async for up, detail in changes:
                log.log(logging.INFO if up else logging.ERROR, "%s", detail)
                self._tracked_up = up
                async with self._lock:
                    self._report_link(self.node)
                    await self._flush()

    async def _prober(self, probe: Probe) -> None:
        options = probe.options
        while True:
            if self.node.wants_probe(options.name, anyio.current_time()):
                began = anyio.current_time()
                ok, detail = False, "timed out"
                with anyio.move_on_after(options.timeout):
                    try:
                        outcome = await probe.check()
                        ok, detail = outcome.ok, outcome.detail
                    except Exception as exc:
                        ok, detail = False, f"probe error: {exc!r}"
                took = anyio.current_time() - began
                self._stats[f"probe_{options.name}_seconds"] = round(took, 6)
                self.metrics.probe(options.name, ok, took)
                self._count(f"probe_{options.name}_{'ok' if ok else 'failed'}")
                if not ok:
                    log.info("probe %s failed: %s", options.name, detail)
                await self._input(lambda n, now: n.probe_result(options.name, ok, now))  # noqa: B023 - runs at once
            await anyio.sleep(options.interval)

    async def _serve_status(self, *, task_status: TaskStatus[int]) -> None:
        from ._httpserver import serve_http
        from ._statusapi import StatusAPI

        listen = self.config.status.listen
        assert listen is not None
        host = f"[{listen[0]}]" if ":" in listen[0] else listen[0]
        token = await anyio.to_thread.run_sync(self._write_control_token)
        await serve_http(f"{host}:{listen[1]}", StatusAPI(self, token).handle, task_status=task_status)

    def _write_control_token(self) -> str | None:
        """A fresh secret for operator commands, readable only by hasup's user."""
        path = self._state_file.dir / "control.token"
        token = secrets.token_hex(16)
        try:
            self._state_file.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(token + "\n")
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("operator commands disabled: cannot write %s: %s", path, exc)
            return None
        return token

    # ------------------------------------------------------------------ helpers
    def _count(self, key: str) -> None:
        self._stats[key] = self._stats.get(key, 0) + 1

    def _check_preempt_setting(self) -> None:
        node = self.node
        peers = node.peers()
        if not peers or any(p.last is None for p in peers):
            return
        self._warned_preempt = True
        lowest = all(node.config.priority < (p.last.base_priority if p.last else 0) for p in peers)
        if not node.config.preempt and lowest:
            log.warning(
                "preempt = false has no effect on the lowest-priority node %s: failback is decided by the "
                "preferred node; set preempt = false there to disable automatic failback",
                node.config.name,
            )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
