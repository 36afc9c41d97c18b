#!/usr/bin/env python3
"""Idle cost: hasup against keepalived and against the Python floor, same testbed, same run.

    sudo .venv/bin/python bench/idle.py --runs 5 --secs 30 --out /tmp/idle.md

Two node namespaces behind a bridge (tests/cluster/testbed.py). For every
implementation, every run starts the pair from scratch, waits for the steady state
(preferred node MASTER and serving, the other BACKUP), stops the samplers, lets it
settle for 2 s and then reads, per node, the CPU time of the supervisor's processes
from ``/proc/PID/task/*/schedstat`` over ``--secs`` seconds (plus reaped children,
e.g. keepalived's ``curl`` checks, from ``/proc/PID/stat``) and its RSS.

Implementations (each at the advert intervals it supports):

* ``floor``: two ``bench/floor_heartbeat.py`` processes, a raw asyncio
  ``DatagramProtocol`` exchanging HMAC-tagged heartbeats with ``call_later``: what any
  Python supervisor pays at least. No election, no probe, no service.
* ``keepalived``: the NeuronEX recipe (advert 1 s, ``curl`` check every 5 s, VRRPv2) and
  the tuned variant (VRRPv3, advert 100 ms), tests/cluster/keepalived.py; other
  intervals have no keepalived column.
* ``hasup``: ``python -m hasup run`` with the command backend running the same
  stand-in service and one http probe of it every 5 s (``when = "active"``, the
  README's NeuronEX example), tests/cluster/hasup_node.py.

The table gives medians over the runs, and the ratios hasup / floor and hasup /
keepalived at the same advert interval.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from failover import ensure_steady, log, measure_idle, wait

from tests.cluster.hasup_node import HasupCluster, hasup_runner_unavailable
from tests.cluster.keepalived import KeepalivedPair, ensure_keepalived, keepalived_unavailable
from tests.cluster.observer import Observer
from tests.cluster.testbed import Node, Testbed, netns_unavailable

FLOOR = Path(__file__).resolve().parent / "floor_heartbeat.py"
FLOOR_PORT = 5406
#: keepalived variants by advert interval (the recipe, and the tuned VRRPv3 one)
KEEPALIVED = {"1s": "recipe", "100ms": "tuned"}


def seconds(advert: str) -> float:
    return float(advert[:-2]) / 1000 if advert.endswith("ms") else float(advert.rstrip("s"))


class FloorPair:
    """The floor loop on both nodes (same surface as the clusters, minus the service)."""

    def __init__(self, bed: Testbed, advert: str) -> None:
        self.bed, self.advert = bed, advert
        self.nodes = list(bed.nodes)
        self.master, self.backup = self.nodes[0], self.nodes[1]

    def start(self) -> None:
        a, b = self.master, self.backup
        for node, peer in ((a, b), (b, a)):
            node.spawn(
                "floor",
                [
                    sys.executable,
                    str(FLOOR),
                    "--listen",
                    f"{node.addr}:{FLOOR_PORT}",
                    "--peer",
                    f"{peer.addr}:{FLOOR_PORT}",
                    "--interval",
                    str(seconds(self.advert)),
                ],
            )

    def stop(self) -> None:
        for node in self.nodes:
            if node.procs.get("floor") is not None and node.procs["floor"].alive():
                node.kill("floor")
                node.wait_exit("floor")

    def idle_pids(self, node: Node) -> list[int]:
        return [node.procs["floor"].pid]


class ProbedHasup(HasupCluster):
    """hasup with the README's NeuronEX probe: http://<own address>:8085/ every 5 s."""

    def sections(self, node: Node) -> dict[str, Any]:
        sections: dict[str, Any] = super().sections(node)
        sections["probe"] = [
            {"name": "dashboard", "type": "http", "url": f"http://{node.addr}:8085/", "expect_status": "200-399"}
        ]
        return sections


def _hasup(bed: Testbed, advert: str) -> HasupCluster:
    return ProbedHasup(bed, advert_interval=advert, tag=f"idle-hasup-{advert}")


