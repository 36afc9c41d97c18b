"""A sync endpoint in its own process, for the kill -9 tests.

python sync_node.py serve ROOT STATE_DIR            -> prints "LISTEN <port>"
python sync_node.py pull ROOT STATE_DIR PORT [--pause]
    prints "PROGRESS" at the first received chunk (and with --pause blocks until a
    line arrives on stdin), then "DONE <generation>" or "ERROR <message>" (exit 3).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio

from hasup.sync import SyncEngine, SyncError, SyncSettings

KEY = bytes(range(32))


def engine(root: str, state: str, on_event: Any = None) -> SyncEngine:
    settings = SyncSettings(path=root, listen=("127.0.0.1", 0), id="data")
    return SyncEngine(settings, group_keys=[KEY], node_name=Path(state).name, state_dir=state, on_event=on_event)


async def serve(root: str, state: str) -> None:
    async with anyio.create_task_group() as tg:
        _, port = await tg.start(engine(root, state).serve)
        print(f"LISTEN {port}", flush=True)


async def pull(root: str, state: str, port: int, pause: bool) -> int:
    seen = False

    def on_event(kind: str, fields: Any) -> None:
        nonlocal seen
        if kind == "received" and not seen:
            seen = True
            print("PROGRESS", flush=True)
            if pause:
                sys.stdin.readline()  # block the whole process mid-transfer on purpose

    try:
        gen = await engine(root, state, on_event).pull(("127.0.0.1", port))
    except SyncError as exc:
        print(f"ERROR {exc}", flush=True)
        return 3
    print(f"DONE {gen.number}", flush=True)
    return 0


def main() -> int:
    cmd, root, state = sys.argv[1:4]
    if cmd == "serve":
        anyio.run(serve, root, state)
        return 0
    return anyio.run(pull, root, state, int(sys.argv[4]), "--pause" in sys.argv)


if __name__ == "__main__":
    sys.exit(main())
