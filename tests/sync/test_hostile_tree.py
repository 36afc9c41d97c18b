"""What a standby recreates from a snapshot: no escape through link chains or through its
own links, no set-id bits, owners mapped by name (real files, real TCP on loopback)."""

from __future__ import annotations

import json
import os
import stat
import zlib
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import SocketStream

from hasup.sync import Generation, Manifest, SnapshotInfo, UnsafeSnapshot
from hasup.sync.owners import OwnerMap, Owners, names_for
from hasup.sync.snapshot import Entry, resolve_link
from hasup.sync.transfer import HELLO, SNAPSHOT, WANT, channel_contexts, server_handshake, sync_key

from .helpers import KEY, make_engine, serving, staging_dirs, tcp_server

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("rel", "target", "links", "expected"),
    [
        ("a", "b", {}, "b"),
        ("d/a", "../b", {}, "b"),
        ("y", "x/..", {"x": "."}, None),
        ("z", "y/..", {"x": ".", "y": "x/.."}, None),
        ("b", "a/up/..", {"a/up": ".."}, None),
        ("m", "l/../..", {"l": "sub/deep"}, "."),
        ("p", "q", {"p": "q", "q": "p"}, None),
        ("e", "ext/x", {"ext": "/mnt"}, None),
        ("f", "file/../..", {}, None),
    ],
)
def test_resolve_link_follows_the_other_links(
    rel: str, target: str, links: dict[str, str], expected: str | None
) -> None:
    assert resolve_link(rel, target, {rel: target, **links}) == expected


async def crafted(entries: list[dict[str, Any]], task_status: Any) -> None:
    manifest = Manifest.build(Entry.from_json(e) for e in entries)
    info = SnapshotInfo(Generation(3, manifest.hash))

    async def handle(stream: SocketStream) -> None:
        async with stream:
            channel = await server_handshake(stream, channel_contexts([sync_key(KEY)], "data"), auth_timeout=5)
            await channel.receive_json(HELLO, idle=5)
            body = json.dumps({"info": info.to_json(), "manifest": entries}).encode()
            await channel.send_big(SNAPSHOT, zlib.compress(body))
            await channel.receive_json(WANT, idle=5)
            await anyio.sleep(5)

    await tcp_server(handle, task_status)


async def test_link_leaving_through_a_local_link_of_the_standby_is_refused(tmp_path: Path) -> None:
    """The standby keeps its own ``ext -> <outside>/deep`` (a link leaving the tree is
    node-local); ``y -> ext/..`` looks harmless in the manifest but would reach outside."""
    outside = tmp_path / "outside" / "deep"
    outside.mkdir(parents=True)
    dst = tmp_path / "b" / "data"
    dst.mkdir(parents=True)
    (dst / "keep.txt").write_text("old copy")
    (dst / "ext").symlink_to(outside)
    b = make_engine(tmp_path, "b", dst)
    entries = [
        {"p": ".", "t": "d", "m": 0o755, "u": 0, "g": 0},
        {"p": "y", "t": "l", "m": 0o777, "u": 0, "g": 0, "l": "ext/.."},
    ]
    async with anyio.create_task_group() as tg:
        port = await tg.start(crafted, entries)
        with pytest.raises(UnsafeSnapshot, match="link of this node"):
            await b.pull(("127.0.0.1", port))
        tg.cancel_scope.cancel()
    assert sorted(p.name for p in dst.iterdir()) == ["ext", "keep.txt"]
    assert staging_dirs(dst) == []
    assert b.current_generation() == Generation()


async def test_a_link_chain_on_the_source_stays_local(tmp_path: Path) -> None:
    """The source does not offer what the standby would refuse: the chain is node-local
    and the rest of the tree is replicated."""
    src, dst = tmp_path / "a" / "data", tmp_path / "b" / "data"
    src.mkdir(parents=True)
    (src / "conf.json").write_text("{}")
    (src / "x").symlink_to(".")
    (src / "y").symlink_to("x/..")
    (src / "inside").symlink_to("x/conf.json")
    a, b = make_engine(tmp_path, "a", src), make_engine(tmp_path, "b", dst)
    async with serving(a) as addr:
        await b.pull(addr)
    assert sorted(p.name for p in dst.iterdir()) == ["conf.json", "inside", "x"]
    assert (dst / "inside").read_text() == "{}"


@pytest.mark.skipif(os.geteuid() != 0, reason="owners and set-id bits are only set by a root standby")
async def test_set_id_bits_are_stripped_and_owners_mapped_by_name(tmp_path: Path) -> None:
    src, dst = tmp_path / "a" / "data", tmp_path / "b" / "data"
    (src / "shared").mkdir(parents=True)
    for name, mode in (("suid", 0o4755), ("sgid", 0o2755), ("root-suid", 0o4755)):
        (src / name).write_bytes(b"#!/bin/sh\n")
        os.chmod(src / name, mode)
    os.chown(src / "suid", 65534, 65534)  # nobody / nogroup: names on both sides
    os.chown(src / "sgid", 54321, 54321)  # no name anywhere: the number is kept
    os.chmod(src / "shared", 0o2775)
    a, b = make_engine(tmp_path, "a", src), make_engine(tmp_path, "b", dst)
    async with serving(a) as addr:
        await b.pull(addr)
    for name in ("suid", "sgid", "root-suid", "shared"):
        assert not os.lstat(dst / name).st_mode & (stat.S_ISUID | stat.S_ISGID), name
    assert stat.S_IMODE(os.lstat(dst / "suid").st_mode) == 0o755
    assert (os.lstat(dst / "suid").st_uid, os.lstat(dst / "suid").st_gid) == (65534, 65534)
    assert (os.lstat(dst / "sgid").st_uid, os.lstat(dst / "sgid").st_gid) == (54321, 54321)
    assert os.lstat(dst / "root-suid").st_uid == 0


def test_owner_map_by_name() -> None:
    owners = Owners({1001: "neuron", 1002: "gone"}, {1001: "neuron"})
    users = {"neuron": 2001}
    owner_map = OwnerMap(owners, fallback=(7, 8), lookup_user=users.get, lookup_group={"neuron": 3001}.get)
    assert owner_map.uid(1001) == 2001  # same name, other number on this machine
    assert owner_map.uid(1002) == 7  # name unknown here: the standby's own owner
    assert owner_map.uid(1003) == 1003  # no name on the source: the number
    assert owner_map.gid(1001) == 3001
    assert Owners.from_json(owners.to_json()) == owners
    assert names_for([0], [0]).users == {0: "root"}


@pytest.mark.parametrize(
    "bad",
    [[], {"u": []}, {"u": {"x": "a"}}, {"u": {"1": 5}}, {"u": {"1": ""}}, {"g": {str(i): "n" for i in range(5000)}}],
)
def test_malformed_owner_names_are_refused(bad: object) -> None:
    with pytest.raises(UnsafeSnapshot):
        Owners.from_json(bad)
