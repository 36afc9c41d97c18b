#!/usr/bin/env python3
"""The Python floor of a heartbeat loop: what any Python supervisor must at least pay.

A raw asyncio ``DatagramProtocol`` plus ``loop.call_later``: every ``interval`` it
sends a 42-byte datagram (a sequence number and a truncated HMAC-SHA256 tag over it)
to its peer, and checks the tag of every datagram it receives. No election, no
probes, no state: ``bench/idle.py`` runs a pair of these beside keepalived and hasup
and reports hasup's idle CPU as a ratio to this loop's.

    python bench/floor_heartbeat.py --listen 10.77.0.1:5406 --peer 10.77.0.2:5406 --interval 0.1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import struct
import sys

KEY = hashlib.sha256(b"floor v1").digest()
_HDR = struct.Struct("!4sQ")  # magic, sequence number: 12 bytes + 30 bytes of tag = 42


def split(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


class Heartbeats(asyncio.DatagramProtocol):
    def __init__(self, peer: tuple[str, int], interval: float) -> None:
        self.peer, self.interval, self.seq, self.accepted, self.rejected = peer, interval, 0, 0, 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a _SelectorDatagramTransport
        self.tick()

    def tick(self) -> None:
        assert self.transport is not None
        self.seq += 1
        head = _HDR.pack(b"HSFL", self.seq)
        self.transport.sendto(head + hmac.digest(KEY, head, "sha256")[:30], self.peer)
        asyncio.get_running_loop().call_later(self.interval, self.tick)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        head, tag = data[:12], data[12:]
        if len(data) == 42 and hmac.compare_digest(tag, hmac.digest(KEY, head, "sha256")[:30]):
            self.accepted += 1
        else:
            self.rejected += 1


async def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", required=True)
    p.add_argument("--peer", required=True)
    p.add_argument("--interval", type=float, default=1.0)
    args = p.parse_args(argv)
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(
        lambda: Heartbeats(split(args.peer), args.interval), local_addr=split(args.listen)
    )
    await asyncio.Event().wait()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(sys.argv[1:]))
