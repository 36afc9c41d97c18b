"""The status endpoint's routes: the status page at ``/`` (static assets shipped in
``hasup/_page/``, polling ``/status``), ``/status`` (JSON), ``/healthz``, ``/metrics``."""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import secrets
import tempfile
from collections.abc import Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import anyio
from anyio.abc import SocketStream, TaskStatus
from anyio.streams.stapled import MultiListener

from ._strictmodes import directory_problem
from .protocol import State

__all__ = ["Controls", "StatusAPI", "open_status_listener", "serve_status", "write_control_token"]

log = logging.getLogger("hasup")


class Controls(Protocol):
    """What the status endpoint reads and the operator commands it runs
    (:class:`~hasup.Supervisor` provides them)."""

    @property
    def state(self) -> State: ...

    @property
    def maintenance(self) -> bool: ...

    def snapshot(self) -> dict[str, Any]: ...

    def render_metrics(self) -> bytes: ...

    async def switchover(self, target: str | None = None) -> str: ...

    async def set_maintenance(self, on: bool) -> None: ...

    async def set_group_maintenance(self, on: bool) -> None: ...

    @property
    def group_maintenance(self) -> bool: ...

    async def forget_peer(self, name: str) -> None: ...

    async def sync_now(self) -> list[int]: ...

    async def confirm_stopped(self) -> None: ...


#: the status page's files (``hasup/_page/``): path served -> (file, content type)
PAGE_ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/page.js": ("page.js", "text/javascript; charset=utf-8"),
    "/page.css": ("page.css", "text/css; charset=utf-8"),
}


@cache
def page_asset(name: str) -> bytes:
    """One file of the status page, read from the installed package once."""
    return resources.files("hasup").joinpath("_page", name).read_bytes()


#: the operator's name the page (or a script) may send with a command, for the log
_MAX_NAME = 64


def _token_matches(supplied: str, secret: bytes) -> bool:
    """``supplied`` against an ``operator_token_file`` secret, decoded as the file is
    (hex text, else the raw bytes); constant time."""
    try:
        candidate = bytes.fromhex(supplied)
    except ValueError:
        candidate = supplied.encode()
    return hmac.compare_digest(candidate, secret)


def _same_origin(headers: Mapping[str, str]) -> bool:
    """A browser's request from this endpoint's own page (or no browser at all: no ``Origin``)."""
    origin = headers.get("origin")
    if origin is None:
        return True
    host = headers.get("host", "")
    return bool(host) and origin in (f"http://{host}", f"https://{host}")


