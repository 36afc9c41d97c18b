#!/usr/bin/env python3
"""Data sync benchmark: source and standby in two separate processes, over loopback or
between two network namespaces.

    .venv/bin/python bench/sync.py --runs 5 [--mb 200] [--dir /var/tmp] [--netns] [--idle 30]

* tree: ``--mb`` MB of mixed content — 3 SQLite databases in WAL mode (~20 % of the
  bytes), ~1500 small YAML/JSON files (compressible), a few binary blobs (incompressible);
* ``initial``: a standby with no copy pulls the whole tree (handshake, manifest, transfer,
  staging, fsync, swap) — MB/s over the tree size;
* ``scan``: the source's first full scan (hashing + SQLite backup images);
* ``incremental``: with the standby following (long poll), one 4 KB file is rewritten on
  the source; time until the new content is visible on the standby (watch → new generation
  → transfer → atomic swap). The write and the check run in the standby's process (the two
  processes share the filesystem), so both ends of the interval are read from one clock.
* ``--netns`` (root): the source runs in one network namespace and the standby in another,
  joined by a veth pair (10.99.X.1/24 ↔ 10.99.X.2/24, names unique to this run, deleted
  on exit); without it both talk over 127.0.0.1.
* ``--idle SECONDS``: after the last incremental run, with the standby still following
  (long poll, as in production), nothing changes for SECONDS; the CPU time of the serving
  process (every thread: watcher, rescan timer, server) over that window, from
  ``/proc/PID/task/*/schedstat`` sampled every 0.5 s (threads that exit in the window keep
  their last sample), as a percentage of one CPU. The source's backstop full scan runs
  every ``interval`` = 30 s, so a 30 s window includes one.

Each figure is the median of ``--runs`` runs (min and max shown).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio

from hasup.sync import SyncEngine, SyncSettings

KEY = bytes(range(32))
INTERVAL = 30.0  # the source's backstop full scan (the configuration default)


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


def engine(root: Path, state: Path, name: str, host: str = "127.0.0.1") -> SyncEngine:
    settings = SyncSettings(path=str(root), listen=(host, 0), interval=INTERVAL, id="data")
    return SyncEngine(settings, group_keys=[KEY], node_name=name, state_dir=state)


# -- the two processes ---------------------------------------------------------------------
async def serve_main(root: str, state: str, host: str) -> None:
    eng = engine(Path(root), Path(state), "source", host)
    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        _, port = await tg.start(eng.serve)
        print(f"LISTEN {os.getpid()} {port} {time.perf_counter() - t0:.3f}", flush=True)


async def standby_main(src: str, dst: str, state: str, host: str, port: str, runs: str, hold: str) -> None:
    """Initial pull, then ``runs`` incremental measurements, then (``hold``) keep following
    until terminated. Reports one JSON line per phase."""
    peer = (host, int(port))
    eng = engine(Path(dst), Path(state), "standby")
    t0 = time.perf_counter()
    await eng.pull(peer)
    print(json.dumps({"initial": time.perf_counter() - t0, "pid": os.getpid()}), flush=True)
    if int(runs) <= 0:
        return
    target_src = Path(src) / "neuron" / "small.json"
    target_dst = Path(dst) / "neuron" / "small.json"
    out = []
    async with anyio.create_task_group() as tg:
        await tg.start(eng.follow, peer)
        for i in range(int(runs)):
            await anyio.sleep(0.3)  # let the follower settle into its long poll (not a sync point)
            content = (f'{{"run": {i}}}'.encode() + b" " * 4096)[:4096]
            t0 = time.perf_counter()
            target_src.write_bytes(content)
            with anyio.fail_after(30):
                # measuring when the bytes are visible on disk, so poll the file itself
                while target_dst.read_bytes() != content:
                    await anyio.sleep(0.002)
            out.append(time.perf_counter() - t0)
        print(json.dumps({"incremental": out}), flush=True)
        if hold == "0":
            tg.cancel_scope.cancel()


# -- orchestration ---------------------------------------------------------------------------
@contextmanager
def namespaces() -> Iterator[tuple[str, str, str, str]]:
    """Two network namespaces joined by a veth pair; yields (ns_source, ns_standby,
    source_ip, standby_ip). Everything is deleted on exit."""
    if os.geteuid() != 0:
        sys.exit("--netns needs root (ip netns add)")
    tag = f"{os.getpid() % 100000}"
    ns_a, ns_b = f"hasup-bench-{tag}-a", f"hasup-bench-{tag}-b"
    veth_a, veth_b = f"hsb{tag}a", f"hsb{tag}b"  # <= 15 characters
    subnet = os.getpid() % 254 + 1
    ip_a, ip_b = f"10.99.{subnet}.1", f"10.99.{subnet}.2"

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True)

    try:
        ip("netns", "add", ns_a)
        ip("netns", "add", ns_b)
        ip("link", "add", veth_a, "type", "veth", "peer", "name", veth_b)
        ip("link", "set", veth_a, "netns", ns_a)
        ip("link", "set", veth_b, "netns", ns_b)
        for ns, dev, addr in ((ns_a, veth_a, ip_a), (ns_b, veth_b, ip_b)):
            ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        yield ns_a, ns_b, ip_a, ip_b
    finally:
        for ns in (ns_a, ns_b):
            subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL, check=False)
        # only left in the root namespace if the setup failed before the move
        subprocess.run(["ip", "link", "del", veth_a], stderr=subprocess.DEVNULL, check=False)


def spawn(ns: str | None, *args: str) -> subprocess.Popen[str]:
    prefix = ["ip", "netns", "exec", ns] if ns else []
    return subprocess.Popen([*prefix, sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True)


def stop(proc: subprocess.Popen[str] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def read_json(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"standby exited ({proc.wait()}) without a result")
    return json.loads(line)


def task_cpu_ns(pid: int) -> dict[int, int]:
    """CPU time (ns, first field of schedstat) of every thread of ``pid``."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):  # the thread exited
            out[int(task.name)] = int((task / "schedstat").read_text().split()[0])
    return out


