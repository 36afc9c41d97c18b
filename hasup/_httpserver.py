"""A tiny HTTP/1.1 server for ``/status``, ``/healthz`` and ``/metrics``.

HTTP parsing is h11's job (never by hand); this module only moves bytes between h11
and anyio TCP streams. It is deliberately small: GET, HEAD and POST, bounded request
size, keep-alive, time limits against idle or slow clients, and a handler exception
answered with 500 without taking the server down.

::

    async def handler(method: str, target: str, headers: Mapping[str, str], body: bytes):
        return 200, "application/json", b"{}"

    port = await task_group.start(serve_http, "127.0.0.1:0", handler)
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping

import anyio
import attrs
import h11
from anyio.abc import SocketAttribute, SocketStream, TaskStatus
from anyio.streams.stapled import MultiListener

from ._accept import serve_bounded
from ._addr import parse_address

__all__ = ["Handler", "open_http_listener", "serve_http"]

logger = logging.getLogger("hasup.http")

#: ``handler(method, target, headers, body) -> (status, content_type, body)``.
#: ``method`` is "GET" or "POST" (HEAD is served as GET without the body); ``target``
#: is the request target as sent ("/status?x=1"); ``headers`` maps lower-case names to
#: values (repeated headers joined with ", "), plus ``":peer"``: the client's address
#: (``host:port``), a name no request header can have.
Handler = Callable[[str, str, Mapping[str, str], bytes], Awaitable[tuple[int, str, bytes]]]

_SERVER = b"hasup"
#: on every response: the status page's assets are same-origin only (no inline script,
#: no external resource), nothing may frame it, and no type is sniffed.
_SECURITY = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
        b"base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
_READ_SIZE = 16384
_TEXT = "text/plain; charset=utf-8"
_GONE = (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError)


@attrs.frozen
class _Limits:
    max_request_size: int
    max_header_size: int
    request_timeout: float
    keepalive_timeout: float


async def serve_http(
    listen: str | MultiListener[SocketStream],
    handler: Handler,
    *,
    max_request_size: int = 1 << 20,
    max_header_size: int = 16384,
    request_timeout: float = 10.0,
    keepalive_timeout: float = 30.0,
    max_connections: int = 64,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve HTTP on ``listen`` (``"127.0.0.1:9105"``, ``"[::1]:9105"``; port 0 = ephemeral),
    or on a listener bound beforehand (:func:`open_http_listener`), which this closes.

    Reports the bound port through ``task_status.started(port)`` and runs until
    cancelled. ``request_timeout`` bounds the arrival of one request (head and body:
    slow clients cannot pin a connection); ``keepalive_timeout`` bounds the wait for the
    next request on a kept-alive connection. Bodies over ``max_request_size`` get 413.
    Beyond ``max_connections`` concurrent connections, requests are answered 503 (by at
    most as many again) and further connections are closed at once; running out of file
    descriptors pauses accepting instead of failing (:func:`hasup._accept.serve_bounded`).
    """
    listener = await open_http_listener(listen) if isinstance(listen, str) else listen
    name = listen if isinstance(listen, str) else _describe(listener)
    limits = _Limits(max_request_size, max_header_size, request_timeout, keepalive_timeout)

    async def serve_connection(stream: SocketStream) -> None:
        await _Connection(stream, handler, limits).serve()

    async def refuse_busy(stream: SocketStream) -> None:
        await _Connection(stream, handler, limits, busy=True).serve()

    async with listener:
        bound = listener.extra(SocketAttribute.local_port)
        logger.debug("HTTP server listening on %s (port %d)", name, bound)
        task_status.started(bound)
        await serve_bounded(
            listener, serve_connection, name=f"HTTP server {name}", limit=max_connections, overflow=refuse_busy
        )


async def open_http_listener(listen: str) -> MultiListener[SocketStream]:
    """Bind ``listen`` (``"host:port"``) for :func:`serve_http`; raises :class:`OSError`."""
    host, port = parse_address(listen)
    return await anyio.create_tcp_listener(local_host=host, local_port=port)


