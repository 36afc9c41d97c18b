"""The status/metrics HTTP server, over real loopback sockets."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Mapping
from typing import Any

import anyio
import h11
import httpx
import pytest
from anyio.abc import SocketStream

from hasup._httpserver import serve_http

pytestmark = pytest.mark.anyio

Seen = list[tuple[str, str, dict[str, str], bytes]]


async def handler_factory(seen: Seen) -> Any:
    async def handler(
        method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, str, bytes]:
        seen.append((method, target, dict(headers), body))
        if target == "/boom":
            raise RuntimeError("handler bug")
        if target == "/bad-status":
            return 42, "text/plain", b""
        if target == "/empty":
            return 204, "text/plain", b"ignored"
        return 200, "application/json", b'{"ok": true, "method": "' + method.encode() + b'"}'

    return handler


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, Seen]]:
    seen: Seen = []
    handler = await handler_factory(seen)
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve_http, "127.0.0.1:0", handler)
        yield f"http://127.0.0.1:{port}", seen
        tg.cancel_scope.cancel()


def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(trust_env=False, timeout=5)


async def test_get_and_post(server: tuple[str, Seen]) -> None:
    base, seen = server
    async with client() as c:
        r = await c.get(f"{base}/status?verbose=1", headers={"X-Test": "a"})
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/json"
        assert r.json() == {"ok": True, "method": "GET"}
        r = await c.post(f"{base}/reload", content=b"payload")
        assert r.json()["method"] == "POST"
    assert seen[0][:2] == ("GET", "/status?verbose=1")
    assert seen[0][2]["x-test"] == "a"
    assert seen[1][0] == "POST"
    assert seen[1][3] == b"payload"


async def test_head_has_no_body(server: tuple[str, Seen]) -> None:
    base, _ = server
    async with client() as c:
        r = await c.head(f"{base}/healthz")
    assert r.status_code == 200
    assert r.content == b""
    assert int(r.headers["content-length"]) == len(b'{"ok": true, "method": "GET"}')


async def test_204_drops_body(server: tuple[str, Seen]) -> None:
    base, _ = server
    async with client() as c:
        r = await c.get(f"{base}/empty")
    assert r.status_code == 204
    assert r.content == b""


async def test_other_methods_are_405(server: tuple[str, Seen]) -> None:
    base, seen = server
    async with client() as c:
        r = await c.delete(f"{base}/status")
    assert r.status_code == 405
    assert "GET" in r.headers["allow"]
    assert seen == []


async def test_handler_error_is_500_and_server_survives(server: tuple[str, Seen]) -> None:
    base, _ = server
    async with client() as c:
        r = await c.get(f"{base}/boom")
        assert r.status_code == 500
        r = await c.get(f"{base}/bad-status")
        assert r.status_code == 500
        r = await c.get(f"{base}/status")
        assert r.status_code == 200


async def test_body_too_large_is_413() -> None:
    seen: Seen = []
    handler = await handler_factory(seen)
    async with anyio.create_task_group() as tg:
        port = await tg.start(
            lambda task_status: serve_http(
                "127.0.0.1:0", handler, max_request_size=100, task_status=task_status
            )
        )
        async with client() as c:
            r = await c.post(f"http://127.0.0.1:{port}/x", content=b"x" * 101)
            assert r.status_code == 413

            # chunked upload (no content-length): counted while reading
            async def chunks() -> AsyncIterator[bytes]:
                for _ in range(10):
                    yield b"y" * 50

            r = await c.post(f"http://127.0.0.1:{port}/x", content=chunks())
            assert r.status_code == 413
            r = await c.post(f"http://127.0.0.1:{port}/x", content=b"x" * 100)
            assert r.status_code == 200
        tg.cancel_scope.cancel()
    assert [s[3] for s in seen] == [b"x" * 100]


async def _raw_exchange(port: int, data: bytes, *, responses: int) -> list[h11.Response]:
    """Send raw bytes, parse what comes back with an h11 client, until EOF."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))  # mirror what we send raw
    conn.send(h11.EndOfMessage())
    got: list[h11.Response] = []
    stream: SocketStream
    with anyio.fail_after(5):
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(data)
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    try:
                        conn.receive_data(await stream.receive())
                    except anyio.EndOfStream:
                        conn.receive_data(b"")
                    continue
                if isinstance(event, h11.Response):
                    got.append(event)
                elif isinstance(event, h11.EndOfMessage):
                    if len(got) == responses:
                        return got
                    conn.start_next_cycle()
                    conn.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
                    conn.send(h11.EndOfMessage())
                elif isinstance(event, h11.ConnectionClosed):
                    return got


