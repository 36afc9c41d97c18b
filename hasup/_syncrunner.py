"""Drives the data-sync engines (``[[sync]]``) from the core's view of the group.

* while this node holds the service, each engine serves its directory;
* while it is a BACKUP with its service confirmed stopped and a live holder exists,
  each engine follows the holder;
* before a preemption (failback) the core asks for a pull from the holder
  (``Node.needs_sync``), so edits made on the standby while it served come back;
* every heartbeat carries the generations this node holds.

Following stops before any start of the service (:meth:`SyncRunner.quiesce`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import anyio

from .protocol import ServiceStatus, State

if TYPE_CHECKING:
    from .supervisor import Supervisor
    from .sync.engine import SyncEngine

__all__ = ["SyncRunner"]

log = logging.getLogger("hasup")


class _Slot:
    """One engine and the task currently running for it."""

    def __init__(self, engine: SyncEngine, port: int) -> None:
        self.engine = engine
        self.port = port
        self.role = "idle"  # idle | serve | follow
        self.peer: tuple[str, int] | None = None
        self.scope: anyio.CancelScope | None = None
        self.done = anyio.Event()
        self.done.set()


class SyncRunner:
    def __init__(self, sup: Supervisor) -> None:
        from .sync.engine import SyncEngine

        self._sup = sup
        config = sup.config
        self.slots = [
            _Slot(
                SyncEngine(
                    settings,
                    group_keys=list(config.group.secrets),
                    node_name=config.node.name,
                    state_dir=config.node.state_dir,
                    on_event=self._on_event,
                ),
                settings.listen[1],
            )
            for settings in config.sync_settings()
        ]
        self.poll = min(max(config.group.advert_interval / 2, 0.05), 0.5)

    def _on_event(self, name: str, fields: Any) -> None:
        if name == "conflict":
            log.error("ALARM sync conflict: both copies kept: %s", fields)
            self._sup._count("sync_conflicts")
        elif name in ("pull_failed", "auth_failed"):
            self._sup._count(f"sync_{name}")

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            while True:
                self._tick(tg)
                if self._sup.node.needs_sync:
                    await self._pull_before_takeover()
                await anyio.sleep(self.poll)

    async def quiesce(self) -> None:
        """Stop following (called before the service is started)."""
        for slot in self.slots:
            if slot.role == "follow" and slot.scope is not None:
                slot.scope.cancel()
        for slot in self.slots:
            await slot.done.wait()

    async def sync_now(self) -> list[int]:
        """Publish a fresh snapshot (holder) or pull one from the holder (standby)."""
        node = self._sup.node
        generations = []
        holder = self._holder()
        for slot in self.slots:
            if node.holder:
                generation = await slot.engine.snapshot_now()
            elif holder is not None and slot.role != "serve":
                with anyio.fail_after(slot.engine.settings.pull_timeout):
                    generation = await slot.engine.pull((holder[1], slot.port))
            else:
                raise ValueError("no live holder to pull from")
            generations.append(generation.number)
        return generations

    def status(self) -> list[dict[str, Any]]:
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
    def _holder(self) -> tuple[str, str] | None:
        """(name, host) of a live peer that holds the service."""
        now = anyio.current_time()
        for peer in self._sup.node.peers():
            if peer.live(now) and peer.active and peer.state in (State.MASTER, State.CLAIMING, State.RELEASING):
                return (peer.name or "", peer.address[0])
        return None

    def _tick(self, tg: anyio.abc.TaskGroup) -> None:
        node = self._sup.node
        wire = b"".join(slot.engine.current_generation().to_wire() for slot in self.slots)
        node.sync_generation = wire
        holder = self._holder()
        self._note_peer_generations()
        for slot in self.slots:
            if node.holder and node.state in (State.CLAIMING, State.MASTER, State.RELEASING, State.INIT):
                want, peer = "serve", None
            elif (
                holder is not None
                and node.state == State.BACKUP
                and node.service is ServiceStatus.STOPPED
                and not node.holder
            ):
                want, peer = "follow", (holder[1], slot.port)
            else:
                want, peer = "idle", None
            if want == slot.role and peer == slot.peer:
                continue
            if slot.scope is not None:
                slot.scope.cancel()
            slot.role, slot.peer = want, peer
            if want != "idle":
                tg.start_soon(self._run_slot, slot, want, peer)

    async def _run_slot(self, slot: _Slot, role: str, peer: tuple[str, int] | None) -> None:
        await slot.done.wait()  # the previous task of this slot has unwound
        slot.done = anyio.Event()
        try:
            with anyio.CancelScope() as scope:
                slot.scope = scope
                if slot.role != role or slot.peer != peer:
                    return  # superseded meanwhile
                if role == "serve":
                    await slot.engine.serve()
                else:
                    assert peer is not None
                    await slot.engine.follow(peer)
        except Exception as exc:
            log.error("sync of %s (%s) stopped: %s", slot.engine.settings.path, role, exc)
            self._sup._count("sync_errors")
        finally:
            if slot.scope is not None and slot.role == role:
                slot.role = "idle"
            slot.done.set()

    def _note_peer_generations(self) -> None:
        from .sync.snapshot import Generation

        node = self._sup.node
        now = anyio.current_time()
        # a standby compares itself with the holder; the holder with its most lagging peer
        peers = [p for p in node.peers() if p.live(now) and p.last is not None and p.last.sync_generation]
        if not node.holder:
            peers = [p for p in peers if p.active]
        for i, slot in enumerate(self.slots):
            seen = []
            for peer in peers:
                assert peer.last is not None
                chunk = peer.last.sync_generation[16 * i : 16 * i + 16]
                if len(chunk) == 16:
                    seen.append(Generation(*Generation.prefix_from_wire(chunk)))
            if seen:
                slot.engine.note_peer_generation(min(seen, key=lambda g: g.number))

    async def _pull_before_takeover(self) -> None:
        sup = self._sup
        holder = self._holder()
        ok = True
        if holder is not None:
            for slot in self.slots:
                settings = slot.engine.settings
                try:
                    with anyio.fail_after(settings.pull_timeout):
                        generation = await slot.engine.pull((holder[1], slot.port))
                    log.info(
                        "sync: pulled %s generation %d from %s before taking over",
                        settings.path,
                        generation.number,
                        holder[0],
                    )
                except Exception as exc:
                    ok = False
                    log.error(
                        "sync: could not pull %s from %s before taking over: %s (will retry)",
                        settings.path,
                        holder[0],
                        exc,
                    )
        await sup._input(lambda n, now: n.sync_result(ok, now))
