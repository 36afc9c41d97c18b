"""The ``docker`` backend: one container, managed through the Docker SDK.

```toml
[service]
backend = "docker"
container = "neuronex"
# docker_host = "unix:///var/run/docker.sock"   # default: DOCKER_HOST / environment
start_timeout = "60s"
stop_timeout = "10s"

[service.create]            # optional: create the container when it does not exist
image = "emqx/neuronex:latest"
ports = ["8085:8085"]
volumes = ["/opt/neuronex/data:/opt/neuronex/data"]
env = { TZ = "UTC" }
# command = ["..."], init = true, network = "host", restart_policy = "no"
```

The SDK is blocking: every call runs in a worker thread (``anyio.to_thread``) under a
per-backend :class:`~anyio.CapacityLimiter`, so the event loop never blocks on dockerd.
Docker and requests exceptions are mapped here, once, to :class:`BackendUnavailable`
(daemon unreachable), :class:`ServiceFailed` (the container failed: exit code, OOM,
health log) and :class:`BackendError` (everything else). See ``docs/backends/docker.md``.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import anyio
import attrs
import docker
import docker.errors
import requests.exceptions

from .._errors import BackendError, BackendUnavailable, ServiceFailed
from ..protocol._enums import ServiceStatus
from . import _docker_compat
from ._docker_events import (
    WATCHED_EVENTS,
    EventStream,
    describe_exit,
    health_log_tail,
    status_from_state,
)
from .base import ServiceBackend

if TYPE_CHECKING:
    from typing import Self

    from .._section import Section

_docker_compat.install()  # close the socket of a failed connect (docker-py #3356)

__all__ = ["CreateSpec", "DockerBackend"]

T = TypeVar("T")

#: Docker's own rule for container names (an ID also matches).
_NAME_RE = re.compile(r"/?[a-zA-Z0-9][a-zA-Z0-9_.-]*")
_PORT_RE = re.compile(
    r"(?:(?P<ip>\d+\.\d+\.\d+\.\d+|\[[0-9a-fA-F:]+\]):)?(?:(?P<host>\d+):)?(?P<container>\d+)(?:/(?P<proto>tcp|udp|sctp))?"
)
#: The label that carries the fencing token (the election term) of the start that
#: created the container.
TERM_LABEL = "io.hasup.term"
#: Restart policies that make dockerd restart the container behind hasup's back.
_FIGHTING_POLICIES = ("always", "unless-stopped", "on-failure")


class _NoSuchContainer(Exception):
    """Internal: the container (or image) named in the call does not exist."""


@attrs.frozen
class CreateSpec:
    """How to create the container when it does not exist (``[service.create]``)."""

    image: str
    command: tuple[str, ...] | None = None
    #: container port ("8085/tcp") → host port, (host ip, host port), or None (ephemeral)
    ports: Mapping[str, Any] = attrs.field(factory=dict)
    volumes: tuple[str, ...] = ()
    env: Mapping[str, str] = attrs.field(factory=dict)
    #: Run an init as PID 1 so SIGTERM reaches the service (see the module docs).
    init: bool = True
    network: str | None = None

    @classmethod
    def from_section(cls, section: Section) -> CreateSpec:
        image = section.get_str("image")
        command = section.get_argv("command", None)
        ports: dict[str, Any] = {}
        for spec in section.get_str_list("ports", ()):
            match = _PORT_RE.fullmatch(spec)
            if match is None:
                raise section.error("ports", f'{spec!r} is not "[ip:]host_port:container_port[/proto]"')
            key = f"{match['container']}/{match['proto'] or 'tcp'}"
            host = int(match["host"]) if match["host"] else None
            ports[key] = (match["ip"].strip("[]"), host) if match["ip"] else host
        volumes = section.get_str_list("volumes", ())
        for volume in volumes:
            if volume.count(":") not in (1, 2):
                raise section.error("volumes", f'{volume!r} is not "source:target[:ro|rw]"')
        env_table = section.raw("env", {})
        if not isinstance(env_table, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str | int | float | bool) for k, v in env_table.items()
        ):
            raise section.error("env", "expected a table of NAME = value")
        env = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in env_table.items()}
        policy = section.get_str("restart_policy", "no")
        if policy != "no":
            raise section.error(
                "restart_policy",
                f'must be "no", got {policy!r}: hasup decides where the service runs, and a '
                "Docker restart policy would restart it behind hasup's back",
            )
        spec = cls(
            image=image,
            command=command,
            ports=ports,
            volumes=volumes,
            env=env,
            init=section.get_bool("init", True),
            network=section.get_str("network", None),
        )
        section.finish()
        return spec


def _map_error(exc: Exception, what: str, where: str) -> BackendError:
    """One place for docker/requests exceptions → hasup errors."""
    if isinstance(exc, requests.exceptions.ConnectionError | ConnectionError | FileNotFoundError):
        hint = ""
        if isinstance(exc.__context__, PermissionError) or "Permission denied" in str(exc):
            hint = " (permission denied on the socket: run as root or join the docker group)"
        return BackendUnavailable(f"{what}: dockerd at {where} is unreachable{hint}: {exc}")
    if isinstance(exc, requests.exceptions.Timeout):
        return BackendUnavailable(f"{what}: dockerd at {where} did not answer in time: {exc}")
    if isinstance(exc, docker.errors.APIError):
        explanation = exc.explanation or str(exc)
        return BackendError(f"{what}: dockerd refused: {explanation}")
    if isinstance(exc, docker.errors.DockerException):
        # Raised e.g. by the API version probe when the daemon is down.
        text = str(exc)
        if "Connection" in text or "No such file" in text or "fetching server API version" in text:
            return BackendUnavailable(f"{what}: dockerd at {where} is unreachable: {text}")
        return BackendError(f"{what}: {text}")
    return BackendError(f"{what}: unexpected {type(exc).__name__}: {exc}")


class DockerBackend(ServiceBackend):
    """Start, stop and watch one Docker container (see the module docstring)."""

    kind: ClassVar[str] = "docker"
    #: Most SDK calls that may run at once for one backend (event streams not counted).
    max_threads: ClassVar[int] = 4
    #: Reconnect backoff of :meth:`watch` (seconds): first retry, cap.
    reconnect_initial: ClassVar[float] = 0.05
    reconnect_max: ClassVar[float] = 1.0
    #: HTTP timeout of ordinary SDK calls (``stop`` adds ``stop_timeout``).
    request_timeout: ClassVar[float] = 30.0

    def __init__(
        self,
        *,
        container: str,
        docker_host: str | None = None,
        start_timeout: float = 60.0,
        stop_timeout: float = 10.0,
        create: CreateSpec | None = None,
    ) -> None:
        self.container = container
        self.docker_host = docker_host
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.create = create
        #: True from start() (or seeing the container run) until stop(): a container that
        #: is not running meanwhile has failed (see status_from_state).
        self._expect_running = False
        #: stop() calls in progress: seeing the container still running then is expected.
        self._stopping = 0
        #: Bumped by start() and stop(): they change what status() says (FAILED →
        #: STOPPED, STOPPED → expected running) without a Docker event, so every watch()
        #: must report the next status even if it equals the last one it yielded.
        self._generation = 0
        self._client: docker.DockerClient | None = None
        self._client_lock: anyio.Lock | None = None
        self._limiter: anyio.CapacityLimiter | None = None
        self._event_limiter: anyio.CapacityLimiter | None = None
        self._streams: set[EventStream] = set()
        self._closed = False

    @classmethod
    def from_config(cls, section: Section) -> Self:
        section.raw("backend")
        container = section.get_str("container")
        if not _NAME_RE.fullmatch(container):
            raise section.error("container", f"{container!r} is not a valid container name")
        docker_host = section.get_str("docker_host", None)
        start_timeout = section.get_duration("start_timeout", 60.0, min=0.1)
        stop_timeout = section.get_duration("stop_timeout", 10.0, min=0.0)
        create_section = section.get_table("create")
        create = CreateSpec.from_section(create_section) if create_section is not None else None
        section.finish()
        return cls(
            container=container.lstrip("/"),
            docker_host=docker_host,
            start_timeout=start_timeout,
            stop_timeout=stop_timeout,
            create=create,
        )

    def describe(self) -> str:
        return f"docker container {self.container!r} on {self._where}"

    @property
    def _where(self) -> str:
        return self.docker_host or os.environ.get("DOCKER_HOST") or "the default socket"

    # -- SDK calls in worker threads ---------------------------------------------------
    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.docker_host:
            env["DOCKER_HOST"] = self.docker_host
        return env

    async def _get_client(self) -> docker.DockerClient:
        if self._closed:
            raise BackendError(f"{self.describe()}: backend is closed")
        if self._client is not None:
            return self._client
        if self._client_lock is None:
            self._client_lock = anyio.Lock()
        async with self._client_lock:
            if self._client is None:
                # version="auto" asks the daemon: blocking, and fails while it is down.
                factory = functools.partial(
                    docker.from_env,
                    version="auto",
                    timeout=int(self.request_timeout),
                    environment=self._environment(),
                )
                self._client = await self._run(factory, "connect")
            return self._client

    async def _run(self, func: Callable[[], T], what: str, *, abandon: bool = True) -> T:
        """Run one SDK call in a worker thread and map its exceptions.

        Read-only calls are abandoned when cancelled (the thread ends by itself within
        ``request_timeout``); calls that change the container (``abandon=False``) are
        waited for, so that a cancelled stop() never looks done while dockerd works on it.
        """
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.max_threads)
        try:
            return await anyio.to_thread.run_sync(func, abandon_on_cancel=abandon, limiter=self._limiter)
        except docker.errors.NotFound as exc:
            raise _NoSuchContainer(exc.explanation or str(exc)) from exc
        except Exception as exc:
            raise _map_error(exc, f"{self.describe()}: {what}", self._where) from exc

    async def _api(self, what: str, method: str, *args: Any, abandon: bool = True, **kwargs: Any) -> Any:
        client = await self._get_client()
        call = functools.partial(getattr(client.api, method), *args, **kwargs)
        return await self._run(call, what, abandon=abandon)

    async def _inspect(self) -> dict[str, Any] | None:
        """``docker inspect`` of the container, ``None`` if it does not exist."""
        try:
            info: dict[str, Any] = await self._api("inspect", "inspect_container", self.container)
        except _NoSuchContainer:
            return None
        return info

    # -- ServiceBackend ---------------------------------------------------------------
    async def status(self) -> ServiceStatus:
        info = await self._inspect()
        return self._status_of(info)

    def _status_of(self, info: Mapping[str, Any] | None) -> ServiceStatus:
        state = info.get("State") if info is not None else None
        if not self._stopping and state is not None and state.get("Status") in ("running", "restarting"):
            # Seen running (e.g. hasup restarted beside a running service): from now on
            # it going away without stop() is a failure.
            self._expect_running = True
        return status_from_state(state, expect_running=self._expect_running)

    async def start(self, *, term: int = 0) -> None:
        """Start the container (creating it from ``[service.create]`` if it does not
        exist) and return once it runs and is healthy.

        ``term`` (the fencing token) reaches only a container created here: as the label
        ``io.hasup.term`` and the variable ``HASUP_TERM``. Labels and environment are
        fixed when a container is created, so an existing container (created by hand,
        or by an earlier start) does not see the term of this start.
        """
        with anyio.move_on_after(self.start_timeout) as scope:
            info = await self._inspect()
            if info is None:
                info = await self._create(term)
            self._refuse_restart_policy(info)
            state = info["State"]
            self._expect_running = True
            self._generation += 1
            if state.get("Paused"):
                await self._api("unpause", "unpause", self.container, abandon=False)
            elif not state.get("Running"):
                try:
                    await self._api("start", "start", self.container, abandon=False)
                except _NoSuchContainer as exc:
                    raise ServiceFailed(f"{self.describe()}: cannot start: {exc}") from exc
                except BackendUnavailable:
                    raise
                except BackendError as exc:
                    # dockerd refused to run it (bad command, missing mount...).
                    raise ServiceFailed(str(exc)) from exc
            info = await self._wait_started()
        if scope.cancelled_caught:
            info = await self._inspect()
            state = info.get("State") if info else None
            raise ServiceFailed(
                f"{self.describe()}: not running and healthy after {self.start_timeout:g}s "
                f"({describe_exit(state)}; health: {(state or {}).get('Health', {}).get('Status', 'none')}; "
                f"health log: {health_log_tail(state)})"
            )

    async def _wait_started(self) -> dict[str, Any]:
        """Poll inspect until running (and healthy when there is a HEALTHCHECK)."""
        delay = 0.01
        while True:
            info = await self._inspect()
            state = info.get("State") if info else None
            status = status_from_state(state, expect_running=True)
            if status is ServiceStatus.RUNNING:
                assert info is not None
                return info
            if status is ServiceStatus.FAILED:
                detail = describe_exit(state)
                if state and state.get("Running"):
                    detail = f"unhealthy; health log: {health_log_tail(state)}"
                else:
                    detail += await self._log_tail()
                raise ServiceFailed(f"{self.describe()}: failed to start: {detail}")
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.2)

    async def _log_tail(self, lines: int = 5) -> str:
        try:
            raw = await self._api("logs", "logs", self.container, tail=lines)
        except (BackendError, _NoSuchContainer):
            return ""
        text = " | ".join(raw.decode(errors="replace").split("\n")).strip(" |")
        return f"; last output: {text[-500:]}" if text else ""

    def _refuse_restart_policy(self, info: Mapping[str, Any]) -> None:
        problem = self._restart_policy_problem(info)
        if problem:
            raise BackendError(problem)

    def _restart_policy_problem(self, info: Mapping[str, Any]) -> str | None:
        policy = ((info.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name") or "no"
        if policy in _FIGHTING_POLICIES:
            return (
                f"{self.describe()}: has restart policy {policy!r}; hasup refuses to manage it "
                "because dockerd would restart it behind hasup's back (two copies after a "
                f"failover). Run: docker update --restart=no {self.container}"
            )
        return None

    async def _create(self, term: int) -> dict[str, Any]:
        if self.create is None:
            raise BackendError(
                f"{self.describe()}: no such container; create it (docker create --name "
                f"{self.container} --init --restart=no ...) or add a [service.create] table"
            )
        spec = self.create
        client = await self._get_client()
        kwargs: dict[str, Any] = {
            "name": self.container,
            "detach": True,
            "init": spec.init,
            "restart_policy": {"Name": "no"},
            "labels": {"hasup.managed": "true", TERM_LABEL: str(term)},
            "environment": {**spec.env, "HASUP_TERM": str(term)},
        }
        if spec.command is not None:
            kwargs["command"] = list(spec.command)
        if spec.ports:
            kwargs["ports"] = dict(spec.ports)
        if spec.volumes:
            kwargs["volumes"] = list(spec.volumes)
        if spec.network:
            kwargs["network_mode"] = spec.network
        try:
            create = functools.partial(client.containers.create, spec.image, **kwargs)
            await self._run(create, "create", abandon=False)
        except _NoSuchContainer as exc:
            raise BackendError(
                f"{self.describe()}: cannot create: image {spec.image!r} is not present "
                f"(hasup never pulls; docker pull/load it first): {exc}"
            ) from exc
        except BackendError as exc:
            if "Conflict" not in str(exc) and "already in use" not in str(exc):
                raise
            # Created concurrently (another hasup, an operator): use it.
        info = await self._inspect()
        if info is None:
            raise BackendError(f"{self.describe()}: created, but it vanished at once")
        return info

    async def stop(self) -> None:
        # From here on a die is the stop we asked for, not a failure.
        self._expect_running = False
        self._generation += 1
        self._stopping += 1
        try:
            await self._stop()
        finally:
            self._stopping -= 1

    async def _stop(self) -> None:
        info = await self._inspect()
        if info is None or not self._processes_may_run(info["State"]):
            return
        try:
            # The daemon sends the stop signal, then SIGKILL after stop_timeout.
            client = await self._get_client()
            await self._run(
                functools.partial(client.api.stop, self.container, timeout=max(0, round(self.stop_timeout))),
                "stop",
                abandon=False,
            )
        except _NoSuchContainer:
            return
        info = await self._inspect()
        if info is not None and self._processes_may_run(info["State"]):
            # Still alive (stop raced a start, or the daemon's stop gave up): kill it.
            try:
                await self._api("kill", "kill", self.container, abandon=False)
                await self._api("wait", "wait", self.container, timeout=int(self.request_timeout), abandon=False)
            except _NoSuchContainer:
                return
            info = await self._inspect()
            if info is not None and self._processes_may_run(info["State"]):
                raise ServiceFailed(
                    f"{self.describe()}: could not confirm the stop: still {describe_exit(info['State'])}"
                )

    @staticmethod
    def _processes_may_run(state: Mapping[str, Any]) -> bool:
        return state.get("Status") not in ("created", "exited", "dead")

    async def health(self) -> tuple[bool, str]:
        info = await self._inspect()
        state = info.get("State") if info else None
        if state is None or not state.get("Running"):
            return False, describe_exit(state)
        health = state.get("Health")
        if not health:
            return True, "running (no HEALTHCHECK)"
        status = str(health.get("Status"))
        if status == "healthy":
            return True, "healthy"
        return False, f"{status}: {health_log_tail(state)}"

    async def check(self) -> list[str]:
        try:
            info = await self._inspect()
        except BackendError as exc:
            return [str(exc)]
        problems = []
        if info is None:
            if self.create is None:
                problems.append(f"{self.describe()}: no such container and no [service.create] table")
            return problems
        policy_problem = self._restart_policy_problem(info)
        if policy_problem:
            problems.append(policy_problem)
        if not (info.get("HostConfig") or {}).get("Init"):
            problems.append(
                f"{self.describe()}: runs without an init; if its PID 1 ignores SIGTERM every stop "
                f"takes stop_timeout ({self.stop_timeout:g}s). Recreate it with --init"
            )
        return problems

    # -- events -----------------------------------------------------------------------
    async def _open_events(self) -> EventStream:
        client = await self._get_client()
        if self._event_limiter is None:
            self._event_limiter = anyio.CapacityLimiter(2)
        filters = {"type": "container", "container": self.container, "event": list(WATCHED_EVENTS)}
        raw = await self._run(functools.partial(client.api.events, decode=True, filters=filters), "events")
        stream = EventStream(raw, self._event_limiter)
        self._streams.add(stream)
        return stream

    async def _status_after(self, event: Mapping[str, Any]) -> ServiceStatus | None:
        """The status an event implies; ``None`` for events that change nothing."""
        action = str(event.get("Action") or event.get("status") or "")
        if action == "die" or action == "destroy":
            # Fast path (no inspect): the container's processes are gone.
            return status_from_state(None, expect_running=self._expect_running)
        if action.startswith("health_status"):
            verdict = action.partition(":")[2].strip()
            return {
                "healthy": ServiceStatus.RUNNING,
                "unhealthy": ServiceStatus.FAILED,
                "starting": ServiceStatus.STARTING,
            }.get(verdict)
        if action in ("kill", "create", "stop"):
            # kill precedes die (and may be ignored by the process); create/stop change
            # nothing running: wait for die/start.
            return None
        # start, restart, pause, unpause, oom: ask the daemon.
        return await self.status()

    async def watch(self) -> AsyncGenerator[ServiceStatus, None]:
        """Yield the container's status at once and on every change.

        Event-driven (docker events filtered to the container). When the event stream
        ends — dockerd stopped or restarted — yields ``UNKNOWN``, reconnects with
        exponential backoff and re-inspects the container to resynchronise.
        """
        last: ServiceStatus | None = None
        generation = self._generation
        backoff = self.reconnect_initial

        def changed(new: ServiceStatus) -> bool:
            nonlocal last, generation
            if new is last and generation == self._generation:
                return False
            last, generation = new, self._generation
            return True

        while True:
            stream: EventStream | None = None
            try:
                # Subscribe first, then inspect: no change can fall between the two.
                stream = await self._open_events()
                current = await self.status()
                backoff = self.reconnect_initial
                if changed(current):
                    yield current
                async for event in stream:
                    new = await self._status_after(event)
                    if new is not None and changed(new):
                        yield new
            except BackendUnavailable:
                pass
            finally:
                if stream is not None:
                    stream.close()
                    self._streams.discard(stream)
            if self._closed:
                return
            if changed(ServiceStatus.UNKNOWN):
                yield ServiceStatus.UNKNOWN
            await anyio.sleep(backoff)
            backoff = min(backoff * 2, self.reconnect_max)
            # The client is kept: its connection pool replaces dropped sockets itself,
            # and other tasks may be using it right now.

    async def aclose(self) -> None:
        """Close event streams and the client; never stops the container."""
        self._closed = True
        for stream in list(self._streams):
            stream.close()
        self._streams.clear()
        client, self._client = self._client, None
        if client is not None:
            # Closing the session only drops pooled sockets: quick, and abandoned if
            # aclose() itself is cancelled.
            await anyio.to_thread.run_sync(client.close, abandon_on_cancel=True)
