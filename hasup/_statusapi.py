"""The status endpoint's routes: ``/status`` (JSON), ``/healthz``, ``/metrics``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .supervisor import Supervisor

__all__ = ["StatusAPI"]


class StatusAPI:
    def __init__(self, supervisor: Supervisor) -> None:
        self._sup = supervisor

    async def handle(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, str, bytes]:
        path = target.split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"method not allowed\n"
        if path == "/status":
            return 200, "application/json", json.dumps(self._sup.snapshot(), indent=1).encode() + b"\n"
        if path == "/healthz":
            return 200, "text/plain", f"ok {self._sup.state.name}\n".encode()
        if path == "/metrics":
            from ._metrics import render_metrics

            return 200, "text/plain; version=0.0.4; charset=utf-8", render_metrics(self._sup)
        return 404, "text/plain", b"not found\n"
