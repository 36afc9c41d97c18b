"""The ``warm`` backend: generic warm standby driven by argv commands.

The service runs on every node (started by systemd, Docker or the service itself);
hasup only promotes and demotes it:

* ``promote = [...]`` makes this node's copy the active one (``HASUP_TERM=<term>`` in
  its environment, the fencing token), ``demote = [...]`` makes it a standby again;
* ``state = [...]`` says which it is: exit 0 = promoted (active), 3 = standby or not
  running at all (nothing is active here), anything else = unknown;
* ``ready = [...]`` says whether the standby could take over: exit 0 = ready. A node
  is eligible only while ready (ARCHITECTURE §2, warm standby).

HTTP services are driven the same way with an HTTP client as the command (argv, no
shell: ``["curl", "-fsS", "-X", "POST", "http://127.0.0.1:8080/promote"]``); NeuronEX
has its own preset (``backend = "neuronex"``). Promotion and demotion are confirmed
with ``state`` within ``start_timeout``/``stop_timeout``, otherwise they failed (a
failed demotion: FAULT, no promotion elsewhere).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

import anyio

from .._errors import ServiceFailed
from ..protocol._enums import ServiceStatus
from ._process import output_suffix, process_environment, run_command, show
from .base import ServiceBackend

if TYPE_CHECKING:
    from typing import Self

    from .._section import Section

__all__ = ["WarmCommandBackend"]


class WarmCommandBackend(ServiceBackend):
    """Promote, demote and observe an always-running service with argv commands."""

    kind: ClassVar[str] = "warm"
    warm: ClassVar[bool] = True

    def __init__(
        self,
        *,
        promote: Sequence[str],
        demote: Sequence[str],
        state: Sequence[str],
        ready: Sequence[str],
        start_timeout: float = 30.0,
        stop_timeout: float = 30.0,
        command_timeout: float = 5.0,
        poll_interval: float = 0.5,
        env: Mapping[str, str] | None = None,
    ) -> None:
        for name, argv in (("promote", promote), ("demote", demote), ("state", state), ("ready", ready)):
            if isinstance(argv, str) or not argv:
                raise ValueError(f"{name} must be a non-empty argv list, not a shell string")
        self.promote_argv = tuple(promote)
        self.demote_argv = tuple(demote)
        self.state_argv = tuple(state)
        self.ready_argv = tuple(ready)
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.command_timeout = command_timeout
        self.poll_interval = poll_interval
        self.env = dict(env or {})

    @classmethod
    def from_config(cls, section: Section) -> Self:
        section.raw("backend")
        argv = {key: section.get_argv(key) for key in ("promote", "demote", "state", "ready")}
        env = section.get_str_table("env")
        backend = cls(
            **argv,
            start_timeout=section.get_duration("start_timeout", 30.0, min=0.001),
            stop_timeout=section.get_duration("stop_timeout", 30.0, min=0.001),
            command_timeout=section.get_duration("command_timeout", 5.0, min=0.001),
            poll_interval=section.get_duration("poll_interval", 0.5, min=0.01),
            env=env,
        )
        section.finish()
        return backend

    def describe(self) -> str:
        return f"warm: promote {show(self.promote_argv)}"

    async def _run(self, argv: Sequence[str], what: str, term: int | None = None) -> tuple[int, str]:
        try:
            result = await run_command(argv, self.command_timeout, env=process_environment(self.env, term), what=what)
        except OSError as exc:
            return -1, f" ({exc.strerror or exc})"
        if result.timed_out:
            return -1, f" (timed out after {self.command_timeout:g} s)"
        return result.returncode, output_suffix(result.output)

    async def status(self) -> ServiceStatus:
        code, _ = await self._run(self.state_argv, "state")
        if code == 0:
            return ServiceStatus.RUNNING
        if code == 3:
            return ServiceStatus.STOPPED
        return ServiceStatus.UNKNOWN

    async def _confirm(self, want: ServiceStatus, limit: float) -> bool:
        with anyio.move_on_after(limit):
            while True:
                if await self.status() is want:
                    return True
                await anyio.sleep(min(self.poll_interval, 0.05))
        return False

    async def start(self, *, term: int = 0) -> None:
        code, out = await self._run(self.promote_argv, "promote", term)
        if code != 0:
            raise ServiceFailed(f"promote command exited with status {code}{out}")
        if not await self._confirm(ServiceStatus.RUNNING, self.start_timeout):
            raise ServiceFailed(f"state did not report promoted within {self.start_timeout:g} s")

    async def stop(self) -> None:
        code, out = await self._run(self.demote_argv, "demote")
        if code != 0 and await self.status() is not ServiceStatus.STOPPED:
            raise ServiceFailed(f"demote command exited with status {code}{out}")
        if not await self._confirm(ServiceStatus.STOPPED, self.stop_timeout):
            raise ServiceFailed(f"state did not report standby within {self.stop_timeout:g} s")

    async def readiness(self) -> tuple[bool, str]:
        code, out = await self._run(self.ready_argv, "ready")
        return code == 0, "" if code == 0 else f"ready command exited with status {code}{out}"

    async def check(self) -> list[str]:
        path = process_environment(self.env).get("PATH")
        return [
            f"{name} command not found or not executable: {argv[0]!r}"
            for name, argv in (
                ("promote", self.promote_argv),
                ("demote", self.demote_argv),
                ("state", self.state_argv),
                ("ready", self.ready_argv),
            )
            if shutil.which(argv[0], path=path) is None
        ]
