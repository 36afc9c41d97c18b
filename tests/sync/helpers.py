"""Helpers for the sync tests: engines on loopback, tree builders and comparison."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from hasup.sync import SyncEngine, SyncSettings

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def make_engine(
    base: Path,
    name: str,
    root: Path,
    *,
    key: bytes = KEY,
    events: list[Any] | None = None,
    allowed_peers: list[str] | None = None,
    **settings: Any,
) -> SyncEngine:
    opts: dict[str, Any] = {"listen": ("127.0.0.1", 0), "interval": 30.0, "id": "data"}
    opts.update(settings)

    def on_event(kind: str, fields: Any) -> None:
        if events is not None:
            events.append((kind, dict(fields)))

    return SyncEngine(
        SyncSettings(path=str(root), **opts),
        group_keys=[key],
        node_name=name,
        state_dir=base / f"state-{name}",
        on_event=on_event,
        io_timeout=10.0,
        allowed_peers=allowed_peers,
    )


@asynccontextmanager
async def serving(engine: SyncEngine) -> AsyncIterator[tuple[str, int]]:
    async with anyio.create_task_group() as tg:
        address = await tg.start(engine.serve)
        yield address
        tg.cancel_scope.cancel()


def make_db(path: Path, rows: int = 100) -> None:
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)")
    with con:
        con.executemany("INSERT INTO t (v) VALUES (?)", [(f"row {i}" * 10,) for i in range(rows)])
    con.close()


def make_tree(root: Path) -> None:
    (root / "neuron" / "plugins").mkdir(parents=True)
    (root / "ekuiper" / "sources").mkdir(parents=True)
    (root / "neuron" / "plugins.json").write_text('{"plugins": []}')
    (root / "neuron" / "plugins" / "libplugin.so").write_bytes(os.urandom(50_000))
    os.chmod(root / "neuron" / "plugins" / "libplugin.so", 0o755)
    (root / "ekuiper" / "sources" / "mqtt.yaml").write_text("server: tcp://broker:1883\npassword: s3cret\n")
    os.chmod(root / "ekuiper" / "sources" / "mqtt.yaml", 0o600)
    (root / "empty").write_bytes(b"")
    (root / "uploads").symlink_to("ekuiper/sources")
    make_db(root / "neuron" / "sqlite.db")


def tree_state(root: Path, *, ignore: tuple[str, ...] = ()) -> dict[str, Any]:
    """Kind, permissions and content (or link target) of every path under root."""
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if any(rel == i or rel.startswith(i + "/") for i in ignore):
                continue
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("l", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("d", stat.S_IMODE(st.st_mode))
            elif rel.endswith((".db-wal", ".db-shm")):
                continue
            elif path.read_bytes()[:16] == b"SQLite format 3\x00":
                out[rel] = ("db", stat.S_IMODE(st.st_mode), db_rows(path))
            else:
                out[rel] = ("f", stat.S_IMODE(st.st_mode), path.read_bytes())
    return out


def db_rows(path: Path) -> list[Any]:
    con = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        return con.execute("SELECT * FROM t ORDER BY id").fetchall()
    finally:
        con.close()


def staging_dirs(root: Path) -> list[Path]:
    return [p for p in root.parent.iterdir() if ".hasup-stage-" in p.name]


async def tcp_server(handle: Any, task_status: Any) -> None:
    """Serve ``handle`` on an ephemeral loopback port; report the port (``tg.start``)."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    async with listener:
        task_status.started(listener.extra(anyio.abc.SocketAttribute.local_port))
        await listener.serve(handle)
