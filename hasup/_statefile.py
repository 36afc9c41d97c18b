"""Atomic persistence of the core's :class:`~hasup.protocol.PersistentState`.

Written with temp file + fsync + rename + directory fsync, so a crash at any point
leaves either the old or the new state, never a torn file.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import anyio

from ._errors import ConfigError
from .protocol import PersistentState, State

__all__ = ["StateFile"]


class StateFile:
    """``<state_dir>/state.json``."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(state_dir)
        self.path = self.dir / "state.json"

    def load(self) -> PersistentState | None:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read persisted state: {exc}", file=str(self.path)) from None
        try:
            return PersistentState(
                epoch=int(raw["epoch"]),
                term=int(raw["term"]),
                role=State[raw.get("role", "BACKUP")],
                peer_marks={k: (int(v[0]), int(v[1])) for k, v in raw.get("peer_marks", {}).items()},
                fault_level=int(raw.get("fault_level", 0)),
                maintenance=bool(raw.get("maintenance", False)),
                group_maintenance=(
                    int(raw.get("group_maintenance", [0, False])[0]),
                    bool(raw.get("group_maintenance", [0, False])[1]),
                ),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ConfigError(
                f"persisted state is corrupt ({exc!r}); move it away to start fresh", file=str(self.path)
            ) from None

    def save(self, state: PersistentState) -> None:
        """Write atomically; raises ``OSError`` (failing to persist is fatal to the caller)."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = json.dumps(
            {
                "epoch": state.epoch,
                "term": state.term,
                "role": state.role.name,
                "peer_marks": {k: list(v) for k, v in state.peer_marks.items()},
                "fault_level": state.fault_level,
                "maintenance": state.maintenance,
                "group_maintenance": [state.group_maintenance[0], state.group_maintenance[1]],
                "written": time.time(),
            },
            indent=1,
        ).encode()
        tmp = self.path.with_name(f".state.json.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    async def aload(self) -> PersistentState | None:
        return await anyio.to_thread.run_sync(self.load)

    async def asave(self, state: PersistentState) -> None:
        await anyio.to_thread.run_sync(self.save, state)

    def next_epoch(self, previous: PersistentState | None) -> int:
        """Boot epoch = max(persisted + 1, unix seconds)."""
        return max((previous.epoch + 1) if previous else 0, int(time.time()))
