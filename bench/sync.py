#!/usr/bin/env python3
"""Data sync benchmark over loopback: source and standby in separate processes.

    .venv/bin/python bench/sync.py --runs 5 [--mb 200] [--dir /var/tmp]

* tree: ``--mb`` MB of mixed content — 3 SQLite databases in WAL mode (~20 % of the
  bytes), ~1500 small YAML/JSON files (compressible), a few binary blobs (incompressible);
* ``initial``: a standby with no copy pulls the whole tree (handshake, manifest, transfer,
  staging, fsync, swap) — MB/s over the tree size;
* ``scan``: the source's first full scan (hashing + SQLite backup images);
* ``incremental``: with the standby following (long poll), one 4 KB file is rewritten on
  the source; time until the new content is visible on the standby (watch → new generation
  → transfer → atomic swap).

Each figure is the median of ``--runs`` runs (min and max shown).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from hasup.sync import SyncEngine, SyncSettings

KEY = bytes(range(32))


def build_tree(root: Path, total_mb: int) -> None:
    rng = __import__("random").Random(1)
    budget = total_mb << 20
    db_bytes = budget // 5
    for i in range(3):
        (root / f"db{i}").mkdir(parents=True)
        con = sqlite3.connect(root / f"db{i}" / "data.db")
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT, value BLOB)")
        rows = db_bytes // 3 // 600
        with con:
            con.executemany(
                "INSERT INTO tags (name, value) VALUES (?, ?)",
                ((f"tag-{n}", os.urandom(200) + b"x" * 300) for n in range(rows)),
            )
        con.close()
    small = budget * 3 // 10
    n = 0
    while small > 0:
        d = root / "ekuiper" / f"dir{n % 30}"
        d.mkdir(parents=True, exist_ok=True)
        size = rng.randint(1 << 10, 64 << 10)
        line = f"tag_{n}: {{address: 40001, type: int16, scale: 0.1, group: g{n % 7}}}\n".encode()
        (d / f"conf{n}.yaml").write_bytes((line * (size // len(line) + 1))[:size])
        small -= size
        n += 1
    (root / "neuron").mkdir(exist_ok=True)
    (root / "neuron" / "small.json").write_bytes(b"{}" + b" " * 4094)
    rest = budget - sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    (root / "neuron" / "plugins").mkdir()
    i = 0
    while rest > 0:
        size = min(rest, 16 << 20)
        (root / "neuron" / "plugins" / f"lib{i}.so").write_bytes(os.urandom(size))
        rest -= size
        i += 1


def tree_bytes(root: Path) -> int:
    return sum(p.lstat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def engine(root: Path, state: Path, name: str) -> SyncEngine:
    settings = SyncSettings(path=str(root), listen=("127.0.0.1", 0), interval=30.0)
    return SyncEngine(settings, group_keys=[KEY], node_name=name, state_dir=state)


async def serve_main(root: str, state: str) -> None:
    eng = engine(Path(root), Path(state), "source")
    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        _, port = await tg.start(eng.serve)
        print(f"LISTEN {port} {time.perf_counter() - t0:.3f}", flush=True)


async def initial_run(dst: Path, state: Path, port: int) -> float:
    eng = engine(dst, state, "standby")
    t0 = time.perf_counter()
    await eng.pull(("127.0.0.1", port))
    return time.perf_counter() - t0


async def incremental_runs(src: Path, dst: Path, state: Path, port: int, runs: int) -> list[float]:
    eng = engine(dst, state, "standby")
    out = []
    target_src = src / "neuron" / "small.json"
    target_dst = dst / "neuron" / "small.json"
    async with anyio.create_task_group() as tg:
        await eng.pull(("127.0.0.1", port))
        await tg.start(eng.follow, ("127.0.0.1", port))
        for i in range(runs):
            await anyio.sleep(0.3)  # let the follower settle into its long poll (not a sync point)
            content = (f'{{"run": {i}}}'.encode() + b" " * 4096)[:4096]
            t0 = time.perf_counter()
            target_src.write_bytes(content)
            with anyio.fail_after(30):
                # measuring when the bytes are visible on disk, so poll the file itself
                while target_dst.read_bytes() != content:
                    await anyio.sleep(0.002)
            out.append(time.perf_counter() - t0)
        tg.cancel_scope.cancel()
    return out


def fmt(values: list[float], unit: str = "s") -> str:
    return f"{statistics.median(values):.3f} {unit} (min {min(values):.3f}, max {max(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        anyio.run(serve_main, *args.serve)
        return
    work = Path(tempfile.mkdtemp(prefix="hasup-bench-sync-", dir=args.dir))
    try:
        src = work / "a" / "data"
        src.mkdir(parents=True)
        build_tree(src, args.mb)
        size = tree_bytes(src)
        scans, initial = [], []
        for run in range(args.runs):
            shutil.rmtree(work / "state-a", ignore_errors=True)
            server = subprocess.Popen(
                [sys.executable, __file__, "--serve", str(src), str(work / "state-a")],
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                assert server.stdout is not None
                _, port, scan = server.stdout.readline().split()
                scans.append(float(scan))
                dst = work / f"b{run}" / "data"
                initial.append(anyio.run(initial_run, dst, work / f"state-b{run}", int(port)))
                if run == args.runs - 1:
                    incr = anyio.run(incremental_runs, src, dst, work / f"state-b{run}", int(port), args.runs)
            finally:
                server.terminate()
                server.wait()
            shutil.rmtree(work / f"b{run}")
            shutil.rmtree(work / f"state-b{run}", ignore_errors=True)
        mb = size / 1e6
        rates = [mb / t for t in initial]
        result: dict[str, Any] = {
            "tree": f"{mb:.0f} MB, {sum(1 for _ in src.rglob('*'))} entries, 3 SQLite DBs",
            "source first scan": fmt(scans),
            "initial sync": fmt(initial),
            "initial throughput": f"{statistics.median(rates):.0f} MB/s (min {min(rates):.0f})",
            "one 4 KB change visible on standby": fmt(incr),
            "cpus": os.cpu_count(),
        }
        for key, value in result.items():
            print(f"{key:36} {value}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
