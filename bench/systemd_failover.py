#!/usr/bin/env python3
"""Two-node failover on a unit crash, end to end, against a real systemd.

Run as root from the repository root::

    .venv/bin/python bench/systemd_failover.py [--runs 10] [--adverts 1s,100ms]

Boots tests/fixtures/systemd (own systemd + system bus in namespaces) with the units of
tests/backends/systemd/test_failover.py: ``neuronex-a.service`` and
``neuronex-b.service``, ``python3 -m http.server`` on two loopback ports standing in
for NeuronEX (Type=simple, Restart=no). For each advert interval and run, it starts two
``python -m hasup run`` processes on loopback (edge-a priority 100 on neuronex-a,
edge-b priority 90 on neuronex-b; fresh state directories, so every run starts from
fault level 0), waits for the steady state (edge-a MASTER and serving, edge-b
BACKUP), waits a random 0..advert, then kill -9s neuronex-a's main process and
measures the time until neuronex-b answers HTTP 200 (polled every 2 ms). Then it
SIGTERMs both supervisors and stops both units.

The baseline row is the stand-in's own start: the systemd backend's ``start()`` of
neuronex-b until it answers, without hasup's supervisor, so the failover figures can be
read as "hasup's part" + "the service's own start-up".
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hasup._duration import parse_duration  # noqa: E402
from hasup.backends.systemd import SystemdBackend  # noqa: E402
from tests.backends.systemd.conftest import (  # noqa: E402
    NEURONEX_UNITS,
    HasupProcess,
    SystemdInstance,
    SystemdUnavailable,
    answers,
    hasup_pair,
    stop_pair,
    systemd_booted,
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def wait_for(predicate: Callable[[], object], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.01)


def one_run(instance: SystemdInstance, workdir: Path, advert: str) -> tuple[float, float | None]:
    a, b = hasup_pair(instance, workdir, advert=advert, fault_holddown="5s")
    try:
        a.start()
        b.start()
        wait_for(
            lambda: a.state() == "MASTER" and b.state() == "BACKUP" and a.answers(),
            timeout=60,
            what="edge-a MASTER and serving, edge-b BACKUP",
        )
        if b.answers() or b.unit_pids():
            raise RuntimeError("edge-b's unit runs in the steady state")
        time.sleep(random.uniform(0, parse_duration(advert)))  # any phase of the heartbeats
        (pid,) = a.unit_pids()
        began, wall = time.perf_counter(), time.time()
        os.kill(pid, signal.SIGKILL)
        poll_until_answers(b.port)
        served = time.perf_counter() - began
        return served, start_called(b, wall)
    except BaseException:
        dump_logs((a, b))
        raise
    finally:
        stop_pair(instance, (a, b))


def start_called(node: HasupProcess, since: float) -> float | None:
    """Seconds from ``since`` (wall clock) to the node's first "start service" log line after it."""
    day = datetime.fromtimestamp(since)
    for line in node.log.read_text(errors="replace").splitlines():
        stamp, _, rest = line.partition(" INFO ")
        if not rest.startswith("start service:"):
            continue
        try:
            clock = datetime.strptime(stamp, "%H:%M:%S.%f")
        except ValueError:
            continue
        at = datetime.combine(day.date(), clock.time()).timestamp()
        if at >= since - 0.001:
            return at - since
    return None


def dump_logs(nodes: tuple[HasupProcess, ...]) -> None:
    for node in nodes:
        log(f"--- {node.name} log ---\n{node.tail()}")


def poll_until_answers(port: int, timeout: float = 30) -> None:
    deadline = time.perf_counter() + timeout
    while not answers(port):
        if time.perf_counter() > deadline:
            raise TimeoutError(f"port {port} did not answer within {timeout:g} s")
        time.sleep(0.002)


async def baseline(instance: SystemdInstance, runs: int) -> list[float]:
    unit = NEURONEX_UNITS[1]
    port = instance.neuronex_ports[unit]
    samples = []
    async with SystemdBackend(unit, bus=instance.bus) as backend:
        await backend.stop()
        for _ in range(runs):
            began = time.perf_counter()
            await backend.start()
            await anyio.to_thread.run_sync(poll_until_answers, port)
            samples.append(time.perf_counter() - began)
            await backend.stop()
    return samples


def row(label: str, samples: list[float]) -> str:
    ms = [s * 1000 for s in samples]
    return f"| {label} | {len(ms)} | {statistics.median(ms):.0f} | {min(ms):.0f} | {max(ms):.0f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--adverts", default="1s,100ms", help="comma-separated advert intervals")
    args = parser.parse_args()
    adverts = [a.strip() for a in args.adverts.split(",") if a.strip()]
    results: dict[str, list[float]] = {}
    with ExitStack() as stack:
        try:
            instance = stack.enter_context(systemd_booted(prefix="hasup-bench-failover-"))
        except SystemdUnavailable as exc:
            sys.exit(f"cannot boot the systemd fixture: {exc}")
        work = Path(instance.dir) / "bench"
        for advert in adverts:
            samples = results.setdefault(advert, [])
            decided = results.setdefault(f"{advert} start", [])
            for run in range(args.runs):
                latency, start = one_run(instance, work / f"{advert}-{run}", advert)
                samples.append(latency)
                if start is not None:
                    decided.append(start)
                at = f"{start * 1e3:.0f} ms" if start is not None else "?"
                log(f"advert {advert} run {run + 1}: crash -> serving {latency * 1e3:.1f} ms, start at {at}")
        base = anyio.run(baseline, instance, args.runs)
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("\n| kill -9 of the master's unit → backup's unit answers HTTP (ms) | runs | median | min | max |")
    print("|---|---:|---:|---:|---:|")
    for advert in adverts:
        print(row(f"advert {advert}", results[advert]))
    for advert in adverts:
        if results[f"{advert} start"]:
            print(row(f"advert {advert}: crash → edge-b's `start service` log line", results[f"{advert} start"]))
    print(row("baseline: backend `start()` of the stand-in → answers (no failover)", base))


if __name__ == "__main__":
    main()