def idle_cpu(pid: int, seconds: float) -> tuple[float, float, int]:
    """CPU % of one CPU used by ``pid`` over ``seconds`` (schedstat, per thread), the same
    from /proc/PID/stat utime+stime (clock ticks; includes exited threads), and the
    largest thread count seen."""
    tick = os.sysconf("SC_CLK_TCK")

    def stat_ticks() -> int:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime, stime

    first = task_cpu_ns(pid)
    last = dict(first)
    threads = len(first)
    ticks0 = stat_ticks()
    t0 = time.monotonic()
    while (left := t0 + seconds - time.monotonic()) > 0:
        time.sleep(min(0.5, left))
        now = task_cpu_ns(pid)
        last.update(now)
        threads = max(threads, len(now))
    wall = time.monotonic() - t0
    used = sum(ns - first.get(tid, 0) for tid, ns in last.items())
    ticks = stat_ticks() - ticks0
    return 100 * used / 1e9 / wall, 100 * ticks / tick / wall, threads


def fmt(values: list[float], unit: str = "s") -> str:
    return f"{statistics.median(values):.3f} {unit} (min {min(values):.3f}, max {max(values):.3f})"


def bench(args: argparse.Namespace, work: Path, ns_a: str | None, ns_b: str | None, ip_a: str, ip_b: str) -> None:
    src = work / "a" / "data"
    src.mkdir(parents=True)
    build_tree(src, args.mb)
    size = tree_bytes(src)
    scans: list[float] = []
    initial: list[float] = []
    incr: list[float] = []
    idle: tuple[float, float, int] | None = None
    for run in range(args.runs):
        shutil.rmtree(work / "state-a", ignore_errors=True)
        last = run == args.runs - 1
        server = standby = None
        try:
            server = spawn(ns_a, "--serve", str(src), str(work / "state-a"), ip_a)
            assert server.stdout is not None
            _, pid, port, scan = server.stdout.readline().split()
            scans.append(float(scan))
            dst = work / f"b{run}" / "data"
            hold = "1" if last and args.idle else "0"
            standby = spawn(
                ns_b,
                "--standby",
                str(src),
                str(dst),
                str(work / f"state-b{run}"),
                ip_a,
                port,
                str(args.runs if last else 0),
                hold,
            )
            initial.append(read_json(standby)["initial"])
            if last:
                incr = read_json(standby)["incremental"]
                if args.idle:
                    time.sleep(3)  # let the last incremental sync's work finish
                    idle = idle_cpu(int(pid), args.idle)
            else:
                standby.wait(60)
        finally:
            stop(standby)
            stop(server)
        shutil.rmtree(work / f"b{run}")
        shutil.rmtree(work / f"state-b{run}", ignore_errors=True)
    mb = size / 1e6
    rates = [mb / t for t in initial]
    result: dict[str, Any] = {
        "network": f"veth between netns {ns_a} ({ip_a}) and {ns_b} ({ip_b})" if ns_a else "loopback 127.0.0.1",
        "tree": f"{mb:.0f} MB, {sum(1 for _ in src.rglob('*'))} entries, 3 SQLite DBs",
        "source first scan": fmt(scans),
        "initial sync": fmt(initial),
        "initial throughput": f"{statistics.median(rates):.0f} MB/s (min {min(rates):.0f}, max {max(rates):.0f})",
        "one 4 KB change visible on standby": fmt(incr),
    }
    if idle is not None:
        result["source idle CPU"] = (
            f"{idle[0]:.3f} % of one CPU over {args.idle:.0f} s (schedstat; /proc/PID/stat: {idle[1]:.3f} %),"
            f" {idle[2]} threads, standby following, backstop scan every {INTERVAL:.0f} s"
        )
    result["cpus"] = os.cpu_count()
    result["load average"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    for key, value in result.items():
        print(f"{key:36} {value}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--netns", action="store_true", help="source and standby in two network namespaces (root)")
    parser.add_argument("--idle", type=float, default=0, metavar="SECONDS", help="measure the source's idle CPU")
    parser.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--standby", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        anyio.run(serve_main, *args.serve)
        return
    if args.standby:
        anyio.run(standby_main, *args.standby)
        return
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    work = Path(tempfile.mkdtemp(prefix="hasup-bench-sync-", dir=args.dir))
    try:
        if args.netns:
            with namespaces() as (ns_a, ns_b, ip_a, ip_b):
                bench(args, work, ns_a, ns_b, ip_a, ip_b)
        else:
            bench(args, work, None, None, "127.0.0.1", "127.0.0.1")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
