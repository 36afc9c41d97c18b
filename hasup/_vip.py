"""The virtual IP adapter (``[[vip]]``): executes :class:`AddVips`, :class:`RemoveVips`
and :class:`AnnounceVips`.

The core decides when (after a confirmed start; before every stop; at once on FAULT;
at start-up on a node that is not the holder); this module adds and removes the
addresses over rtnetlink (:mod:`hasup._rtnl`) and sends the announcements
(:mod:`hasup._announce`) in the background: a burst at once, a second burst after
``garp_delay``. A failed add is reported to the core, which faults the node (clients
could not reach it); a failed remove raises an alarm in the log and is retried by the
next ``RemoveVips``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import anyio
from anyio.abc import TaskGroup

from . import _rtnl
from ._announce import announce
from ._errors import HasupError
from ._vipconfig import VipSettings, check_devices

__all__ = ["VipManager", "missing_capabilities"]

log = logging.getLogger("hasup")

CAP_NET_ADMIN = 12
CAP_NET_RAW = 13


def missing_capabilities(status_path: str = "/proc/self/status") -> list[str]:
    """The capabilities virtual IPs need that this process lacks (effective set)."""
    try:
        with open(status_path, encoding="ascii") as f:
            line = next(line for line in f if line.startswith("CapEff:"))
        effective = int(line.split()[1], 16)
    except (OSError, StopIteration, ValueError, IndexError):
        return []  # not Linux, or unreadable: let the first netlink call tell
    return [
        name
        for bit, name in ((CAP_NET_ADMIN, "CAP_NET_ADMIN"), (CAP_NET_RAW, "CAP_NET_RAW"))
        if not effective >> bit & 1
    ]


class VipManager:
    """Adds, removes and announces the configured virtual IPs."""

    def __init__(self, vips: Sequence[VipSettings]) -> None:
        self.vips = tuple(vips)
        self._held = [False] * len(self.vips)
        self._tg: TaskGroup | None = None
        self._announcing: anyio.CancelScope | None = None
        #: Announcements sent, and failed adds/removes (for /metrics).
        self.stats = {"announcements": 0, "add_failures": 0, "remove_failures": 0}

    def prepare(self) -> None:
        """At start: every device exists (located ConfigError) and the process may
        change addresses and send raw frames (HasupError naming what is missing)."""
        check_devices(self.vips)
        missing = missing_capabilities()
        if missing:
            raise HasupError(
                f"virtual IPs ([[vip]]) need {' and '.join(missing)}: run hasup as root, or give the unit "
                "CapabilityBoundingSet= and AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW (see docs/operations.md)"
            )

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Host the announcement tasks until cancelled."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            task_status.started()
            await anyio.sleep_forever()

    # ------------------------------------------------------------------ actions
    def add(self) -> None:
        """Add every address (raise :class:`OSError` naming the first that failed),
        then announce them in the background."""
        for i, vip in enumerate(self.vips):
            try:
                added = _rtnl.add_address(vip.interface, vip.device, label=vip.label)
            except OSError as exc:
                self.stats["add_failures"] += 1
                raise OSError(exc.errno, f"cannot add {vip.text}: {exc.strerror or exc}") from None
            self._held[i] = True
            log.info("virtual IP %s %s", vip.text, "added" if added else "already present")
        self.announce()

    def remove(self) -> None:
        """Remove every address (an absent one is fine); log what could not be removed."""
        self._stop_announcing()
        for i, vip in enumerate(self.vips):
            try:
                removed = _rtnl.delete_address(vip.interface, vip.device)
            except OSError as exc:
                self.stats["remove_failures"] += 1
                log.error("ALARM vip: cannot remove %s: %s", vip.text, exc.strerror or exc)
                continue
            if removed or self._held[i]:
                log.info("virtual IP %s removed", vip.text)
            self._held[i] = False

    def announce(self) -> None:
        """(Re)start the announcement bursts of every held address."""
        self._stop_announcing()
        if self._tg is None:
            return
        scope = self._announcing = anyio.CancelScope()
        self._tg.start_soon(self._bursts, scope)

    def _stop_announcing(self) -> None:
        if self._announcing is not None:
            self._announcing.cancel()
            self._announcing = None

    async def _bursts(self, scope: anyio.CancelScope) -> None:
        with scope:
            await self._burst()
            delays = sorted({v.garp_delay for v in self.vips if v.garp_delay > 0})
            waited = 0.0
            for delay in delays:
                await anyio.sleep(delay - waited)
                waited = delay
                await self._burst([v for v in self.vips if v.garp_delay == delay])

    async def _burst(self, vips: Sequence[VipSettings] | None = None) -> None:
        async with anyio.create_task_group() as tg:
            for vip in vips if vips is not None else self.vips:
                tg.start_soon(self._announce_one, vip)

    async def _announce_one(self, vip: VipSettings) -> None:
        try:
            sent = await announce(vip.interface.ip, vip.device, repeat=vip.garp_repeat, interval=vip.garp_interval)
        except OSError as exc:
            log.warning("cannot announce %s: %s", vip.text, exc)
            return
        self.stats["announcements"] += sent

    # ------------------------------------------------------------------ status
    def status(self) -> list[dict[str, Any]]:
        return [
            {"address": v.interface.with_prefixlen, "device": v.device, "label": v.label, "held": held}
            for v, held in zip(self.vips, self._held, strict=True)
        ]
