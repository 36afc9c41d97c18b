"""A minimal async client for etcd v3's JSON gateway (``/v3/...``), on httpx.

Only what leader election needs: leases, a few transactions, range, and a watch that
survives broken streams. No grpc. The gateway's quirks are handled here and nowhere
else: keys and values are base64, int64 fields are decimal strings (lease IDs exceed
2**53), fields holding their default value (0, false, PUT) are omitted, and a member
without a raft leader answers nothing for ~7 s, so every request has a short timeout and
fails over to the next endpoint.

Errors leave this module as :class:`~hasup.BackendUnavailable` (no member answered in
time) or :class:`CoordinatorError` (etcd answered and refused: auth, bad request, ...).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import math
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, cast

import anyio
import attrs
import httpx
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._errors import BackendUnavailable
from .base import CoordinatorError

__all__ = ["EtcdClient", "KeyValue", "TxnResult", "WatchCompacted", "WatchEvent", "WatchStream"]

log = logging.getLogger("hasup.coordinator.etcd")

# grpc status codes that mean "this member cannot serve now, ask another one".
_RETRY_ELSEWHERE = {1, 4, 14}  # CANCELLED, DEADLINE_EXCEEDED, UNAVAILABLE
_UNAUTHENTICATED = 16


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


@attrs.frozen
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int

    @classmethod
    def from_json(cls, kv: Mapping[str, Any]) -> KeyValue:
        return cls(
            key=_unb64(kv.get("key")),
            value=_unb64(kv.get("value")),
            create_revision=int(kv.get("create_revision", 0)),
            mod_revision=int(kv.get("mod_revision", 0)),
            lease=int(kv.get("lease", 0)),
        )


@attrs.frozen
class WatchEvent:
    type: str  # "PUT" or "DELETE"
    kv: KeyValue

    @property
    def revision(self) -> int:
        return self.kv.mod_revision


@attrs.frozen
class TxnResult:
    succeeded: bool
    revision: int  # the store revision after the txn (= create_revision of a put it made)
    kv: KeyValue | None  # from the failure branch's range, when there was one


class WatchCompacted(CoordinatorError):
    """The watch start revision was compacted away: events in between are lost."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"watch start revision was compacted (oldest available: {compact_revision})")
        self.compact_revision = compact_revision


