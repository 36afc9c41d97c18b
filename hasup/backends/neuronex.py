"""The ``neuronex`` backend: warm standby for NeuronEX (EMQX Neuron) over its HTTP API.

NeuronEX runs on every node (its own systemd unit or container, restarted by it); hasup
*promotes* the holder by starting its southbound driver nodes and northbound app nodes
and *demotes* the others by stopping them, so that a move costs a node start, not
NeuronEX's whole start-up. The API, as implemented in emqx/neuron and documented by EMQ:

* ``POST /api/v2/login`` ``{"name", "pass"}`` → ``{"token"}``; every other call carries
  ``Authorization: Bearer <token>``. A wrong name/password is HTTP 401 with
  ``{"error": 1009}`` (NEU_ERR_INVALID_USER_OR_PASSWORD); a missing/expired/invalid
  token is 401/403 with 1004-1008.
* ``GET /api/v2/node?type=1`` (southbound drivers) / ``type=2`` (northbound apps) →
  ``{"nodes": [{"name", "plugin"}, ...]}``.
* ``POST /api/v2/node/ctl`` ``{"node", "cmd"}``, ``cmd`` 0 = start, 1 = stop
  (NEU_ADAPTER_CTL_START/STOP) → ``{"error": 0}``; 2007 (NEU_ERR_NODE_IS_RUNNING) and
  2009 (NEU_ERR_NODE_IS_STOPED) answer a start/stop of a node already there (HTTP 409);
  2003 (NEU_ERR_NODE_NOT_EXIST) is HTTP 404.
* ``GET /api/v2/node/state?node=<name>`` → ``{"running", "link", "rtt", ...}`` with
  ``running`` 1 INIT, 2 READY, 3 RUNNING, 4 STOPPED (neu_node_running_state_e).

Sources: emqx/neuron ``plugins/restful/handle.c`` (routes), ``adapter_handle.c``
(node, node/ctl, node/state handlers), ``src/utils/http.c`` (error code → HTTP
status), ``include/neuron/errcodes.h``, ``include/neuron/adapter.h`` (running states),
``include/neuron/msg.h`` (NEU_ADAPTER_CTL_*), ``tests/ft/neuron/api.py`` (request
bodies); https://docs.emqx.com/en/neuronex/latest/api/api-docs.html.

What counts as what (docs/backends/neuronex.md):

* promoted (RUNNING) = every controlled node reports ``running`` 3; standby (STOPPED) =
  none does, *or* nothing listens on the API port (connection refused: the process is
  down, so nothing collects); some but not all = FAILED (a holder half-promoted, or a
  standby collecting: the core demotes it); any other failure = UNKNOWN.
* ready = NeuronEX answers, the login works and every configured node exists.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import anyio
import httpx

from .._errors import BackendError, BackendUnavailable, ConfigError, ServiceFailed
from ..protocol._enums import ServiceStatus
from .base import ServiceBackend

if TYPE_CHECKING:
    from typing import Self

    from .._section import Section

__all__ = ["NeuronexBackend", "NeuronexError"]

#: neu_node_running_state_e
RUNNING = 3
#: NEU_ADAPTER_CTL_START / NEU_ADAPTER_CTL_STOP
CTL_START, CTL_STOP = 0, 1
#: errcodes.h
ERR_INVALID_USER_OR_PASSWORD = 1009
ERR_TOKEN = range(1004, 1009)  # need / decode / expired / validate / invalid token
ERR_NODE_NOT_EXIST = 2003
ERR_NODE_IS_RUNNING = 2007
ERR_NODE_IS_STOPPED = 2009
#: node types of GET /api/v2/node (neu_node_type_e)
DRIVER, APP = 1, 2


class NeuronexError(BackendError):
    """NeuronEX answered with an error (``code`` is its ``error`` field)."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


class _Down(BackendUnavailable):
    """Nothing listens on the API port: the NeuronEX process is not running."""


