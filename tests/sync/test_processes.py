"""Real processes: a SQLite writer during snapshots, and kill -9 of either side mid-transfer."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import make_engine, make_tree, serving, staging_dirs, tree_state

HERE = Path(__file__).parent


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def expect_line(proc: subprocess.Popen[str], prefix: str) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the child flushes each line; EOF if it died
    assert line.startswith(prefix), (
        f"expected {prefix!r}, got {line!r}; stderr: {proc.stderr.read() if proc.stderr else ''}"
    )
    return line.strip()


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait()
        for stream in (p.stdin, p.stdout, p.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.anyio
async def test_snapshots_under_a_live_writer_are_consistent_prefixes(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    src = tmp_path / "a" / "data"
    dst = tmp_path / "b" / "data"
    src.mkdir(parents=True)
    make_tree(src)
    db = src / "ekuiper" / "live.db"
    writer = spawn(str(HERE / "sqlite_writer.py"), str(db))
    procs.append(writer)
    expect_line(writer, "STARTED")
    a, b = make_engine(tmp_path, "a", src), make_engine(tmp_path, "b", dst)
    counts = []
    async with serving(a) as addr:
        for _ in range(12):
            await a.snapshot_now()
            await b.pull(addr)
            con = sqlite3.connect(f"file:{dst / 'ekuiper' / 'live.db'}?immutable=1", uri=True)
            try:
                assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
                ids = [row[0] for row in con.execute("SELECT id FROM t ORDER BY id")]
            finally:
                con.close()
            assert ids == list(range(1, len(ids) + 1))  # a prefix of the writes, no gap
            counts.append(len(ids))
    writer.kill()
    assert counts == sorted(counts)
    assert counts[-1] > counts[0] > 0
    assert not (dst / "ekuiper" / "live.db-wal").exists()
    assert b.status().conflicts == 0


def serve_process(root: Path, state: Path, procs: list[subprocess.Popen[str]]) -> tuple[subprocess.Popen[str], int]:
    p = spawn(str(HERE / "sync_node.py"), "serve", str(root), str(state))
    procs.append(p)
    return p, int(expect_line(p, "LISTEN").split()[1])


def pull_process(
    root: Path, state: Path, port: int, procs: list[subprocess.Popen[str]], *, pause: bool
) -> subprocess.Popen[str]:
    args = [str(HERE / "sync_node.py"), "pull", str(root), str(state), str(port)]
    p = spawn(*args, *(["--pause"] if pause else []))
    procs.append(p)
    return p


def run_pull(root: Path, state: Path, port: int, procs: list[subprocess.Popen[str]]) -> str:
    p = pull_process(root, state, port, procs, pause=False)
    line = expect_line(p, "PROGRESS")
    line = expect_line(p, "DONE")
    assert p.wait(timeout=60) == 0
    return line


def grow(src: Path) -> None:
    (src / "ekuiper" / "uploads").mkdir(parents=True)
    (src / "ekuiper" / "uploads" / "model.bin").write_bytes(os.urandom(24 << 20))
    (src / "neuron" / "plugins.json").write_text('{"plugins": ["v2"]}')


@pytest.mark.parametrize("victim", ["standby", "source"])
def test_kill_9_mid_transfer_leaves_no_partial_state(
    tmp_path: Path, procs: list[subprocess.Popen[str]], victim: str
) -> None:
    src = tmp_path / "a" / "data"
    dst = tmp_path / "b" / "data"
    src.mkdir(parents=True)
    make_tree(src)
    server, port = serve_process(src, tmp_path / "state-a", procs)
    run_pull(dst, tmp_path / "state-b", port, procs)
    before = tree_state(dst)
    server.send_signal(signal.SIGKILL)
    server.wait()
    grow(src)
    server, port = serve_process(src, tmp_path / "state-a", procs)

    client = pull_process(dst, tmp_path / "state-b", port, procs, pause=True)
    expect_line(client, "PROGRESS")  # the client is now blocked mid-transfer
    assert staging_dirs(dst) != []  # ... with a half-received snapshot staged
    if victim == "standby":
        client.send_signal(signal.SIGKILL)
        client.wait()
    else:
        server.send_signal(signal.SIGKILL)
        server.wait()
        assert client.stdin is not None
        client.stdin.write("go\n")
        client.stdin.flush()
        expect_line(client, "ERROR")
        assert client.wait(timeout=30) == 3
        server, port = serve_process(src, tmp_path / "state-a", procs)
    assert tree_state(dst) == before  # the old copy, whole, and nothing of the new one

    run_pull(dst, tmp_path / "state-b", port, procs)
    assert tree_state(dst) == tree_state(src)
    assert staging_dirs(dst) == []