class EtcdClient:
    """Talk to an etcd cluster through its JSON gateway.

    ``endpoints`` are base URLs (``http://10.0.0.1:2379``); requests go to the member
    that last answered and fail over to the others in order. ``timeout`` bounds each
    request to one member (keep it ≤ lease TTL / 3).
    """

    def __init__(
        self,
        endpoints: list[str] | tuple[str, ...],
        *,
        timeout: float = 1.0,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        username: str | None = None,
        password: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is required")
        self.endpoints = tuple(e.rstrip("/") for e in endpoints)
        self.timeout = timeout
        self._preferred = 0
        self._username = username
        self._password = password
        self._token: str | None = None
        verify: ssl.SSLContext | bool = True
        if ca_file or cert_file:
            context = ssl.create_default_context(cafile=ca_file)
            if cert_file:
                context.load_cert_chain(cert_file, key_file)
            verify = context
        self._http = httpx.AsyncClient(
            verify=verify, transport=transport, timeout=httpx.Timeout(timeout), trust_env=False
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> EtcdClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ transport
    def _order(self) -> list[int]:
        n = len(self.endpoints)
        return [(self._preferred + i) % n for i in range(n)]

    async def _authenticate(self, endpoint: str) -> None:
        response = await self._http.post(
            f"{endpoint}/v3/auth/authenticate",
            json={"name": self._username, "password": self._password or ""},
        )
        body = _json(response)
        if response.status_code != 200 or "token" not in body:
            raise CoordinatorError(f"etcd authentication as {self._username!r} failed: {_message(body, response)}")
        self._token = str(body["token"])

    async def call(self, path: str, body: Mapping[str, Any], *, time_limit: float | None = None) -> dict[str, Any]:
        """POST ``body`` to ``/v3/<path>`` on the first member that answers; the JSON reply."""
        errors: list[str] = []
        for index in self._order():
            endpoint = self.endpoints[index]
            try:
                with anyio.fail_after(time_limit or self.timeout):
                    result = await self._call_one(endpoint, path, body)
            except _TryElsewhere as exc:
                errors.append(f"{endpoint}: {exc}")
                continue
            except (TimeoutError, httpx.TransportError) as exc:
                errors.append(f"{endpoint}: {type(exc).__name__} {exc}".rstrip())
                continue
            self._preferred = index
            return result
        raise BackendUnavailable(f"no etcd member answered /v3/{path}: {'; '.join(errors)}")

    async def _call_one(self, endpoint: str, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        for attempt in range(2):
            if self._username and self._token is None:
                await self._authenticate(endpoint)
            headers = {"Authorization": self._token} if self._token else {}
            response = await self._http.post(f"{endpoint}/v3/{path}", json=body, headers=headers)
            data = _json(response)
            if response.status_code == 200 and "error" not in data:
                return data
            code = int(data.get("code", 0) or 0)
            expired = code == _UNAUTHENTICATED or "auth token" in _message(data, response)
            if self._username and attempt == 0 and expired:
                self._token = None  # simple tokens expire (--auth-token-ttl): log in again once
                continue
            if code in _RETRY_ELSEWHERE or response.status_code in (502, 503, 504):
                raise _TryElsewhere(_message(data, response))
            raise CoordinatorError(f"etcd refused /v3/{path}: {_message(data, response)} (code {code})")
        raise CoordinatorError(f"etcd refused /v3/{path}: authentication keeps failing")

    # ------------------------------------------------------------------ leases
    async def lease_grant(self, ttl: int) -> tuple[int, int]:
        """A new lease: ``(id, granted ttl)``. etcd may raise a small TTL, never lowers it."""
        reply = await self.call("lease/grant", {"TTL": ttl})
        return int(reply["ID"]), int(reply.get("TTL", 0))

    async def lease_keepalive(self, lease: int) -> int:
        """Renew ``lease``; its TTL, or 0 when the lease no longer exists."""
        reply = await self.call("lease/keepalive", {"ID": str(lease)})
        result = reply.get("result", reply)
        return int(result.get("TTL", 0))

    async def lease_revoke(self, lease: int, *, time_limit: float | None = None) -> None:
        """Revoke ``lease`` (deleting its keys); a lease that is already gone is fine."""
        try:
            await self.call("lease/revoke", {"ID": str(lease)}, time_limit=time_limit)
        except CoordinatorError as exc:
            if "lease not found" not in str(exc):
                raise

    # ------------------------------------------------------------------ keys
    async def get(self, key: bytes) -> tuple[KeyValue | None, int]:
        """``(kv or None, store revision)``."""
        reply = await self.call("kv/range", {"key": _b64(key)})
        kvs = reply.get("kvs") or []
        return (KeyValue.from_json(kvs[0]) if kvs else None), _revision(reply)

    async def put(self, key: bytes, value: bytes, *, lease: int = 0) -> int:
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        return _revision(await self.call("kv/put", body))

    async def delete(self, key: bytes) -> int:
        return _revision(await self.call("kv/deleterange", {"key": _b64(key)}))

    async def create_if_absent(self, key: bytes, value: bytes, *, lease: int) -> TxnResult:
        """Put ``key`` only if it does not exist; otherwise read it. One round trip."""
        k = _b64(key)
        reply = await self.call(
            "kv/txn",
            {
                "compare": [{"key": k, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
                "success": [{"request_put": {"key": k, "value": _b64(value), "lease": str(lease)}}],
                "failure": [{"request_range": {"key": k}}],
            },
        )
        return _txn_result(reply)

    async def delete_if_created_at(self, key: bytes, create_revision: int) -> bool:
        """Delete ``key`` only if it is still the one created at ``create_revision``."""
        k = _b64(key)
        reply = await self.call(
            "kv/txn",
            {
                "compare": [{"key": k, "target": "CREATE", "result": "EQUAL", "create_revision": str(create_revision)}],
                "success": [{"request_delete_range": {"key": k}}],
            },
        )
        return bool(reply.get("succeeded", False))

    async def status(self, endpoint: str) -> dict[str, Any]:
        """``/v3/maintenance/status`` of one member (its id, the raft leader's id, ...)."""
        try:
            with anyio.fail_after(self.timeout):
                return await self._call_one(endpoint.rstrip("/"), "maintenance/status", {})
        except (TimeoutError, httpx.TransportError, _TryElsewhere) as exc:
            raise BackendUnavailable(f"{endpoint}: {exc}") from exc

    # ------------------------------------------------------------------ watch
    @asynccontextmanager
    async def watch(
        self, key: bytes, *, start_revision: int, retry_interval: float = 0.1
    ) -> AsyncIterator[WatchStream]:
        """Events on ``key`` from ``start_revision`` on: ``async with client.watch(...) as
        events: async for event in events: ...``.

        A broken stream (member died, connection reset) is re-opened on the next member
        from the last revision seen + 1, so no event is lost or repeated. Iteration raises
        :class:`WatchCompacted` if the revision to resume from was compacted away.
        """
        # The stream is read by a task of its own and handed over through a buffer: the
        # reader is then only ever interrupted inside httpx's own awaits, so its async
        # generators unwind instead of being abandoned half-way (trio warns about those).
        send, receive = anyio.create_memory_object_stream[WatchEvent | WatchCompacted](math.inf)
        async with anyio.create_task_group() as tg, receive:
            tg.start_soon(self._pump, key, start_revision, retry_interval, send)
            yield WatchStream(receive)
            tg.cancel_scope.cancel()

    async def _pump(
        self,
        key: bytes,
        next_revision: int,
        retry_interval: float,
        send: MemoryObjectSendStream[WatchEvent | WatchCompacted],
    ) -> None:
        with send:
            while True:
                for index in self._order():
                    endpoint = self.endpoints[index]
                    try:
                        await self._watch_one(endpoint, key, next_revision, send)
                    except WatchCompacted as exc:
                        send.send_nowait(exc)
                        return
                    except _Broken as exc:
                        next_revision = exc.next_revision
                        cause = exc.__cause__ or "stream ended"
                        log.debug("watch on %s broke (%s); resuming at revision %d", endpoint, cause, next_revision)
                        continue
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                        return  # nobody reads any more
                await anyio.sleep(retry_interval)

    async def _watch_one(
        self,
        endpoint: str,
        key: bytes,
        next_revision: int,
        send: MemoryObjectSendStream[WatchEvent | WatchCompacted],
    ) -> None:
        """Follow one stream until it breaks: raises :class:`_Broken` with the revision
        to resume from."""
        if self._username and self._token is None:
            with anyio.fail_after(self.timeout):
                await self._authenticate(endpoint)
        headers = {"Authorization": self._token} if self._token else {}
        body = {"create_request": {"key": _b64(key), "start_revision": str(next_revision)}}
        # No read timeout: an idle watch is silent. Connect within the request timeout.
        timeout = httpx.Timeout(self.timeout, read=None)
        try:
            async with self._http.stream(
                "POST", f"{endpoint}/v3/watch", json=body, headers=headers, timeout=timeout
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    data = _json(response)
                    if int(data.get("code", 0) or 0) == _UNAUTHENTICATED:
                        self._token = None
                    raise _TryElsewhere(_message(data, response))
                # aclosing: under trio an abandoned async generator warns when collected
                async with contextlib.aclosing(
                    cast("AsyncGenerator[str, None]", response.aiter_lines())
                ) as stream_lines:
                    async for line in stream_lines:
                        if not line.strip():
                            continue
                        message = json.loads(line)
                        if "error" in message:
                            raise _TryElsewhere(str(message["error"]))
                        result = message.get("result", {})
                        if int(result.get("compact_revision", 0) or 0):
                            raise WatchCompacted(int(result["compact_revision"]))
                        if result.get("canceled"):
                            raise _TryElsewhere(f"watch canceled: {result.get('cancel_reason', '')}")
                        for event in result.get("events") or []:
                            kv = KeyValue.from_json(event.get("kv", {}))
                            send.send_nowait(WatchEvent(type=event.get("type", "PUT"), kv=kv))
                            next_revision = kv.mod_revision + 1
                            self._preferred = self.endpoints.index(endpoint)
        except (TimeoutError, httpx.TransportError, _TryElsewhere) as exc:
            raise _Broken(next_revision) from exc
        raise _Broken(next_revision)


class WatchStream:
    """The events of one :meth:`EtcdClient.watch`, as an async iterator."""

    def __init__(self, receive: MemoryObjectReceiveStream[WatchEvent | WatchCompacted]) -> None:
        self._receive = receive

    def __aiter__(self) -> WatchStream:
        return self

    async def __anext__(self) -> WatchEvent:
        try:
            item = await self._receive.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None
        if isinstance(item, WatchCompacted):
            raise item
        return item


class _Broken(Exception):
    """A watch stream ended; resume from ``next_revision``."""

    def __init__(self, next_revision: int) -> None:
        super().__init__(next_revision)
        self.next_revision = next_revision


class _TryElsewhere(Exception):
    """This member cannot serve the request now (no leader, stream ended...)."""


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _message(data: Mapping[str, Any], response: httpx.Response) -> str:
    return str(data.get("message") or data.get("error") or f"HTTP {response.status_code}")


def _revision(reply: Mapping[str, Any]) -> int:
    return int(reply.get("header", {}).get("revision", 0))


def _txn_result(reply: Mapping[str, Any]) -> TxnResult:
    kv = None
    for item in reply.get("responses") or []:
        kvs = item.get("response_range", {}).get("kvs") or []
        if kvs:
            kv = KeyValue.from_json(kvs[0])
    return TxnResult(succeeded=bool(reply.get("succeeded", False)), revision=_revision(reply), kv=kv)
