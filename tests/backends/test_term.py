"""The fencing token (term) reaches the service: HASUP_TERM for the command backend's
start command and managed program, a ``term`` keyword for callbacks that take one."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from hasup.backends.callback import CallbackBackend
from hasup.backends.command import CommandBackend
from hasup.protocol._enums import ServiceStatus

pytestmark = pytest.mark.anyio

# Writes the environment it was started with to argv[1], one NAME=value per line.
DUMP_ENV = "import os, sys\nwith open(sys.argv[1], 'w') as f:\n    f.writelines(f'{k}={v}\\n' for k, v in os.environ.items())\n"


def dump_env(path: Path) -> list[str]:
    return [sys.executable, "-c", DUMP_ENV, str(path)]


async def read_env(path: Path) -> dict[str, str]:
    """The environment a test program dumped, waiting (with a deadline) for it."""
    file = anyio.Path(path)
    with anyio.fail_after(5):
        # A file written by another process signals no event: poll it, with a deadline.
        while not (await file.exists() and (await file.read_text()).endswith("\n")):
            await anyio.sleep(0.01)
    return dict(line.split("=", 1) for line in (await file.read_text()).splitlines())


async def test_start_command_sees_the_term(tmp_path: Path) -> None:
    start_env, stop_env = tmp_path / "start.env", tmp_path / "stop.env"
    backend = CommandBackend(
        start=dump_env(start_env),
        stop=dump_env(stop_env),
        env={"HASUP_TERM": "configured", "OTHER": "kept"},  # the term is hasup's to give
    )
    await backend.start(term=42)
    env = await read_env(start_env)
    assert env["HASUP_TERM"] == "42"
    assert env["OTHER"] == "kept"
    await backend.stop()
    assert (await read_env(stop_env))["HASUP_TERM"] == "configured"  # only start gets it
    await backend.start()  # outside the supervisor: no term
    assert (await read_env(start_env))["HASUP_TERM"] == "0"


@pytest.mark.parametrize("bind", [False, True], ids=["unbound", "bound"])
async def test_managed_process_sees_the_term(tmp_path: Path, bind: bool) -> None:
    out = tmp_path / "service.env"
    script = DUMP_ENV + "import time\ntime.sleep(60)\n"
    backend = CommandBackend(
        run=[sys.executable, "-c", script, str(out)],
        bind_to_hasup=bind,
        pid_file=str(tmp_path / "service.pid"),
        stop_timeout=5,
    )
    try:
        await backend.start(term=7)
        assert await backend.status() is ServiceStatus.RUNNING
        assert (await read_env(out))["HASUP_TERM"] == "7"
    finally:
        with anyio.fail_after(10):
            await backend.stop()


async def test_callback_gets_the_term_only_if_it_takes_one() -> None:
    seen: list[Any] = []

    async def with_term(*, term: int) -> None:
        seen.append(("with_term", term))

    async def without_term() -> None:
        seen.append(("without_term",))

    async def with_kwargs(**kwargs: Any) -> None:  # written before the term existed
        seen.append(("with_kwargs", kwargs))

    async def status() -> ServiceStatus:
        return ServiceStatus.STOPPED

    async def stop() -> None:
        pass

    for start in (with_term, without_term, with_kwargs):
        await CallbackBackend(start=start, stop=stop, status=status).start(term=9)
    assert seen == [("with_term", 9), ("without_term",), ("with_kwargs", {})]
