"""Simulation benchmark: one hour of virtual time of a 2-node group at 20 ms adverts.

Every heartbeat goes through the real path: ``Node`` builds it, ``encode`` signs it
(HMAC-SHA256), ``NodeCluster`` delivers it, ``decode`` checks the tag and parses it and
the receiving ``Node`` processes it. The figure printed is wall time of the whole
simulation (both nodes' sending, receiving and timer handling, plus the simulator's
own scheduling) divided by the number of heartbeats received, so it is an upper bound
for the core's cost per heartbeat. Time is this process's CPU time
(``time.process_time``), so other load on the machine does not inflate it; wall time
is printed too.

Goal: under 50 µs, so a supervisor at 20 ms adverts (50 heartbeats/s in, 50 out) uses
well under 1 % of a core.

    .venv/bin/python bench/sim_heartbeat.py [--runs 5] [--virtual-seconds 3600]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from hasup.testing import NodeCluster


def one_run(virtual_seconds: float, advert: float) -> tuple[float, float, int]:
    cluster = NodeCluster([("a", 100), ("b", 90)], advert_interval=advert, delay=0.0005)
    cluster.start()
    cluster.run_until_true(lambda: cluster.masters() == ["a"], timeout=10)
    before = sum(cluster.node(n).statistics().get("received", 0) for n in ("a", "b"))
    w0, t0 = time.perf_counter(), time.process_time()
    cluster.advance(virtual_seconds)
    cpu, wall = time.process_time() - t0, time.perf_counter() - w0
    received = sum(cluster.node(n).statistics().get("received", 0) for n in ("a", "b")) - before
    assert cluster.masters() == ["a"], cluster.states()
    assert all(not k.startswith("dropped_") for n in ("a", "b") for k in cluster.node(n).statistics())
    return cpu, wall, received


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--virtual-seconds", type=float, default=3600.0)
    parser.add_argument("--advert", type=float, default=0.02)
    parser.add_argument("--goal-us", type=float, default=50.0)
    args = parser.parse_args(argv)
    per_heartbeat = []
    for i in range(args.runs):
        cpu, wall, received = one_run(args.virtual_seconds, args.advert)
        us = cpu / received * 1e6
        per_heartbeat.append(us)
        print(
            f"run {i + 1}: {received} heartbeats in {cpu:.2f} s CPU ({wall:.2f} s wall) = {us:.1f} µs/heartbeat",
            flush=True,
        )
    median = statistics.median(per_heartbeat)
    cpu = median * 1e-6 * 2 / args.advert * 100  # one in and one out per advert per peer
    print(
        f"median of {args.runs} runs: {median:.1f} µs per heartbeat processed "
        f"(goal < {args.goal_us:.0f} µs; ≈ {cpu:.2f} % of a core for a pair at {args.advert * 1000:.0f} ms)"
    )
    return 0 if median < args.goal_us else 1


if __name__ == "__main__":
    sys.exit(main())
