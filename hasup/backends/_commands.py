"""The commands mode of the ``command`` backend: ``start``, ``stop``, ``status`` (and
``kill``) argv lists, e.g. the ``systemctl`` or init-script commands of an existing
installation.

``status`` follows the LSB convention: exit 0 = running, 3 = stopped, anything else =
failed. Without it, hasup trusts the exit codes of its own commands. Built by
:class:`~hasup.backends.command.CommandBackend` when ``run`` is not given.
"""

from __future__ import annotations

from typing import Any

import anyio

from .._errors import BackendError, ServiceFailed
from ..protocol._enums import ServiceStatus
from ._command_base import CommandBackend
from ._process import CommandResult, logger, output_suffix, run_command, show

__all__ = ["CommandsBackend"]


class CommandsBackend(CommandBackend, mode="start"):
    """The service is started, stopped and observed by commands (see the module docs).

    :meth:`start` runs the start command with ``HASUP_TERM=<term>`` in its environment;
    the other commands do not get it.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        assert self.start_argv is not None
        assert self.stop_argv is not None
        self._start_argv: tuple[str, ...] = self.start_argv
        self._stop_argv: tuple[str, ...] = self.stop_argv
        # Without a status command: what our own commands established.
        self._assumed = ServiceStatus.STOPPED

    def describe(self) -> str:
        return f"command: start {show(self._start_argv)}"

    async def check(self) -> list[str]:
        problems = await super().check()
        if self.status_argv is None:
            problems.append(
                "no status command: hasup cannot notice that the service crashed nor confirm "
                "that stop worked (it trusts the exit codes); add status = [...]"
            )
        return problems

    # -- the ServiceBackend interface -------------------------------------------------------
    async def status(self) -> ServiceStatus:
        if self.status_argv is None:
            return self._assumed
        return await self._run_status(self.status_timeout)

    # watch(): the base class polls status() every poll_interval.

    # -- start and stop ------------------------------------------------------------------
    async def _start(self, term: int) -> None:
        deadline = anyio.current_time() + self.start_timeout
        try:
            result = await self._run(self._start_argv, self.start_timeout, "start", term=term)
        except ServiceFailed:
            self._assumed = ServiceStatus.FAILED
            raise
        if result.returncode != 0:
            self._assumed = ServiceStatus.FAILED
            raise ServiceFailed(f"start command exited with status {result.returncode}{output_suffix(result.output)}")
        if self.status_argv is None:
            self._assumed = ServiceStatus.RUNNING
            return
        reached, last = await self._poll_status(ServiceStatus.RUNNING, deadline)
        if not reached:
            raise ServiceFailed(
                f"start command succeeded but status did not report running within "
                f"{self.start_timeout:g}s (last: {last.value})"
            )

    async def _stop(self) -> None:
        if await self._stop_step(self._stop_argv, "stop"):
            self._assumed = ServiceStatus.STOPPED
            return
        if self.kill_argv is not None:
            logger.warning("service not confirmed stopped within %gs: running the kill command", self.stop_timeout)
            if await self._stop_step(self.kill_argv, "kill"):
                self._assumed = ServiceStatus.STOPPED
                return
        self._assumed = ServiceStatus.FAILED
        what = "stop and kill commands" if self.kill_argv else "stop command (no kill command configured)"
        raise BackendError(f"could not confirm that the service stopped after the {what}")

    async def _stop_step(self, argv: tuple[str, ...], what: str) -> bool:
        """Run ``argv`` and confirm STOPPED within ``stop_timeout``; True if confirmed."""
        deadline = anyio.current_time() + self.stop_timeout
        succeeded = False
        try:
            result = await self._run(argv, self.stop_timeout, what)
            succeeded = result.returncode == 0
            if not succeeded:
                logger.warning(
                    "%s command exited with status %d%s",
                    what,
                    result.returncode,
                    output_suffix(result.output),
                )
        except ServiceFailed as exc:
            logger.warning("%s", exc)
        if self.status_argv is None:
            return succeeded
        reached, last = await self._poll_status(ServiceStatus.STOPPED, deadline)
        if not reached:
            logger.warning("after the %s command, status still reports %s", what, last.value)
        return reached

    # -- status ------------------------------------------------------------------------
    async def _poll_status(self, target: ServiceStatus, deadline: float) -> tuple[bool, ServiceStatus]:
        """Ask status until it reports ``target`` or ``deadline`` passes."""
        delay = 0.02
        while True:
            remaining = deadline - anyio.current_time()
            current = await self._run_status(max(0.05, min(self.status_timeout, remaining)))
            if current is target:
                return True, current
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                return False, current
            await anyio.sleep(min(delay, remaining))
            delay = min(delay * 2, self.poll_interval)

    async def _run_status(self, time_limit: float) -> ServiceStatus:
        assert self.status_argv is not None
        try:
            result = await self._run(self.status_argv, time_limit, "status")
        except ServiceFailed as exc:
            # A hung or unrunnable status command means "cannot tell", not "stopped".
            logger.warning("%s", exc)
            return ServiceStatus.UNKNOWN
        if result.returncode == 0:
            return ServiceStatus.RUNNING
        if result.returncode == 3:
            return ServiceStatus.STOPPED
        return ServiceStatus.FAILED

    async def _run(
        self, argv: tuple[str, ...], time_limit: float, what: str, *, term: int | None = None
    ) -> CommandResult:
        """Run one of the service commands; ServiceFailed if it cannot run or times out."""
        try:
            result = await run_command(argv, time_limit, env=self._environment(term), cwd=self.cwd, what=what)
        except OSError as exc:
            raise ServiceFailed(f"{what} command {argv[0]!r} could not be run: {exc}") from exc
        if result.timed_out:
            raise ServiceFailed(
                f"{what} command {show(argv)} timed out after {time_limit:g}s and was killed"
                f"{output_suffix(result.output)}"
            )
        return result