def _describe(listener: MultiListener[SocketStream]) -> str:
    address = listener.extra(SocketAttribute.local_address)
    if isinstance(address, str):  # a UNIX socket path
        return address
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Connection:
    """One client connection: a loop of h11 request/response cycles."""

    def __init__(self, stream: SocketStream, handler: Handler, limits: _Limits, *, busy: bool = False) -> None:
        self.stream = stream
        self.handler = handler
        self.limits = limits
        self.busy = busy
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_size)
        try:
            remote = stream.extra(SocketAttribute.remote_address)
            self.peer = f"{remote[0]}:{remote[1]}" if isinstance(remote, tuple) else str(remote)
        except (anyio.TypedAttributeLookupError, IndexError):
            self.peer = "unknown"

    async def serve(self) -> None:
        try:
            wait = self.limits.request_timeout
            while await self._cycle(wait):
                if self.busy or h11.MUST_CLOSE in (self.conn.our_state, self.conn.their_state):
                    break
                self.conn.start_next_cycle()
                wait = self.limits.keepalive_timeout
        except _GONE:
            pass  # the client went away: nobody to answer
        except h11.LocalProtocolError as exc:  # pragma: no cover - a bug in this module
            logger.warning("HTTP connection aborted: %s", exc)
        finally:
            await self._close()

    async def _cycle(self, wait: float) -> bool:
        """Read one request and answer it. False when the connection must close."""
        try:
            with anyio.move_on_after(wait) as waiting:
                request = await self._next_event()
            if waiting.cancelled_caught:
                if self.conn.their_state is not h11.IDLE or self.conn.trailing_data[0]:
                    await self._error(408, "request timeout")  # started but never finished
                return False
            if not isinstance(request, h11.Request):
                return False  # closed (or paused) between requests
            length = _content_length(request)
            if length is not None and length > self.limits.max_request_size:
                await self._error(413, "request too large")
                return False
            with anyio.move_on_after(self.limits.request_timeout) as reading:
                body = await self._read_body()
            if reading.cancelled_caught:
                await self._error(408, "request timeout")
                return False
            if body is None:
                await self._error(413, "request too large")
                return False
            await self._respond(request, body)
            return True
        except h11.RemoteProtocolError as exc:
            await self._error(exc.error_status_hint, f"bad request: {exc}")
            return False

    async def _next_event(self) -> h11.Event | None:
        """The next h11 event, reading as needed; None when the client closed."""
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                if self.conn.they_are_waiting_for_100_continue:
                    await self._send(h11.InformationalResponse(status_code=100, headers=[]))
                try:
                    data = await self.stream.receive(_READ_SIZE)
                except anyio.EndOfStream:
                    data = b""
                self.conn.receive_data(data)
                continue
            if event is h11.PAUSED or isinstance(event, h11.ConnectionClosed):
                return None
            assert isinstance(event, h11.Event)
            return event

    async def _read_body(self) -> bytes | None:
        """The request body, or None once it exceeds max_request_size."""
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await self._next_event()
            if event is None:
                raise anyio.EndOfStream
            if isinstance(event, h11.EndOfMessage):
                return b"".join(chunks)
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > self.limits.max_request_size:
                    return None
                chunks.append(bytes(event.data))

    async def _respond(self, request: h11.Request, body: bytes) -> None:
        method = request.method.decode("ascii", "replace").upper()
        target = request.target.decode("ascii", "replace")
        if self.busy:
            await self._error(503, "too many connections")
            return
        if method not in ("GET", "HEAD", "POST"):
            await self._send_response(405, _TEXT, b"method not allowed\n", extra=[(b"allow", b"GET, HEAD, POST")])
            return
        headers: dict[str, str] = {":peer": self.peer}
        for raw_name, raw_value in request.headers:
            name = raw_name.decode("ascii", "replace")  # h11 lower-cases names
            value = raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        try:
            status, content_type, payload = await self.handler(
                "GET" if method == "HEAD" else method, target, headers, body
            )
            if not 200 <= status <= 599:
                raise ValueError(f"handler returned status {status}")
        except Exception:
            logger.exception("HTTP handler failed for %s %s", method, target)
            status, content_type, payload = 500, _TEXT, b"internal server error\n"
        await self._send_response(status, content_type, payload, head=method == "HEAD")

    async def _error(self, status: int, message: str) -> None:
        """Answer an error and ask to close, if h11 still lets us answer."""
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        # LocalProtocolError: e.g. no request head was received, nothing can be answered.
        with contextlib.suppress(h11.LocalProtocolError):
            await self._send_response(status, _TEXT, f"{message}\n".encode(), close=True)

    async def _send_response(
        self,
        status: int,
        content_type: str,
        body: bytes,
        *,
        head: bool = False,
        close: bool = False,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        headers = [
            (b"server", _SERVER),
            (b"content-type", content_type.encode("latin-1")),
            (b"cache-control", b"no-store"),
            *_SECURITY,
            *(extra or []),
        ]
        if status not in (204, 304):
            headers.append((b"content-length", str(len(body)).encode()))
        if close:
            headers.append((b"connection", b"close"))
        await self._send(h11.Response(status_code=status, headers=headers))
        # h11 knows that HEAD, 204 and 304 responses carry no body.
        if body and not head and status not in (204, 304):
            await self._send(h11.Data(data=body))
        await self._send(h11.EndOfMessage())

    async def _send(self, event: h11.Event) -> None:
        data = self.conn.send(event)
        if data:
            await self.stream.send(data)

    async def _close(self) -> None:
        """Close without losing the response: shut down our side, drain briefly, close.

        Closing a TCP socket with unread input makes the kernel send RST, which can
        destroy a response the client has not read yet (e.g. a 413 for a body we did
        not read), hence the short lingering drain.
        """
        try:
            if self.conn.their_state not in (h11.IDLE, h11.DONE, h11.MUST_CLOSE, h11.CLOSED):
                await self.stream.send_eof()
                with anyio.move_on_after(1.0):
                    while await self.stream.receive(_READ_SIZE):
                        pass
        except _GONE:
            pass
        finally:
            with anyio.CancelScope(shield=True):
                await self.stream.aclose()


def _content_length(request: h11.Request) -> int | None:
    for name, value in request.headers:
        if name == b"content-length":
            return int(value)  # h11 has validated it
    return None
