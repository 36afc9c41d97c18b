"""The data-sync adapter (``[[sync]]``): executes the core's :class:`SyncRole` and
:class:`PullData` actions with one :class:`~hasup.sync.SyncEngine` per directory.

The core decides the role (``hasup.protocol._assign``): ``serve`` while this node
holds the service, ``follow`` the holder while a BACKUP with its service confirmed
stopped, ``idle`` otherwise, and ``PullData`` before a failback. This module only runs
the engines, reports the pull's outcome (``Node.sync_result``) and the generations
this node holds (``Node.sync_generation``, carried in every heartbeat).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup

from ._driver import Driver
from .protocol import PullData, SyncRole

if TYPE_CHECKING:
    from .sync.config import SyncSettings
    from .sync.engine import SyncEngine

__all__ = ["SyncRunner"]

log = logging.getLogger("hasup")

_RESTART_DELAY = 0.5  # before restarting an engine that stopped in its role


class _Slot:
    """One engine and the task currently running for it."""

    def __init__(self, engine: SyncEngine, port: int) -> None:
        self.engine = engine
        self.port = port
        self.role = SyncRole("idle")
        self.scope: anyio.CancelScope | None = None
        self.done = anyio.Event()
        self.done.set()


class SyncRunner:
    def __init__(
        self,
        driver: Driver,
        settings: Sequence[SyncSettings],
        *,
        group_keys: Sequence[bytes],
        node_name: str,
        state_dir: str,
        peer_hosts: Sequence[str] | None = None,
    ) -> None:
        from .sync.engine import SyncEngine

        self._driver = driver
        self.slots = [
            _Slot(
                SyncEngine(
                    entry,
                    group_keys=list(group_keys),
                    node_name=node_name,
                    state_dir=state_dir,
                    on_event=self._on_event,
                    allowed_peers=peer_hosts,
                ),
                entry.listen[1],
            )
            for entry in settings
        ]
        self._role = SyncRole("idle")
        self._tg: TaskGroup | None = None
        self._generation_changed = anyio.Event()

    def _on_event(self, name: str, fields: Mapping[str, Any]) -> None:
        if name == "conflict":
            log.error("ALARM sync conflict: both copies kept: %s", dict(fields))
            self._driver.count("sync_conflicts")
        elif name in ("pull_failed", "auth_failed"):
            self._driver.count(f"sync_{name}")
        elif name in ("applied", "published"):
            self._generation_changed.set()

    def _wire(self) -> bytes:
        return b"".join(slot.engine.current_generation().to_wire() for slot in self.slots)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Host the engines' tasks; keep the heartbeat's generations current."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            task_status.started()
            while True:
                wire = self._wire()
                await self._driver.input(lambda n, now: n.sync_generation(wire, now))  # noqa: B023
                await self._generation_changed.wait()
                self._generation_changed = anyio.Event()

    # ------------------------------------------------------------------ actions
    async def apply_role(self, action: SyncRole) -> None:
        """Switch every engine to ``action``; leaving ``follow`` waits until the
        follower has unwound (nothing is applied under a service about to start)."""
        assert self._tg is not None
        self._role = action
        for slot in self.slots:
            if slot.role == action:
                continue
            leaving_follow = slot.role.role == "follow"
            if slot.scope is not None:
                slot.scope.cancel()
            slot.role = action
            if action.role != "idle":
                self._tg.start_soon(self._run_slot, slot, action)
            if leaving_follow and action.role != "follow":
                await slot.done.wait()

    def pull(self, action: PullData) -> None:
        """Pull from the holder in the background; the outcome goes to the core."""
        assert self._tg is not None
        self._tg.start_soon(self._pull_before_takeover, action)

    async def sync_now(self) -> list[int]:
        """Publish a fresh snapshot (holder) or pull one from the holder (standby)."""
        node = self._driver.node
        holder = node.holder_peer(anyio.current_time())
        generations = []
        for slot in self.slots:
            if node.holder:
                generation = await slot.engine.snapshot_now()
            elif holder is not None and slot.role.role != "serve":
                with anyio.fail_after(slot.engine.settings.pull_timeout):
                    generation = await slot.engine.pull((holder.address[0], slot.port))
            else:
                raise ValueError("no live holder to pull from")
            generations.append(generation.number)
        return generations

    def status(self) -> list[dict[str, Any]]:
        self._note_peer_generations()
        out = []
        for slot in self.slots:
            st = slot.engine.status()
            out.append(
                {
                    "path": st.path,
                    "role": st.role,
                    "generation": st.generation.number,
                    "peer_generation": st.peer_generation.number if st.peer_generation else None,
                    "in_sync": st.in_sync,
                    "last_error": st.last_error,
                    "conflicts": st.conflicts,
                }
            )
        return out

    # ------------------------------------------------------------------ internals
    async def _run_slot(self, slot: _Slot, role: SyncRole) -> None:
        await slot.done.wait()  # the previous task of this slot has unwound
        slot.done = anyio.Event()
        try:
            with anyio.CancelScope() as scope:
                slot.scope = scope
                while slot.role == role:  # an engine that stops is restarted
                    try:
                        if role.role == "serve":
                            await slot.engine.serve()
                        else:
                            assert role.host is not None
                            await slot.engine.follow((role.host, slot.port))
                    except Exception as exc:
                        log.error("sync of %s (%s) stopped: %s", slot.engine.settings.path, role.role, exc)
                        self._driver.count("sync_errors")
                    await anyio.sleep(_RESTART_DELAY)
        finally:
            slot.done.set()

    def _note_peer_generations(self) -> None:
        from .sync.snapshot import Generation

        running = self._driver.running
        if running is None:
            return
        wires = running.peer_sync_generations(anyio.current_time())
        for i, slot in enumerate(self.slots):
            seen = []
            for wire in wires:
                chunk = wire[16 * i : 16 * i + 16]
                if len(chunk) == 16:
                    seen.append(Generation(*Generation.prefix_from_wire(chunk)))
            if seen:
                slot.engine.note_peer_generation(min(seen, key=lambda g: g.number))

    async def _pull_before_takeover(self, action: PullData) -> None:
        ok = True
        for slot in self.slots:
            settings = slot.engine.settings
            try:
                with anyio.fail_after(settings.pull_timeout):
                    generation = await slot.engine.pull((action.host, slot.port))
                log.info(
                    "sync: pulled %s generation %d from %s before taking over",
                    settings.path,
                    generation.number,
                    action.peer,
                )
            except Exception as exc:
                ok = False
                log.error(
                    "sync: could not pull %s from %s before taking over: %s (will retry)",
                    settings.path,
                    action.peer,
                    exc,
                )
        await self._driver.input(lambda n, now: n.sync_result(ok, now))
