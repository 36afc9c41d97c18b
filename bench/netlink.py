#!/usr/bin/env python3
"""hasup's rtnetlink module against pyroute2: import time, address add+delete, RSS.

    sudo .venv/bin/python bench/netlink.py [--runs 5] [--pyroute2-python /path/to/python]

Each run is a fresh interpreter that imports the library, adds 198.51.100.91/32 to
``lo`` and deletes it, and reports the times and its max RSS. pyroute2 is not a
dependency of hasup: point ``--pyroute2-python`` at an interpreter that has it
(``python3 -m venv /tmp/pr2 && /tmp/pr2/bin/pip install pyroute2``); without it only
hasup's figures are printed. Medians over ``--runs``; the ratio is pyroute2 / hasup.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

RTNL = Path(__file__).resolve().parents[1] / "hasup" / "_rtnl.py"

_HASUP = r"""
import importlib.util, ipaddress, json, resource, sys, time
t0 = time.perf_counter()
spec = importlib.util.spec_from_file_location("rtnl", sys.argv[1])
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
t1 = time.perf_counter()
i = ipaddress.ip_interface("198.51.100.91/32")
m.add_address(i, "lo"); m.delete_address(i, "lo")
t2 = time.perf_counter()
print(json.dumps([t1 - t0, t2 - t1, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024]))
"""

_PYROUTE2 = r"""
import json, resource, time
t0 = time.perf_counter()
from pyroute2 import IPRoute
t1 = time.perf_counter()
ip = IPRoute()
idx = ip.link_lookup(ifname="lo")[0]
ip.addr("add", index=idx, address="198.51.100.91", mask=32)
ip.addr("del", index=idx, address="198.51.100.91", mask=32)
ip.close()
t2 = time.perf_counter()
print(json.dumps([t1 - t0, t2 - t1, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024]))
"""


def measure(argv: list[str], runs: int) -> list[float]:
    rows = [json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout) for _ in range(runs)]
    return [statistics.median(col) for col in zip(*rows, strict=True)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--pyroute2-python")
    args = p.parse_args()
    rows = {"hasup/_rtnl.py": measure([sys.executable, "-c", _HASUP, str(RTNL)], args.runs)}
    if args.pyroute2_python:
        rows["pyroute2"] = measure([args.pyroute2_python, "-c", _PYROUTE2], args.runs)
    print(f"| library | import (s) | add + delete (ms) | max RSS (MB) |  (median of {args.runs})")
    print("|---|---|---|---|")
    for name, (imp, op, rss) in rows.items():
        print(f"| {name} | {imp:.3f} | {op * 1000:.2f} | {rss:.1f} |")
    if "pyroute2" in rows:
        h, r = rows["hasup/_rtnl.py"], rows["pyroute2"]
        print(f"| ratio pyroute2 / hasup | {r[0] / h[0]:.1f} | {r[1] / h[1]:.1f} | {r[2] / h[2]:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