async def test_keep_alive_pipelined_requests(server: tuple[str, Seen]) -> None:
    base, seen = server
    port = int(base.rsplit(":", 1)[1])
    request = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
    got = await _raw_exchange(port, request * 2, responses=2)
    assert [r.status_code for r in got] == [200, 200]
    assert [s[1] for s in seen] == ["/a", "/a"]


async def test_malformed_request_is_400(server: tuple[str, Seen]) -> None:
    base, seen = server
    port = int(base.rsplit(":", 1)[1])
    with anyio.fail_after(5):
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(b"THIS IS NOT HTTP\r\n\r\n")
            data = b""
            try:
                while True:
                    data += await stream.receive()
            except anyio.EndOfStream:
                pass
    assert data.startswith(b"HTTP/1.1 400 ")
    assert seen == []


async def test_slow_request_times_out_with_408() -> None:
    seen: Seen = []
    handler = await handler_factory(seen)
    async with anyio.create_task_group() as tg:
        port = await tg.start(
            lambda task_status: serve_http(
                "127.0.0.1:0", handler, request_timeout=0.2, task_status=task_status
            )
        )
        with anyio.fail_after(5):
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                await stream.send(b"GET / HTTP/1.1\r\nHost: x\r\n")  # head never finished
                data = b""
                try:
                    while True:
                        data += await stream.receive()
                except anyio.EndOfStream:
                    pass
        tg.cancel_scope.cancel()
    assert data.startswith(b"HTTP/1.1 408 ")


async def test_idle_connection_closed_silently() -> None:
    seen: Seen = []
    handler = await handler_factory(seen)
    async with anyio.create_task_group() as tg:
        port = await tg.start(
            lambda task_status: serve_http(
                "127.0.0.1:0", handler, request_timeout=0.1, task_status=task_status
            )
        )
        with anyio.fail_after(5):
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                with pytest.raises(anyio.EndOfStream):
                    await stream.receive()
        tg.cancel_scope.cancel()


async def test_too_many_connections_is_503() -> None:
    seen: Seen = []
    handler = await handler_factory(seen)
    async with anyio.create_task_group() as tg:
        port = await tg.start(
            lambda task_status: serve_http("127.0.0.1:0", handler, max_connections=1, task_status=task_status)
        )
        async with await anyio.connect_tcp("127.0.0.1", port) as idle:
            # The idle connection holds the only slot once the server has accepted it;
            # a request on it proves that.
            await idle.send(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await idle.receive()).startswith(b"HTTP/1.1 200 ")
            async with client() as c:
                r = await c.get(f"http://127.0.0.1:{port}/second")
            assert r.status_code == 503
        tg.cancel_scope.cancel()
    assert [s[1] for s in seen] == ["/first"]


async def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 support in this Python")
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback: {exc}")
    seen: Seen = []
    handler = await handler_factory(seen)
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve_http, "[::1]:0", handler)
        async with client() as c:
            r = await c.get(f"http://[::1]:{port}/v6")
        assert r.status_code == 200
        tg.cancel_scope.cancel()


async def test_cancel_with_open_keepalive_connection_is_prompt() -> None:
    seen: Seen = []
    handler = await handler_factory(seen)
    with anyio.fail_after(3):
        async with anyio.create_task_group() as tg:
            port = await tg.start(serve_http, "127.0.0.1:0", handler)
            async with client() as c:
                assert (await c.get(f"http://127.0.0.1:{port}/")).status_code == 200
                tg.cancel_scope.cancel()  # the kept-alive connection must not delay shutdown
