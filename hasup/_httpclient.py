"""One HTTP/1.1 request on a fresh connection, for health probes.

A probe asks one question every few seconds and must open a new connection each time
(a pooled one would hide a listener that stopped accepting), follow no redirect and
ignore proxies: none of what a general client such as httpx adds is used, while its
import and client set-up cost about 9 MB of memory and several milliseconds of CPU per
check (measured, docs/benchmarks.md "Idle cost"). This is h11 (already the status
server's HTTP engine) over an anyio stream: h11 parses, we only move bytes.
``https://`` URLs use the system's trust store (one SSL context, made on first use).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from urllib.parse import SplitResult, urlsplit

import anyio
import h11

__all__ = ["HttpAnswer", "HttpClientError", "parse_http_url", "request"]

_READ = 65536
_DEFAULT_PORTS = {"http": 80, "https": 443}
_ssl_context: ssl.SSLContext | None = None


class HttpClientError(Exception):
    """The exchange failed; ``kind`` names the stage (``ConnectError``, ``ReadError``,
    ``RemoteProtocolError``...), as the probe reports it."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind

    def __str__(self) -> str:
        return f"{self.kind}: {self.args[0]}" if self.args[0] else self.kind


class HttpAnswer:
    """Status, headers and (when asked for) the first bytes of the body."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def charset(self) -> str:
        for name, value in self.headers:
            if name == b"content-type":
                for param in value.decode("latin-1").split(";")[1:]:
                    key, _, val = param.strip().partition("=")
                    if key.lower() == "charset" and val:
                        return val.strip('"')
        return "utf-8"


def parse_http_url(url: str) -> SplitResult:
    """``urlsplit`` that accepts only ``http://host[:port]/...`` and ``https://...``;
    raises :class:`ValueError` saying what is wrong."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - validates the port
    except ValueError as exc:
        raise ValueError(f"invalid URL: {exc}") from None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    return parts


def _context() -> ssl.SSLContext:
    global _ssl_context
    if _ssl_context is None:
        _ssl_context = ssl.create_default_context()
    return _ssl_context


async def request(
    url: SplitResult,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    read_body: int = 0,
) -> HttpAnswer:
    """Send ``method url`` and read the answer's head and up to ``read_body`` bytes of its
    body. The caller bounds the time (a cancel scope). Raises :class:`HttpClientError`."""
    host = url.hostname or ""
    port = url.port or _DEFAULT_PORTS[url.scheme]
    authority = f"[{host}]" if ":" in host else host
    if url.port is not None:
        authority = f"{authority}:{port}"
    target = (url.path or "/") + (f"?{url.query}" if url.query else "")
    head = [("host", authority), ("user-agent", "hasup-probe"), ("accept", "*/*"), ("connection", "close")]
    given = {k.lower() for k in (headers or {})}
    head = [(k, v) for k, v in head if k not in given] + list((headers or {}).items())
    try:
        stream: anyio.abc.ByteStream
        if url.scheme == "https":
            stream = await anyio.connect_tcp(host, port, tls=True, ssl_context=_context())
        else:
            stream = await anyio.connect_tcp(host, port)
    except (OSError, ssl.SSLError) as exc:
        raise HttpClientError("ConnectError", str(exc)) from None
    conn = h11.Connection(h11.CLIENT)
    async with stream:
        try:
            await stream.send(conn.send(h11.Request(method=method, target=target, headers=head)))
            await stream.send(conn.send(h11.EndOfMessage()))
        except (OSError, anyio.BrokenResourceError, ssl.SSLError) as exc:
            raise HttpClientError("WriteError", str(exc)) from None
        answer: HttpAnswer | None = None
        body = bytearray()
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise HttpClientError("RemoteProtocolError", str(exc)) from None
            if event is h11.NEED_DATA:
                try:
                    data = await stream.receive(_READ)
                except (anyio.EndOfStream, anyio.BrokenResourceError, OSError, ssl.SSLError):
                    data = b""
                conn.receive_data(data)
            elif isinstance(event, h11.Response):
                answer = HttpAnswer(event.status_code, list(event.headers), b"")
                if read_body <= 0 or method == "HEAD":
                    return answer
            elif isinstance(event, h11.Data):
                body.extend(event.data)
                if len(body) >= read_body:
                    break
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
        if answer is None:
            raise HttpClientError("RemoteProtocolError", "the server closed the connection without an answer")
        answer.body = bytes(body[:read_body])
        return answer
