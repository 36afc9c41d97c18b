"""Latency of the systemd backend against a real, throw-away systemd.

Run as root from the repository root::

    .venv/bin/python bench/systemd_backend.py [--runs 25] [--backend asyncio|trio]

Boots tests/fixtures/systemd (own systemd + system bus in namespaces), installs one
small HTTP unit, and measures the median (and p90) over ``--runs`` runs of:

* ``start()`` until it returns (the unit is active), and ``stop()`` until confirmed;
* ``kill -9`` of the unit's main process until ``watch()`` yields FAILED;
* ``systemctl start`` / ``systemctl stop`` of the same unit for comparison (run inside
  the instance with ``nsenter``, so they include two process spawns: see the
  ``nsenter true`` row).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import aclosing
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hasup.backends.systemd import SystemdBackend  # noqa: E402
from hasup.protocol._enums import ServiceStatus  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "systemd"
UNIT = "hasup-bench.service"
MANAGER = ("org.freedesktop.systemd1", "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def summary(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1000, p90 * 1000


async def measure(bus: str, cgroup: Path, init_pid: int, runs: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {k: [] for k in ("start", "stop", "crash", "sc_start", "sc_stop", "spawn")}
    procs = cgroup / "system.slice" / UNIT / "cgroup.procs"

    def timed_run(argv: list[str]) -> float:
        began = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        return time.perf_counter() - began

    systemctl = ["nsenter", "-t", str(init_pid), "-m", "-p", "systemctl"]
    async with SystemdBackend(UNIT, bus=bus) as backend:
        await backend.stop()
        for _ in range(runs):
            began = time.perf_counter()
            await backend.start()
            results["start"].append(time.perf_counter() - began)
            began = time.perf_counter()
            await backend.stop()
            results["stop"].append(time.perf_counter() - began)
        for _ in range(runs):
            # blocking subprocess on purpose: a benchmark, nothing else runs meanwhile
            results["sc_start"].append(timed_run([*systemctl, "start", UNIT]))
            results["sc_stop"].append(timed_run([*systemctl, "stop", UNIT]))
            results["spawn"].append(timed_run(["nsenter", "-t", str(init_pid), "-m", "-p", "true"]))
        for _ in range(runs):
            await backend.start()
            async with aclosing(backend.watch()) as watch:
                async for status in watch:
                    if status is ServiceStatus.RUNNING:
                        break
                pid = int(procs.read_text().split()[0])
                began = time.perf_counter()
                os.kill(pid, signal.SIGKILL)
                with anyio.fail_after(5):
                    async for status in watch:
                        if status is ServiceStatus.FAILED:
                            results["crash"].append(time.perf_counter() - began)
                            break
            await backend.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=25)
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: the systemd fixture needs namespaces, mounts and cgroups")
    root = Path(tempfile.mkdtemp(prefix="hasup-bench-systemd-"))
    try:
        subprocess.run([str(FIXTURES / "setup.sh"), str(root), str(free_port())], check=True, capture_output=True)
        (root / "units" / UNIT).write_text(
            "[Service]\nType=simple\n"
            f"ExecStart=/usr/bin/python3 -m http.server --bind 127.0.0.1 {free_port()} --directory /\n"
        )
        bus = f"unix:path={root}/bus/system_bus_socket"
        env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": bus}
        subprocess.run(
            ["busctl", "--system", "call", *MANAGER, "Reload"],
            env=env,
            check=True,
            capture_output=True,
        )
        cgroup = Path((root / "cgroup").read_text().strip())
        init_pid = int((root / "init.pid").read_text())
        results = anyio.run(measure, bus, cgroup, init_pid, args.runs, backend=args.backend)
    finally:
        subprocess.run([str(FIXTURES / "teardown.sh"), str(root)], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)

    rows: list[tuple[str, str]] = [
        ("start", "backend start() → returns, unit active"),
        ("sc_start", "systemctl start (nsenter + exec included)"),
        ("stop", "backend stop() → returns, confirmed inactive"),
        ("sc_stop", "systemctl stop (nsenter + exec included)"),
        ("spawn", "nsenter true (process spawn baseline)"),
        ("crash", "kill -9 main PID → watch() yields FAILED"),
    ]
    label: Callable[[str], str] = lambda key: dict(rows)[key]  # noqa: E731
    print(f"systemd backend, {args.backend}, {args.runs} runs each (ms)\n")
    print(f"| {'measurement':<46} | median |   p90 |")
    print(f"|{'-' * 48}|-------:|------:|")
    for key, _ in rows:
        median, p90 = summary(results[key])
        print(f"| {label(key):<46} | {median:6.1f} | {p90:5.1f} |")


if __name__ == "__main__":
    main()
