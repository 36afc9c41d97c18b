"""The status endpoint's routes: ``/status`` (JSON), ``/healthz``, ``/metrics``."""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .supervisor import Supervisor

__all__ = ["StatusAPI"]


class StatusAPI:
    def __init__(self, supervisor: Supervisor, control_token: str | None = None) -> None:
        self._sup = supervisor
        self._token = control_token

    async def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> tuple[int, str, bytes]:
        path = target.split("?", 1)[0]
        if path.startswith("/control/"):
            return await self._control(method, path.removeprefix("/control/"), headers, body)
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"method not allowed\n"
        if path == "/status":
            return 200, "application/json", json.dumps(self._sup.snapshot(), indent=1).encode() + b"\n"
        if path == "/healthz":
            return 200, "text/plain", f"ok {self._sup.state.name}\n".encode()
        if path == "/metrics":
            return 200, "text/plain; version=0.0.4; charset=utf-8", self._sup.metrics.render()
        return 404, "text/plain", b"not found\n"

    async def _control(
        self, method: str, command: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, str, bytes]:
        """Operator commands, authenticated with the token in ``<state_dir>/control.token``."""
        if method != "POST":
            return 405, "text/plain", b"use POST\n"
        supplied = headers.get("authorization", "").removeprefix("Bearer ").strip()
        if self._token is None or not hmac.compare_digest(supplied.encode(), self._token.encode()):
            return 403, "application/json", b'{"error": "missing or wrong control token"}\n'
        try:
            args = json.loads(body or b"{}")
            if not isinstance(args, dict):
                raise ValueError("expected a JSON object")
        except ValueError as exc:
            return 400, "application/json", json.dumps({"error": f"bad request body: {exc}"}).encode()
        try:
            if command == "switchover":
                target = args.get("to")
                name = await self._sup.switchover(str(target) if target else None)
                result: dict[str, object] = {"ok": True, "target": name}
            elif command == "maintenance":
                await self._sup.set_maintenance(bool(args.get("on", True)))
                result = {"ok": True, "maintenance": self._sup.node.maintenance}
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
