"""``hasup witness``: the tie-breaking vote for pairs, as a small UDP server.

The decisions are :class:`hasup.protocol._witness.WitnessBook`'s (pure, tested on
virtual time); this module only binds the socket, reads the group keys, feeds each
datagram with ``now = anyio.current_time()`` and sends the reply back to its sender.
One witness serves any number of groups (one ``--group`` per group and key id). It
persists nothing: after a start it grants no vote for ``--max-lease`` (see
``docs/witness.md`` for why that is all it needs).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import signal
import socket
from collections.abc import Mapping
from typing import Any

import anyio
import anyio.abc

from ._addr import parse_address
from ._duration import parse_duration
from ._errors import ConfigError
from ._notify import SystemdNotifier
from ._section import Section, Source
from .config import read_key_file
from .protocol import KeyRing
from .protocol._witness import DEFAULT_WITNESS_PORT, WITNESS_LABEL, WitnessBook

__all__ = ["DEFAULT_WITNESS_PORT", "WitnessServer", "add_witness_parser", "parse_groups"]

log = logging.getLogger("hasup.witness")

_MAX_DATAGRAM = 2048
#: Groups one witness serves at most (each costs a few hundred bytes).
MAX_GROUPS = 1024


def parse_groups(specs: list[str]) -> dict[int, KeyRing]:
    """``["51:/etc/hasup/group.key", "52/2:/etc/hasup/other.key"]`` → witness keys per
    group (``ID[/KEYID]:KEYFILE``, key id 1 by default; the first key of a group is the
    one its nodes send with, others are accepted during a key rotation). Raises
    :class:`ConfigError` naming the bad argument."""
    section = Section({}, path="", source=Source("<command line>"))
    secrets: dict[int, dict[int, bytes]] = {}
    for spec in specs:
        head, sep, path = spec.partition(":")
        gid_text, _, kid_text = head.partition("/")
        try:
            gid = int(gid_text)
            kid = int(kid_text) if kid_text else 1
        except ValueError:
            gid = kid = -1
        if not sep or not path or not 0 <= gid < 2**32 or not 1 <= kid <= 255:
            raise ConfigError(f"--group {spec}: expected ID[/KEYID]:KEYFILE, e.g. 51:/etc/hasup/group.key")
        if kid in secrets.get(gid, {}):
            raise ConfigError(f"--group {spec}: group {gid} key id {kid} is given twice")
        try:
            secret = read_key_file(path, section=section, key="--group")
        except ConfigError as exc:
            raise ConfigError(f"--group {spec}: {exc.message}") from None
        secrets.setdefault(gid, {})[kid] = secret
    if not secrets:
        raise ConfigError("--group is required: ID:KEYFILE of each group this witness serves")
    if len(secrets) > MAX_GROUPS:
        raise ConfigError(f"--group: at most {MAX_GROUPS} groups per witness")
    return {gid: KeyRing.from_group_keys(keys, next(iter(keys)), label=WITNESS_LABEL) for gid, keys in secrets.items()}


class WitnessServer:
    """Serve ``book`` on ``sock`` until cancelled; log every change of vote holder."""

    def __init__(self, book: WitnessBook, sock: anyio.abc.UDPSocket) -> None:
        self.book = book
        self.sock = sock

    @property
    def port(self) -> int:
        return int(self.sock.extra(anyio.abc.SocketAttribute.local_port))

    async def serve(self) -> None:
        holders: dict[int, str] = {}
        while True:
            try:
                data, addr = await self.sock.receive()
            except OSError:
                continue  # an ICMP error surfaced on receive: not a datagram
            now = anyio.current_time()
            reply = self.book.handle(data[:_MAX_DATAGRAM], now)
            if reply is None:
                continue
            try:
                await self.sock.sendto(reply, addr[0], addr[1])
            except OSError as exc:
                self.book.stats["send_errors"] += 1
                log.debug("reply to %s:%s failed: %s", addr[0], addr[1], exc)
            for gid in self.book.keys:
                holder = self.book.holder(gid, now)
                if holder != holders.get(gid, ""):
                    log.info("group %d: vote %s", gid, f"held by {holder}" if holder else "free")
                    holders[gid] = holder

    def snapshot(self) -> dict[str, Any]:
        return {"witness": self.book.snapshot(anyio.current_time()), "groups_configured": len(self.book.keys)}


async def _status_handler_for(server: WitnessServer) -> Any:
    async def handler(method: str, target: str, headers: Mapping[str, str], body: bytes) -> tuple[int, str, bytes]:
        if method != "GET" or target.split("?")[0] not in ("/status", "/healthz"):
            return 404, "text/plain; charset=utf-8", b"not found\n"
        return 200, "application/json", json.dumps(server.snapshot(), indent=1).encode() + b"\n"

    return handler


async def run_witness(
    listen: tuple[str, int],
    keys: Mapping[int, KeyRing],
    *,
    max_lease: float,
    status: str | None = None,
    task_status: anyio.abc.TaskStatus[WitnessServer] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Bind, then serve until cancelled (or SIGTERM/SIGINT when run from the CLI)."""
    if ":" in listen[0]:
        sock = await anyio.create_udp_socket(family=socket.AF_INET6, local_host=listen[0], local_port=listen[1])
    else:
        sock = await anyio.create_udp_socket(family=socket.AF_INET, local_host=listen[0], local_port=listen[1])
    async with sock, anyio.create_task_group() as tg:
        book = WitnessBook(keys, max_lease=max_lease, now=anyio.current_time())
        server = WitnessServer(book, sock)
        if status:
            from ._httpserver import serve_http

            await tg.start(serve_http, status, await _status_handler_for(server))
        log.info(
            "witness listening on %s:%d for %d group(s); granting no vote for the first %g s",
            listen[0],
            server.port,
            len(keys),
            max_lease,
        )
        tg.start_soon(server.serve)
        task_status.started(server)