class StatusAPI:
    def __init__(
        self, controls: Controls, control_token: str | None = None, operator_token: bytes | None = None
    ) -> None:
        self._sup = controls
        self._token = control_token
        self._operator_token = operator_token

    async def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> tuple[int, str, bytes]:
        path = target.split("?", 1)[0]
        if path.startswith("/control/"):
            return await self._control(method, path.removeprefix("/control/"), headers, body)
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"method not allowed\n"
        if path == "/status":
            return 200, "application/json", json.dumps(self._sup.snapshot(), indent=1).encode() + b"\n"
        if path in PAGE_ASSETS:
            name, content_type = PAGE_ASSETS[path]
            return 200, content_type, page_asset(name)
        if path == "/healthz":
            return 200, "text/plain", f"ok {self._sup.state.name}\n".encode()
        if path == "/metrics":
            return 200, "text/plain; version=0.0.4; charset=utf-8", self._sup.render_metrics()
        return 404, "text/plain", b"not found\n"

    def _authenticate(self, headers: Mapping[str, str]) -> str | None:
        """Which secret the request carries: "control token", "operator token" or None."""
        supplied = headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not supplied:
            return None
        if self._token is not None and hmac.compare_digest(supplied.encode(), self._token.encode()):
            return "control token"
        if self._operator_token is not None and _token_matches(supplied, self._operator_token):
            return "operator token"
        return None

    async def _control(
        self, method: str, command: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, str, bytes]:
        """Operator commands, authenticated with the token in ``<state_dir>/control.token``
        or ``[status] operator_token_file``'s; every attempt is logged with who and from where."""
        if method != "POST":
            return 405, "text/plain", b"use POST\n"
        peer = headers.get(":peer", "unknown")
        name = "".join(c for c in headers.get("x-hasup-operator", "") if c.isprintable())[:_MAX_NAME] or "-"
        if not _same_origin(headers):
            log.warning(
                "operator command %s refused: cross-origin request (%s) from %s", command, headers.get("origin"), peer
            )
            return 403, "application/json", b'{"error": "cross-origin request refused"}\n'
        how = self._authenticate(headers)
        if how is None:
            log.warning(
                "operator command %s refused: missing or wrong token, from %s (operator %r)", command, peer, name
            )
            return 403, "application/json", b'{"error": "missing or wrong control token"}\n'
        try:
            args = json.loads(body or b"{}")
            if not isinstance(args, dict):
                raise ValueError("expected a JSON object")
        except ValueError as exc:
            return 400, "application/json", json.dumps({"error": f"bad request body: {exc}"}).encode()
        if command != "check":
            log.warning("operator command %s %s by %r with the %s, from %s", command, json.dumps(args), name, how, peer)
        try:
            if command == "check":
                result: dict[str, object] = {"ok": True, "as": how}
            elif command == "switchover":
                target = args.get("to")
                target_name = await self._sup.switchover(str(target) if target else None)
                result = {"ok": True, "target": target_name}
            elif command == "maintenance":
                if args.get("group"):
                    await self._sup.set_group_maintenance(bool(args.get("on", True)))
                else:
                    await self._sup.set_maintenance(bool(args.get("on", True)))
                result = {
                    "ok": True,
                    "maintenance": self._sup.maintenance,
                    "group_maintenance": self._sup.group_maintenance,
                }
            elif command == "forget-peer":
                await self._sup.forget_peer(str(args.get("peer", "")))
                result = {"ok": True}
            elif command == "sync-now":
                result = {"ok": True, "generations": await self._sup.sync_now()}
            elif command == "confirm-stopped":
                await self._sup.confirm_stopped()
                result = {"ok": True}
            else:
                return 404, "application/json", b'{"error": "unknown command"}\n'
        except ValueError as exc:
            return 409, "application/json", json.dumps({"error": str(exc)}).encode() + b"\n"
        return 200, "application/json", json.dumps(result).encode() + b"\n"


def write_control_token(state_dir: Path) -> str | None:
    """A fresh secret for operator commands, readable only by hasup's user."""
    path = state_dir / "control.token"
    token = secrets.token_hex(16)
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        problem = directory_problem(str(state_dir))
        if problem:
            log.warning("operator commands disabled: %s", problem)
            return None
        # a fresh name (O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600): nothing planted in the
        # directory is followed or reused; the rename replaces a planted link itself
        fd, tmp = tempfile.mkstemp(dir=state_dir, prefix=".control.token.")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(token + "\n")
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        log.warning("operator commands disabled: cannot write %s: %s", path, exc)
        return None
    return token


async def open_status_listener(listen: tuple[str, int]) -> MultiListener[SocketStream]:
    """Bind the status endpoint's address; raises :class:`OSError`."""
    from ._httpserver import open_http_listener

    host = f"[{listen[0]}]" if ":" in listen[0] else listen[0]
    return await open_http_listener(f"{host}:{listen[1]}")


async def serve_status(
    controls: Controls,
    listener: MultiListener[SocketStream],
    state_dir: Path,
    *,
    operator_token: bytes | None = None,
    task_status: TaskStatus[int],
) -> None:
    """Serve the page at ``/``, ``/status``, ``/healthz``, ``/metrics`` and ``/control/*`` on ``listener``
    (from :func:`open_status_listener`); ``task_status`` receives the bound port."""
    from ._httpserver import serve_http

    token = await anyio.to_thread.run_sync(write_control_token, state_dir)
    await serve_http(listener, StatusAPI(controls, token, operator_token).handle, task_status=task_status)
