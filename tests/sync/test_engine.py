"""The sync engine end to end on loopback: real files, real SQLite, real TCP."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest

from hasup.sync import AuthenticationFailed, DiskFull, Generation, SyncEngine, UnsafeSnapshot

from .._support import missing_component
from .helpers import KEY, OTHER_KEY, make_db, make_engine, make_tree, serving, staging_dirs, tree_state

pytestmark = pytest.mark.anyio


def pair(tmp_path: Path, **settings: Any) -> tuple[Path, Path, SyncEngine, SyncEngine]:
    src = tmp_path / "a" / "data"
    dst = tmp_path / "b" / "data"
    src.mkdir(parents=True)
    make_tree(src)
    return src, dst, make_engine(tmp_path, "a", src, **settings), make_engine(tmp_path, "b", dst, **settings)


async def test_initial_then_incremental(tmp_path: Path) -> None:
    src, dst, a, b = pair(tmp_path)
    async with serving(a) as addr:
        gen = await b.pull(addr)
        assert gen == a.current_generation() == b.current_generation()
        assert tree_state(dst) == tree_state(src)
        assert (dst / "uploads").is_symlink()
        assert os.stat(dst / "ekuiper/sources/mqtt.yaml").st_mode & 0o777 == 0o600
        first = b.status().bytes_received

        (src / "neuron" / "plugins.json").write_text('{"plugins": ["modbus"]}')
        gen2 = await a.snapshot_now()
        assert gen2.number == gen.number + 1
        assert await b.pull(addr) == gen2
        assert tree_state(dst) == tree_state(src)
        assert b.status().bytes_received - first < 1000  # only the changed file moved

        assert await b.pull(addr) == gen2  # nothing new: no change
        assert b.status().conflicts == 0
        assert staging_dirs(dst) == []


async def test_touch_is_not_a_new_generation(tmp_path: Path) -> None:
    src, _dst, a, _b = pair(tmp_path)
    gen = await a.snapshot_now()
    os.utime(src / "neuron" / "plugins.json", (1, 1))
    assert await a.snapshot_now() == gen


async def test_excluded_and_outside_links_stay_local(tmp_path: Path) -> None:
    src, dst, a, b = pair(tmp_path, exclude=("neuron/*.lic", "logs"))
    (src / "neuron" / "a.lic").write_text("license of node a")
    (src / "logs").mkdir()
    (src / "logs" / "x.log").write_text("log a")
    dst.mkdir(parents=True)
    async with serving(a) as addr:
        await b.pull(addr)  # first sync onto an empty tree
        (dst / "neuron" / "b.lic").write_text("license of node b")
        (dst / "logs").mkdir()
        (dst / "logs" / "x.log").write_text("log b")
        (dst / "outside").symlink_to("/etc")
        (src / "neuron" / "plugins.json").write_text("v2")
        await a.snapshot_now()
        await b.pull(addr)
    assert not (dst / "neuron" / "a.lic").exists()
    assert (dst / "neuron" / "b.lic").read_text() == "license of node b"
    assert (dst / "logs" / "x.log").read_text() == "log b"
    assert os.readlink(dst / "outside") == "/etc"
    assert (dst / "neuron" / "plugins.json").read_text() == "v2"
    assert b.status().conflicts == 0


async def test_wrong_key_is_refused_and_nothing_written(tmp_path: Path) -> None:
    src, dst, a, _b = pair(tmp_path)
    intruder = make_engine(tmp_path, "x", dst, key=OTHER_KEY)
    events: list[Any] = []
    a = make_engine(tmp_path, "a2", src, events=events)
    async with serving(a) as addr:
        with pytest.raises(AuthenticationFailed):
            await intruder.pull(addr)
        # TLS 1.3: the client refuses the server's certificate first; the server sees
        # the alert a moment later
        with anyio.fail_after(5):
            while a.status().auth_failures == 0:
                await anyio.sleep(0.01)
    assert not dst.exists()
    assert not dst.parent.exists() or list(dst.parent.iterdir()) == []
    assert a.status().auth_failures == 1
    assert [e for e, _ in events if e != "published"] == ["auth_failed"]
    assert intruder.current_generation() == Generation()


async def test_failback_pulls_edits_made_on_the_standby(tmp_path: Path) -> None:
    src, dst, a, b = pair(tmp_path)
    async with serving(a) as addr:
        await b.pull(addr)
    # failover: b is master now and its service edits the data
    (dst / "ekuiper" / "sources" / "mqtt.yaml").write_text("server: tcp://new-broker:1883\n")
    make_db(dst / "neuron" / "sqlite.db", rows=5)
    async with serving(b) as addr_b:
        gen_b = b.current_generation()
        assert gen_b.number == a.current_generation().number + 1
        # failback: a (preferred) pulls before it takes over
        assert await a.pull(addr_b) == gen_b
    assert tree_state(src) == tree_state(dst)
    assert (src / "ekuiper" / "sources" / "mqtt.yaml").read_text() == "server: tcp://new-broker:1883\n"
    assert a.status().conflicts == 0
    assert [p.name for p in src.parent.iterdir()] == ["data"]


async def test_both_sides_changed_keeps_both_copies(tmp_path: Path) -> None:
    src, dst, a, b = pair(tmp_path)
    async with serving(a) as addr:
        await b.pull(addr)
    # partition: both serve and edit
    (src / "neuron" / "plugins.json").write_text("edited on a")
    (dst / "neuron" / "plugins.json").write_text("edited on b")
    await b.snapshot_now()
    events: list[Any] = []
    b2 = make_engine(tmp_path, "b", dst, events=events)  # restart of b's supervisor: state reloaded
    async with serving(a) as addr:
        await b2.pull(addr)
    assert (dst / "neuron" / "plugins.json").read_text() == "edited on a"
    kept = [p for p in dst.parent.iterdir() if p.name.startswith("data.conflict-")]
    assert len(kept) == 1
    assert kept[0].name.endswith("-b")
    assert (kept[0] / "neuron" / "plugins.json").read_text() == "edited on b"
    assert tree_state(kept[0], ignore=("neuron/plugins.json",)) == tree_state(src, ignore=("neuron/plugins.json",))
    assert b2.status().conflicts == 1
    assert [e for e, _ in events if e == "conflict"] == ["conflict"]


async def test_unpublished_local_edit_is_kept(tmp_path: Path) -> None:
    src, dst, a, b = pair(tmp_path)
    async with serving(a) as addr:
        await b.pull(addr)
        (dst / "empty").write_text("edited on the standby, never published")
        (src / "neuron" / "plugins.json").write_text("v2")
        await a.snapshot_now()
        await b.pull(addr)
    kept = [p for p in dst.parent.iterdir() if ".conflict-" in p.name]
    assert len(kept) == 1
    assert (kept[0] / "empty").read_text() == "edited on the standby, never published"
    assert b.status().conflicts == 1


async def test_older_source_does_not_overwrite(tmp_path: Path) -> None:
    _src, dst, a, b = pair(tmp_path)
    async with serving(a) as addr:
        await b.pull(addr)
    (dst / "empty").write_text("newer on b")
    await b.snapshot_now()
    async with serving(a) as addr:
        gen = await b.pull(addr)  # a still holds the generation b descends from
    assert gen == b.current_generation()
    assert gen.number == 2
    assert (dst / "empty").read_text() == "newer on b"


async def test_max_bytes_quota(tmp_path: Path) -> None:
    _src, dst, a, b = pair(tmp_path, max_bytes=10_000)
    async with serving(a) as addr:
        with pytest.raises(UnsafeSnapshot, match="max_bytes"):
            await b.pull(addr)
    assert not dst.exists()


async def test_disk_full_keeps_old_copy(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        missing_component("tmpfs", "mounting a small tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    proc = await anyio.run_process(
        ["mount", "-t", "tmpfs", "-o", "size=3m,nr_inodes=64", "tmpfs", str(mnt)], check=False
    )
    if proc.returncode != 0:
        missing_component("tmpfs", proc.stderr.decode().strip())
    try:
        src = tmp_path / "a" / "data"
        src.mkdir(parents=True)
        make_tree(src)
        dst = mnt / "data"
        a, b = make_engine(tmp_path, "a", src), make_engine(tmp_path, "b", dst)
        async with serving(a) as addr:
            await b.pull(addr)
            before = tree_state(dst)
            (src / "big.bin").write_bytes(os.urandom(4 << 20))
            await a.snapshot_now()
            with pytest.raises(DiskFull, match="intact"):
                await b.pull(addr)
            assert tree_state(dst) == before
            assert staging_dirs(dst) == []
            # the byte check passes but the filesystem runs out (of inodes) while staging
            (src / "big.bin").unlink()
            (src / "many").mkdir()
            for i in range(60):
                (src / "many" / f"{i}.yaml").write_text(f"tag: {i}\n")
            await a.snapshot_now()
            with pytest.raises(DiskFull, match=r"no space left.*intact"):
                await b.pull(addr)
            assert tree_state(dst) == before
            assert staging_dirs(dst) == []
            for i in range(10, 60):
                (src / "many" / f"{i}.yaml").unlink()
            await a.snapshot_now()
            await b.pull(addr)
            assert tree_state(dst) == tree_state(src)
    finally:
        await anyio.run_process(["umount", "-l", str(mnt)], check=False)


async def test_follow_sees_a_small_change_quickly(tmp_path: Path) -> None:
    src, dst, a, _ = pair(tmp_path)
    applied: list[anyio.Event] = [anyio.Event()]

    def on_event(kind: str, fields: Any) -> None:
        if kind == "applied":
            applied[-1].set()

    b = SyncEngine(_.settings, group_keys=[KEY], node_name="b", state_dir=tmp_path / "state-b2", on_event=on_event)
    async with serving(a) as addr, anyio.create_task_group() as tg:
        await tg.start(b.follow, addr)
        with anyio.fail_after(10):
            await applied[-1].wait()
        assert b.current_generation() == a.current_generation()
        applied.append(anyio.Event())
        (src / "neuron" / "plugins.json").write_text("changed while followed")
        with anyio.fail_after(5):  # watchfiles -> new generation -> long poll answers -> apply
            await applied[-1].wait()
        assert (dst / "neuron" / "plugins.json").read_text() == "changed while followed"
        assert b.current_generation() == a.current_generation()
        tg.cancel_scope.cancel()
    assert b.status().conflicts == 0


async def test_sqlite_image_is_consistent_and_deterministic(tmp_path: Path) -> None:
    src, _dst, a, _b = pair(tmp_path)
    con = sqlite3.connect(src / "neuron" / "sqlite.db")
    con.execute("INSERT INTO t (v) VALUES ('uncheckpointed')")
    con.commit()  # lives in the -wal only; connection left open
    gen = await a.snapshot_now()
    image = [e for e in a._published.manifest.files() if e.sqlite]  # type: ignore[union-attr]
    assert len(image) == 1
    con.close()
    assert await a.snapshot_now() == gen  # checkpoint on close: same content, same generation


async def test_empty_source_does_not_wipe_the_standby(tmp_path: Path) -> None:
    src, dst, a, b = pair(tmp_path)
    async with serving(a) as addr:
        await b.pull(addr)
        before = tree_state(dst)
        for child in list(src.iterdir()):
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        await a.snapshot_now()
        await b.pull(addr)
    kept = [p for p in dst.parent.iterdir() if ".conflict-" in p.name]
    assert len(kept) == 1
    assert tree_state(kept[0]) == before
    assert b.status().conflicts == 1
