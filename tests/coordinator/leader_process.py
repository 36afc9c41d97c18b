"""A coordinator in its own process, for kill -9 tests.

    python -m tests.coordinator.leader_process ENDPOINTS PREFIX NAME TTL

Prints ``leader TOKEN`` once elected, then holds leadership until killed.
"""

from __future__ import annotations

import sys

import anyio

from hasup.coordinator.etcd import EtcdCoordinator


async def main(endpoints: str, prefix: str, name: str, ttl: str) -> None:
    async with EtcdCoordinator(endpoints.split(","), prefix, name, ttl=float(ttl)) as coordinator:
        token = await coordinator.campaign()
        print(f"leader {token}", flush=True)
        await coordinator.leader_lost.wait()
        print(f"lost {coordinator.lost_reason}", flush=True)


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:5])
