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
    SNAPSHOT,
    WANT,
    channel_contexts,
    client_handshake,
    decode_chunk,
    encode_chunk,
    server_handshake,
    sync_key,
)

from .helpers import KEY, OTHER_KEY, make_engine, staging_dirs, tcp_server

pytestmark = pytest.mark.anyio

#: What a member holding the group key uses for the ``[[sync]]`` with id "data".
CONTEXTS = channel_contexts([sync_key(KEY)], "data")

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
            channel = await server_handshake(stream, CONTEXTS, auth_timeout=5)
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

    await tcp_server(handle, task_status)


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


class Corrupting(anyio.abc.ByteStream):
    """Forwards a TCP stream; once armed, flips one bit of everything it sends."""

    def __init__(self, inner: SocketStream) -> None:
        self.inner = inner
        self.armed = False

    async def send(self, item: bytes) -> None:
        if self.armed:
            item = item[:-1] + bytes([item[-1] ^ 1])
        await self.inner.send(item)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        return await self.inner.receive(max_bytes)

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_tampered_frame_is_refused(tmp_path: Path) -> None:
    """Flip one bit of a TLS record on the wire: the receiver refuses the stream."""
    from hasup.sync import TransferError

    async def server(task_status: Any) -> None:
        async def handle(stream: SocketStream) -> None:
            async with stream:
                wire = Corrupting(stream)
                channel = await server_handshake(wire, CONTEXTS, auth_timeout=5)
                wire.armed = True
                await channel.send(b"C", encode_chunk(b"payload"))
                await anyio.sleep_forever()

        await tcp_server(handle, task_status)

    async with anyio.create_task_group() as tg:
        port = await tg.start(server)
        stream = await anyio.connect_tcp("127.0.0.1", port)
        async with stream:
            channel = await client_handshake(stream, CONTEXTS, auth_timeout=5)
            with pytest.raises(TransferError, match="TLS record refused"):
                await channel.receive(idle=5)
        tg.cancel_scope.cancel()
    assert decode_chunk(encode_chunk(b"x" * 1000)) == b"x" * 1000


async def test_server_with_wrong_key_is_refused_by_the_client(tmp_path: Path) -> None:
    """The client checks the server's certificate too (a rogue source cannot feed a standby)."""
    from hasup.sync import AuthenticationFailed

    rogue_contexts = channel_contexts([sync_key(OTHER_KEY)], "data")

    async def rogue(task_status: Any) -> None:
        async def handle(stream: SocketStream) -> None:
            async with stream:
                with pytest.raises(AuthenticationFailed):
                    await server_handshake(stream, rogue_contexts, auth_timeout=5)

        await tcp_server(handle, task_status)

    dst = tmp_path / "b" / "data"
    b = make_engine(tmp_path, "b", dst)
    async with anyio.create_task_group() as tg:
        port = await tg.start(rogue)
        with pytest.raises(AuthenticationFailed, match="CERTIFICATE_VERIFY_FAILED"):
            await b.pull(("127.0.0.1", port))
        tg.cancel_scope.cancel()
    assert not dst.exists()


async def test_follower_on_another_directorys_port_is_refused(tmp_path: Path) -> None:
    """Swapped sync ports, or ``[[sync]]`` listed in another order on the two nodes: the
    follower of ``data`` reaches the server of ``etc``. The sync id is in both
    identities, so the handshake fails and directory B is never applied onto A's path."""
    from hasup.sync import AuthenticationFailed

    from .helpers import serving

    src = tmp_path / "a" / "etc"
    src.mkdir(parents=True)
    (src / "other.conf").write_text("not the data directory")
    dst = tmp_path / "b" / "data"
    dst.mkdir(parents=True)
    (dst / "keep.txt").write_text("data copy")
    a = make_engine(tmp_path, "a", src, id="etc")
    b = make_engine(tmp_path, "b", dst, id="data")
    async with serving(a) as addr:
        with pytest.raises(AuthenticationFailed, match="another"):
            await b.pull(addr)
    assert sorted(p.name for p in dst.iterdir()) == ["keep.txt"]
    assert staging_dirs(dst) == []
