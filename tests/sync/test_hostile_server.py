"""The transfer server under hostile clients: malformed HELLO, foreign addresses, a flood
of idle connections, a source sending more than its manifest says (real TCP, loopback)."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import SocketStream

from hasup.sync import Generation, Manifest, SnapshotInfo, TransferError
from hasup.sync._address_filter import AddressFilter
from hasup.sync.engine import MAX_CONNECTIONS
from hasup.sync.snapshot import Entry
from hasup.sync.transfer import (
    END,
    HELLO,
    SNAPSHOT,
    WANT,
    channel_contexts,
    client_handshake,
    encode_chunk,
    server_handshake,
    sync_key,
)

from .helpers import KEY, make_engine, serving, staging_dirs, tcp_server

pytestmark = pytest.mark.anyio
CONTEXTS = channel_contexts([sync_key(KEY)], "data")


def source(tmp_path: Path, **kw: Any) -> Any:
    src = tmp_path / "a" / "data"
    src.mkdir(parents=True)
    (src / "conf.json").write_text("{}")
    return make_engine(tmp_path, "a", src, **kw)


@pytest.mark.parametrize("hello", [[], {"wait": "soon"}, {"wait": 1e308 * 10}, {"have": 5}, {"wait": True}])
async def test_malformed_hello_ends_only_that_connection(tmp_path: Path, hello: Any) -> None:
    a = source(tmp_path)
    b = make_engine(tmp_path, "b", tmp_path / "b" / "data")
    async with serving(a) as addr:
        stream = await anyio.connect_tcp(*addr)
        async with stream:
            channel = await client_handshake(stream, CONTEXTS, auth_timeout=5)
            await channel.send(HELLO, json.dumps(hello).encode())
            with pytest.raises(TransferError):
                await channel.receive(idle=5)
        assert await b.pull(addr) == a.current_generation()  # the server still serves


async def test_foreign_address_is_refused_before_the_handshake(tmp_path: Path) -> None:
    a = source(tmp_path, allowed_peers=["127.0.0.2"])
    b = make_engine(tmp_path, "b", tmp_path / "b" / "data")
    ok = make_engine(tmp_path, "c", tmp_path / "c" / "data", listen=("127.0.0.2", 0))
    async with serving(a) as addr:
        with pytest.raises(Exception, match="closed the connection"):
            await b.pull(addr)  # from 127.0.0.1
        assert await ok.pull(addr) == a.current_generation()  # from its own 127.0.0.2
    assert a.status().auth_failures == 0
    assert AddressFilter(["10.0.0.2"], ["192.168.0.0/16"])("::ffff:10.0.0.2")
    assert not AddressFilter(["10.0.0.2"])("10.0.0.3")


async def test_flood_of_idle_connections_does_not_lock_out_descriptors(tmp_path: Path) -> None:
    """Ten times the limit of idle connections: the extra ones are closed at once (no
    descriptor held), and a pull works as soon as the idle ones hit the 5 s bound."""
    a = source(tmp_path)
    b = make_engine(tmp_path, "b", tmp_path / "b" / "data")
    async with serving(a) as addr:
        idle = [await anyio.connect_tcp(*addr) for _ in range(MAX_CONNECTIONS * 10)]
        closed = 0
        for stream in idle:
            with anyio.move_on_after(6):
                try:
                    await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    closed += 1
        assert closed == len(idle)  # beyond the limit at once, within the limit by the auth timeout
        for stream in idle:
            await stream.aclose()
        assert await b.pull(addr) == a.current_generation()
    assert a.status().refused >= MAX_CONNECTIONS * 9


async def test_content_larger_than_the_manifest_is_refused_while_receiving(tmp_path: Path) -> None:
    entries = [
        {"p": ".", "t": "d", "m": 0o755, "u": 0, "g": 0},
        {"p": "f", "t": "f", "m": 0o644, "u": 0, "g": 0, "s": 1, "h": "a" * 64},
    ]
    manifest = Manifest.build(Entry.from_json(e) for e in entries)
    info = SnapshotInfo(Generation(2, manifest.hash))

    async def handle(stream: SocketStream) -> None:
        async with stream:
            channel = await server_handshake(stream, CONTEXTS, auth_timeout=5)
            await channel.receive_json(HELLO, idle=5)
            await channel.send_big(
                SNAPSHOT, zlib.compress(json.dumps({"info": info.to_json(), "manifest": entries}).encode())
            )
            await channel.receive_json(WANT, idle=5)
            for _ in range(8):  # 4 MB for a 1-byte file
                await channel.send(b"C", encode_chunk(bytes(512 * 1024)))
            await channel.send(END)
            await anyio.sleep(5)

    async def server(task_status: Any) -> None:
        await tcp_server(handle, task_status)

    dst = tmp_path / "b" / "data"
    dst.mkdir(parents=True)
    b = make_engine(tmp_path, "b", dst)
    async with anyio.create_task_group() as tg:
        port = await tg.start(server)
        with pytest.raises(TransferError, match="larger than the manifest"):
            await b.pull(("127.0.0.1", port))
        tg.cancel_scope.cancel()
    assert staging_dirs(dst) == []