class NeuronexBackend(ServiceBackend):
    """Promote/demote NeuronEX's driver and app nodes through its HTTP API.

    ``nodes``: the nodes to control (``None``: every southbound driver, then every
    northbound app, as listed by NeuronEX). Promotion starts the apps first, then the
    drivers (no sample is polled before its publisher runs); demotion stops the drivers
    first, then the apps. ``transport`` is for tests (an httpx transport).
    """

    kind: ClassVar[str] = "neuronex"
    warm: ClassVar[bool] = True

    def __init__(
        self,
        *,
        url: str = "http://127.0.0.1:8085",
        username: str = "admin",
        password: str = "0000",
        nodes: Sequence[str] | None = None,
        request_timeout: float = 2.0,
        start_timeout: float = 30.0,
        stop_timeout: float = 30.0,
        poll_interval: float = 0.2,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.username = username
        self._password = password
        self.nodes = tuple(nodes) if nodes is not None else None
        self.request_timeout = request_timeout
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.poll_interval = poll_interval
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._token: str | None = None
        #: ``Section.error`` of the table it was built from (located config errors).
        self._located: Callable[[str | None, str], ConfigError] | None = None

    @classmethod
    def from_config(cls, section: Section) -> Self:
        section.raw("backend")
        url = section.get_str("url", "http://127.0.0.1:8085")
        if not url.startswith(("http://", "https://")):
            raise section.error("url", f"{url!r} is not an http:// or https:// URL")
        username = section.get_str("username", "admin")
        password_file = section.get_str("password_file", None)
        password = "0000"  # NeuronEX's documented default
        if password_file is not None:
            from .._strictmodes import secret_problem

            problem = secret_problem(password_file)
            if problem:
                raise section.error("password_file", problem)
            try:
                password = Path(password_file).read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                raise section.error("password_file", f"cannot read: {exc}") from None
        nodes = section.get_str_list("nodes", None)
        if nodes is not None and (not nodes or len(set(nodes)) != len(nodes) or not all(nodes)):
            raise section.error("nodes", "must be a non-empty list of distinct node names (omit it for all nodes)")
        backend = cls(
            url=url,
            username=username,
            password=password,
            nodes=nodes,
            request_timeout=section.get_duration("request_timeout", 2.0, min=0.01, max=60.0),
            start_timeout=section.get_duration("start_timeout", 30.0, min=0.01),
            stop_timeout=section.get_duration("stop_timeout", 30.0, min=0.01),
            poll_interval=section.get_duration("poll_interval", 0.2, min=0.01),
        )
        section.finish()
        backend._located = section.error
        return backend

    async def preflight(self) -> None:
        """Wrong credentials and unknown node names are configuration mistakes: raised
        as a located :class:`~hasup.ConfigError` when NeuronEX answers. NeuronEX not
        running (yet) is not: the node is then only not ready until it answers."""
        try:
            await self._login()
            await self._targets()
            if self.nodes is not None:
                await self._states(self.nodes)
        except NeuronexError as exc:
            if exc.code == ERR_INVALID_USER_OR_PASSWORD:
                raise self._config_error("password_file", str(exc)) from None
            if exc.code == ERR_NODE_NOT_EXIST:
                raise self._config_error("nodes", str(exc)) from None
        except BackendError:
            pass

    def _config_error(self, key: str, message: str) -> ConfigError:
        if self._located is not None:
            return self._located(key, message)
        return ConfigError(message, key=f"service.{key}")

    def describe(self) -> str:
        which = ", ".join(self.nodes) if self.nodes is not None else "all nodes"
        return f"neuronex: {self.url} ({which}, warm standby)"

    # ------------------------------------------------------------------ HTTP
    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.url,
                timeout=self.request_timeout,
                transport=self._transport,
                follow_redirects=False,
            )
        return self._client

    async def _call(self, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        try:
            response = await self._http().request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            raise _Down(f"NeuronEX not running at {self.url} ({exc})") from exc
        except httpx.HTTPError as exc:
            raise BackendUnavailable(f"NeuronEX at {self.url} did not answer {path}: {exc!r}") from exc
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        return response.status_code, body

    async def _login(self) -> str:
        status, body = await self._call("POST", "/api/v2/login", json={"name": self.username, "pass": self._password})
        token = body.get("token")
        if status == 200 and isinstance(token, str) and token:
            self._token = token
            return token
        code = int(body.get("error", 0) or 0)
        if code == ERR_INVALID_USER_OR_PASSWORD or status == 401:
            raise NeuronexError(f"NeuronEX rejected the credentials of user {self.username!r} (error {code})", code)
        raise NeuronexError(f"NeuronEX login failed: HTTP {status}, error {code}", code)

    async def _api(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """An authenticated call; logs in (again) when the token is missing or refused."""
        for attempt in range(2):
            token = self._token or await self._login()
            status, body = await self._call(method, path, headers={"Authorization": f"Bearer {token}"}, **kwargs)
            code = int(body.get("error", 0) or 0)
            if (status in (401, 403) or code in ERR_TOKEN) and attempt == 0:
                self._token = None  # expired or NeuronEX restarted: log in again
                continue
            if status != 200 or code not in (0,):
                body.setdefault("error", code)
                body["_status"] = status
            return body
        raise AssertionError("unreachable")  # pragma: no cover

    async def _targets(self) -> list[str]:
        """The nodes to control: configured, or all drivers then all apps."""
        if self.nodes is not None:
            return list(self.nodes)
        names: list[str] = []
        for kind in (DRIVER, APP):
            body = await self._api("GET", "/api/v2/node", params={"type": kind})
            if "_status" in body:
                raise NeuronexError(f"listing nodes failed: HTTP {body['_status']}, error {body.get('error')}")
            names.extend(str(n["name"]) for n in body.get("nodes", []) if isinstance(n, dict) and "name" in n)
        return names

    async def _is_running(self, node: str) -> bool:
        body = await self._api("GET", "/api/v2/node/state", params={"node": node})
        if "_status" in body:
            code = body.get("error")
            if code == ERR_NODE_NOT_EXIST:
                raise NeuronexError(f"NeuronEX has no node {node!r}", ERR_NODE_NOT_EXIST)
            raise NeuronexError(f"state of {node!r}: HTTP {body['_status']}, error {code}", int(code or 0))
        return body.get("running") == RUNNING

    async def _ctl(self, node: str, cmd: int) -> None:
        body = await self._api("POST", "/api/v2/node/ctl", json={"node": node, "cmd": cmd})
        code = body.get("error", 0)
        already = ERR_NODE_IS_RUNNING if cmd == CTL_START else ERR_NODE_IS_STOPPED
        if "_status" in body and code != already:
            verb = "start" if cmd == CTL_START else "stop"
            raise NeuronexError(f"{verb} {node!r}: HTTP {body['_status']}, error {code}", int(code or 0))

    async def _ordered(self, *, promote: bool) -> list[str]:
        """Apps before drivers on promotion, drivers before apps on demotion."""
        targets = await self._targets()
        if self.nodes is not None:
            return targets if promote else list(reversed(targets))
        return list(reversed(targets)) if promote else targets

    async def _states(self, nodes: Sequence[str]) -> list[bool]:
        return [await self._is_running(n) for n in nodes]

    async def _until(self, nodes: Sequence[str], *, running: bool) -> None:
        """Poll the nodes' running state until all are (not) running (caller bounds it)."""
        while True:
            states = await self._states(nodes)
            if all(states) if running else not any(states):
                return
            await anyio.sleep(min(self.poll_interval, 0.05))

    # ------------------------------------------------------------------ ServiceBackend
    async def start(self, *, term: int = 0) -> None:
        """Promote: start every controlled node and confirm each reports RUNNING.

        NeuronEX has no fencing token of its own; ``term`` is only logged by the
        supervisor. Unreachable, an error or no confirmation in time: ``ServiceFailed``
        (a failed start: FAULT, the next node is tried)."""
        try:
            with anyio.fail_after(self.start_timeout):
                nodes = await self._ordered(promote=True)
                for node in nodes:
                    await self._ctl(node, CTL_START)
                await self._until(nodes, running=True)
        except TimeoutError:
            raise ServiceFailed(f"promotion not confirmed within {self.start_timeout:g} s") from None
        except BackendError as exc:
            raise ServiceFailed(f"promotion failed: {exc}") from exc

    async def stop(self) -> None:
        """Demote: stop every controlled node and confirm none reports RUNNING. Nothing
        listening on the API port confirms it too (the process is down). Otherwise the
        stop is not confirmed and this raises (FAULT, no promotion elsewhere)."""
        try:
            with anyio.fail_after(self.stop_timeout):
                nodes = await self._ordered(promote=False)
                for node in nodes:
                    await self._ctl(node, CTL_STOP)
                await self._until(nodes, running=False)
        except _Down:
            return
        except TimeoutError:
            raise ServiceFailed(f"demotion not confirmed within {self.stop_timeout:g} s") from None

    async def status(self) -> ServiceStatus:
        try:
            nodes = await self._targets()
            states = await self._states(nodes)
        except _Down:
            return ServiceStatus.STOPPED  # no process: nothing collects
        except BackendError:
            return ServiceStatus.UNKNOWN
        if states and all(states):
            return ServiceStatus.RUNNING
        if not any(states):
            return ServiceStatus.STOPPED
        return ServiceStatus.FAILED

    async def readiness(self) -> tuple[bool, str]:
        try:
            if self._token is None:
                await self._login()
            nodes = await self._targets()
            if self.nodes is not None:
                await self._states(nodes)  # every configured node exists
            elif not nodes:
                return False, "NeuronEX has no driver or app node to control"
        except BackendError as exc:
            return False, str(exc)
        return True, ""

    async def check(self) -> list[str]:
        """``hasup check``: credentials and node names, when NeuronEX is reachable."""
        try:
            await self._login()
            await self._targets()
            if self.nodes is not None:
                await self._states(self.nodes)
        except _Down:
            return []  # not running here now: checked at run time (not ready, alarm)
        except BackendError as exc:
            return [str(exc)]
        return []

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
