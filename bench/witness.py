#!/usr/bin/env python3
"""Witness benchmark: a hasup pair with ``hasup witness`` on a third node (issue 16).

    sudo .venv/bin/python bench/witness.py --runs 10 --out docs/benchmarks-witness.md

Three namespaces behind one bridge (tests/cluster/testbed.py): hasup on n1 (priority
100) and n2 (90), ``hasup witness`` on n3; a sampler in n1 and n2 polls each node's own
stand-in service every 10 ms (tests/cluster/observer.py). Each run starts from the
steady state (n1 MASTER, serving, holding the witness's vote) and injects one fault for
8 s (tests/cluster/witness_node.py). Every run starts from a fresh pair (state wiped,
so the fault damping of one run does not carry into the next); the witness keeps running:

* ``split``: the link between n1 and n2 is cut (iptables, both ways); both reach n3;
* ``isolate``: n1 is cut from n2 and from n3;
* ``witness-down-nodeloss``: the witness is killed; 2 s later n1 dies (kill -9 of hasup
  and of its service); after 8 s the witness starts again;
* ``witness-restart``: n1|n2 cut; 2 s in, the witness is killed and started again.

Reported per scenario: dual-active (s, both services answering in the same 10 ms
sample window), outage (s without any answering service since the fault), and the
time from the heal (witness restart for the node-loss case) until the final holder is
the sole server. Cells are median [min-max] over the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.cluster.hasup_node import HasupCluster, hasup_runner_unavailable  # noqa: E402
from tests.cluster.observer import Observer  # noqa: E402
from tests.cluster.testbed import Testbed, netns_unavailable  # noqa: E402
from tests.cluster.witness_node import SCENARIOS, WitnessPair, run_scenario  # noqa: E402

METRICS = (("dual_s", "dual-active (s)"), ("outage_s", "outage (s)"), ("recover_s", "recovered after the heal (s)"))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cell(values: list[float]) -> str:
    if not values:
        return "—"
    return f"{statistics.median(values):.3f} [{min(values):.3f}\u2013{max(values):.3f}]"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--advert", default="1s")
    p.add_argument("--max-lease", default="10s")
    p.add_argument("--out", type=Path)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    scenarios = [s for s in args.scenarios.split(",") if s]
    for s in scenarios:
        if s not in SCENARIOS:
            p.error(f"unknown scenario {s!r}")
    for why in (netns_unavailable(), hasup_runner_unavailable()):
        if why is not None:
            print(f"cannot run: {why}", file=sys.stderr)
            return 2
    results: dict[str, dict[str, list[float]]] = {s: {m: [] for m, _ in METRICS} for s in scenarios}
    errors: list[str] = []
    with Testbed(3) as bed:
        pair = WitnessPair(bed, advert_interval=args.advert, max_lease=args.max_lease)
        with Observer(bed, interval=0.01, nodes=bed.nodes[:2]) as obs:
            pair.start()
            try:
                for run in range(args.runs):
                    for s in scenarios:
                        # A fresh pair for every run (the witness keeps running): the
                        # fault damping of one run must not lengthen the next one's
                        # recovery (hasup's back-off after repeated faults).
                        HasupCluster.stop(pair)
                        pair.wipe_state()
                        pair.start()
                        try:
                            figures = run_scenario(s, pair, obs, steady_timeout=120)
                        except (TimeoutError, RuntimeError, AssertionError) as exc:
                            errors.append(f"run {run + 1} {s}: {exc}")
                            log(f"{s}: {exc}")
                            bed.heal()
                            pair.stop()
                            pair.wipe_state()
                            pair.start()
                            continue
                        for m, v in figures.items():
                            results[s][m].append(v)
                        log(f"run {run + 1} {s}: {json.dumps({k: round(v, 3) for k, v in figures.items()})}")
            finally:
                pair.stop()
    lines = [
        f"Command: `{' '.join(['python', 'bench/witness.py', *sys.argv[1:]])}`  ",
        f"Runs per cell: {args.runs}; advert {args.advert} (vote lease 4 adverts), witness --max-lease "
        f"{args.max_lease}; fault held 8 s; sampler period 10 ms; cells are median [min\u2013max].  ",
        f"Host: {os.uname().release}, {os.cpu_count()} CPUs.",
        "",
        "| scenario | " + " | ".join(t for _, t in METRICS) + " | runs with dual-active |",
        "|---|" + "---|" * (len(METRICS) + 1),
    ]
    for s in scenarios:
        dual_runs = sum(1 for v in results[s]["dual_s"] if v > 0)
        row = [s, *(cell(results[s][m]) for m, _ in METRICS), f"{dual_runs} of {len(results[s]['dual_s'])}"]
        lines.append("| " + " | ".join(row) + " |")
    if errors:
        lines += ["", "Errors:", *(f"- {e}" for e in errors)]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