def cmd_witness(args: argparse.Namespace) -> int:
    """``hasup witness``: mistakes in the arguments are one line and exit 2."""
    try:
        listen = parse_address(args.listen, default_port=DEFAULT_WITNESS_PORT)
    except ValueError as exc:
        raise ConfigError(f"--listen {args.listen}: {exc}") from None
    try:
        max_lease = parse_duration(args.max_lease)
    except ValueError as exc:
        raise ConfigError(f"--max-lease {args.max_lease}: {exc}") from None
    if not 1.0 <= max_lease <= 300.0:
        raise ConfigError(f"--max-lease {args.max_lease}: must be between 1s and 300s")
    keys = parse_groups(args.group or [])
    anyio.run(_serve_until_signal, listen, keys, max_lease, args.status)
    return 0


async def _serve_until_signal(
    listen: tuple[str, int], keys: Mapping[int, KeyRing], max_lease: float, status: str | None
) -> None:
    notifier = SystemdNotifier.from_environment()
    done = anyio.Event()
    async with anyio.create_task_group() as tg:
        try:
            await tg.start(functools.partial(run_witness, listen, keys, max_lease=max_lease, status=status))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {listen[0]}:{listen[1]}: {exc.strerror}") from None
        if notifier is not None:
            tg.start_soon(notifier.run, done)
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                log.info("witness stopping")
                break
        done.set()  # the notifier says STOPPING as it ends
        tg.cancel_scope.cancel()


def add_witness_parser(sub: Any) -> None:
    p = sub.add_parser(
        "witness",
        help="run a tie-breaking vote for pairs (on a third machine)",
        description="Grant a time-limited vote to at most one node per group, so that a pair "
        "with [group] witness never runs its service twice when the link between them is cut.",
    )
    p.add_argument(
        "--listen",
        default=f"127.0.0.1:{DEFAULT_WITNESS_PORT}",
        help=f"UDP address to serve (default 127.0.0.1:{DEFAULT_WITNESS_PORT}: loopback only)",
    )
    p.add_argument(
        "--group",
        action="append",
        metavar="ID[/KEYID]:KEYFILE",
        help="a group served, with its group key file (repeat for each group and key id)",
    )
    p.add_argument("--max-lease", default="10s", help="longest vote lease granted, and the quiet time after a start")
    p.add_argument("--status", help="serve /status (JSON) on this TCP address, e.g. 127.0.0.1:9106")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", default="text", choices=["text", "json"])
    p.set_defaults(func=cmd_witness)