def one_run(key: str, advert: str, bed: Testbed, obs: Observer, secs: float) -> dict[str, dict[str, float]]:
    impl: Any
    if key == "floor":
        impl = FloorPair(bed, advert)
        impl.start()
        wait(lambda: all(n.procs["floor"].alive() for n in impl.nodes), 10, "floor loops")
    else:
        impl = KeepalivedPair(bed, KEEPALIVED[advert]) if key == "keepalived" else _hasup(bed, advert)
        impl.stop()
        if hasattr(impl, "wipe_state"):
            impl.wipe_state()
        impl.start()
        ensure_steady(impl, obs)
    try:
        obs.stop()
        time.sleep(2.0)  # settle: no start-up work inside the window
        return measure_idle(impl, [impl.master, impl.backup], secs)
    finally:
        impl.stop()
        obs.start()


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(results: dict[tuple[str, str], list[dict[str, dict[str, float]]]], args: argparse.Namespace) -> str:
    def cell(key: str, advert: str, role: int, field: str) -> float:
        runs = results.get((key, advert), [])
        vals = []
        for r in runs:
            names = sorted(r)
            vals.append(r[names[role]][field])
        return median(vals)

    lines = [
        f"Command: `python bench/idle.py --runs {args.runs} --secs {args.secs:g}"
        f" --adverts {args.adverts} --impls {args.impls}`  ",
        f"Host: {os.uname().release}, {os.cpu_count()} CPUs; medians of {args.runs} runs of {args.secs:g} s each.",
        "",
        "| advert | node | floor CPU % | keepalived CPU % (+curl) | hasup CPU % | hasup / floor"
        " | hasup / keepalived (+curl) | RSS MB floor / keepalived / hasup |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for advert in args.adverts.split(","):
        for role, label in ((0, "master"), (1, "backup")):
            fl = cell("floor", advert, role, "cpu_pct")
            ka = cell("keepalived", advert, role, "cpu_pct")
            kac = cell("keepalived", advert, role, "cpu_pct_children")
            hs = cell("hasup", advert, role, "cpu_pct")
            rss = [cell(k, advert, role, "rss_kb") / 1024 for k in ("floor", "keepalived", "hasup")]
            lines.append(
                f"| {advert} | {label} | {fl:.3f} | {ka:.3f} ({kac:.3f}) | {hs:.3f} | {hs / fl:.2f}"
                f" | {hs / ka:.1f} ({hs / kac:.2f}) | {rss[0]:.1f} / {rss[1]:.1f} / {rss[2]:.1f} |"
            )
    return "\n".join(lines).replace("nan", "—")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--secs", type=float, default=20.0, help="measuring window per run")
    p.add_argument("--adverts", default="1s,100ms,20ms")
    p.add_argument("--impls", default="floor,keepalived,hasup")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if (why := netns_unavailable()) is not None:
        print(f"network namespaces unavailable: {why}", file=sys.stderr)
        return 2
    impls = args.impls.split(",")
    if "keepalived" in impls:
        ensure_keepalived()
        if (why := keepalived_unavailable()) is not None:
            print(f"keepalived unavailable: {why}", file=sys.stderr)
            return 2
    if "hasup" in impls and (why := hasup_runner_unavailable()) is not None:
        print(f"hasup unavailable: {why}", file=sys.stderr)
        return 2
    results: dict[tuple[str, str], list[dict[str, dict[str, float]]]] = {}
    with contextlib.ExitStack() as stack:
        bed = stack.enter_context(Testbed(2))
        obs = stack.enter_context(Observer(bed, interval=0.01))
        for run in range(args.runs):
            for advert in args.adverts.split(","):
                for key in impls:
                    if key == "keepalived" and advert not in KEEPALIVED:
                        continue  # keepalived is measured as the recipe (1 s) and tuned (100 ms)
                    out = one_run(key, advert, bed, obs, args.secs)
                    results.setdefault((key, advert), []).append(out)
                    log(
                        f"run {run + 1} {key} {advert}: "
                        + ", ".join(
                            f"{n} {v['cpu_pct']:.3f}% {v['rss_kb'] / 1024:.1f} MB" for n, v in sorted(out.items())
                        )
                    )
    text = report(results, args)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
