"""A crafted source (it holds the key: a compromised member) cannot write outside the tree."""

from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import SocketStream

from hasup.sync import Generation, Manifest, SnapshotInfo, UnsafeSnapshot
from hasup.sync.snapshot import Entry
from hasup.sync.transfer import (
    END,
    HELLO,
    MAGIC,
    SNAPSHOT,
    WANT,
    client_handshake,
    decode_chunk,
    encode_chunk,
    server_handshake,
    sync_key,
)

from .helpers import KEY, OTHER_KEY, make_engine, staging_dirs

pytestmark = pytest.mark.anyio

CONTENT = b"owned\n"
DIGEST = hashlib.sha256(CONTENT).hexdigest()


def d(path: str) -> dict[str, Any]:
    return {"p": path, "t": "d", "m": 0o755, "u": 0, "g": 0, "mt": 0}


def f(path: str) -> dict[str, Any]:
    return {"p": path, "t": "f", "m": 0o644, "u": 0, "g": 0, "mt": 0, "s": len(CONTENT), "h": DIGEST}


def link(path: str, target: str) -> dict[str, Any]:
    return {"p": path, "t": "l", "m": 0o777, "u": 0, "g": 0, "mt": 0, "l": target}


CRAFTED = {
    "dotdot": [d("."), f("../evil")],
    "nested-dotdot": [d("."), d("sub"), f("sub/../../evil")],
    "absolute": [d("."), f("/tmp/hasup-evil-abs")],
    "link-outside": [d("."), link("escape", "../../..")],
    "link-absolute": [d("."), link("etc", "/etc")],
    "write-through-link": [d("."), link("l", "."), f("l/evil")],
    # each link passes a lexical check on its own; together they reach the tree's parent
    "link-chain": [d("."), link("x", "."), link("y", "x/.."), link("z", "y/..")],
    "link-chain-in-dir": [d("."), d("a"), link("a/up", ".."), link("b", "a/up/..")],
    "link-loop": [d("."), link("p", "q"), link("q", "p")],
    "fifo": [d("."), {"p": "pipe", "t": "p", "m": 0o644, "u": 0, "g": 0}],
    "device": [d("."), {"p": "sda", "t": "b", "m": 0o644, "u": 0, "g": 0}],
    "no-root": [f("evil")],
    "dot-component": [d("."), f("./evil")],
}


async def crafted_source(entries: list[dict[str, Any]], task_status: Any) -> None:
    # a correct hash, so that the path checks (not the hash check) are what refuses it
    manifest_hash = "0" * 64
    if _decodable(entries):
        manifest_hash = Manifest.build(Entry.from_json(e) for e in entries).hash
    info = SnapshotInfo(Generation(7, manifest_hash))

    async def handle(stream: SocketStream) -> None:
        async with stream:
            channel = await server_handshake(stream, [sync_key(KEY)], auth_timeout=5)
            await channel.receive_json(HELLO, idle=5)
            body = json.dumps({"info": info.to_json(), "manifest": entries}).encode()
            await channel.send_big(SNAPSHOT, zlib.compress(body))
            try:
                want = await channel.receive_json(WANT, idle=5)
            except Exception:
                return
            for _ in want:
                await channel.send(b"C", encode_chunk(CONTENT))
                await channel.send(END)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    async with listener:
        task_status.started(listener.extra(anyio.abc.SocketAttribute.local_port))
        await listener.serve(handle)


def _decodable(entries: list[dict[str, Any]]) -> bool:
    try:
        for e in entries:
            Entry.from_json(e)
    except UnsafeSnapshot:
        return False
    return True


@pytest.mark.parametrize("case", sorted(CRAFTED))
async def test_crafted_manifest_is_rejected(tmp_path: Path, case: str) -> None:
    work = tmp_path / "w"
    dst = work / "data"
    dst.mkdir(parents=True)
    (dst / "keep.txt").write_text("old copy")
    b = make_engine(tmp_path, "b", dst)
    async with anyio.create_task_group() as tg:
        port = await tg.start(crafted_source, CRAFTED[case])
        with pytest.raises(UnsafeSnapshot):
            await b.pull(("127.0.0.1", port))
        tg.cancel_scope.cancel()
    assert sorted(p.name for p in work.iterdir()) == ["data"]
    assert sorted(p.name for p in dst.iterdir()) == ["keep.txt"]
    assert not await anyio.Path("/tmp/hasup-evil-abs").exists()
    assert staging_dirs(dst) == []
    assert b.current_generation() == Generation()


async def test_tampered_frame_is_refused(tmp_path: Path) -> None:
    """Flip one ciphertext bit on the wire: the receiver refuses the frame."""
    from hasup.sync import TransferError

    async def server(task_status: Any) -> None:
        async def handle(stream: SocketStream) -> None:
            async with stream:
                channel = await server_handshake(stream, [sync_key(KEY)], auth_timeout=5)
                frame = bytearray(channel.seal(b"C", encode_chunk(b"payload")))
                frame[-1] ^= 1
                await channel.send_frame(bytes(frame))
                await anyio.sleep_forever()

        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        async with listener:
            task_status.started(listener.extra(anyio.abc.SocketAttribute.local_port))
            await listener.serve(handle)

    async with anyio.create_task_group() as tg:
        port = await tg.start(server)
        stream = await anyio.connect_tcp("127.0.0.1", port)
        async with stream:
            channel = await client_handshake(stream, sync_key(KEY), auth_timeout=5)
            with pytest.raises(TransferError, match="authentication"):
                await channel.receive(idle=5)
        tg.cancel_scope.cancel()
    assert decode_chunk(encode_chunk(b"x" * 1000)) == b"x" * 1000


async def test_server_with_wrong_key_is_refused_by_the_client(tmp_path: Path) -> None:
    """The client checks the server's proof too (a rogue source cannot feed a standby)."""
    from hasup.sync import AuthenticationFailed

    async def rogue(task_status: Any) -> None:
        async def handle(stream: SocketStream) -> None:
            async with stream:
                # accept any client proof, answer with a proof from another key
                await server_handshake_accepting_anything(stream)

        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        async with listener:
            task_status.started(listener.extra(anyio.abc.SocketAttribute.local_port))
            await listener.serve(handle)

    dst = tmp_path / "b" / "data"
    b = make_engine(tmp_path, "b", dst)
    async with anyio.create_task_group() as tg:
        port = await tg.start(rogue)
        with pytest.raises(AuthenticationFailed, match="proof"):
            await b.pull(("127.0.0.1", port))
        tg.cancel_scope.cancel()
    assert not dst.exists()


async def server_handshake_accepting_anything(stream: SocketStream) -> None:
    import hmac
    import os

    from anyio.streams.buffered import BufferedByteReceiveStream

    reader = BufferedByteReceiveStream(stream)
    hello = await reader.receive_exactly(len(MAGIC) + 32)
    sn = os.urandom(32)
    await stream.send(sn)
    await reader.receive_exactly(32)
    cn = hello[len(MAGIC) :]
    await stream.send(hmac.new(sync_key(OTHER_KEY), b"hasup sync server" + cn + sn, hashlib.sha256).digest())
