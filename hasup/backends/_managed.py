"""The managed-process mode of the ``command`` backend: ``run = [...]``, hasup runs the
program itself.

hasup spawns the program in its own session and notices its exit the moment it happens
(no polling). By default the program outlives hasup: its pid is kept in ``pid_file``
and a restarted hasup adopts it (ARCHITECTURE §2 rules 6 and 13).
``bind_to_hasup = true`` fences it instead: it is SIGKILLed when hasup dies (see the
shim in :mod:`._process`). Built by :class:`~hasup.backends._command_base.CommandBackend`
when ``run`` is given.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import AsyncGenerator
from typing import Any

import anyio

from .._addr import format_address
from .._errors import BackendError, ServiceFailed
from ..protocol._enums import ServiceStatus
from ._command_base import CommandBackend
from ._process import (
    KILL_GRACE,
    Child,
    FreeChild,
    alive,
    group_alive,
    kill_and_reap,
    logger,
    pidfd_open,
    proc_stat,
    read_spawned_pid,
    show,
    signal_child_group,
    spawn_bound,
    spawn_free,
    wait_gone,
    wait_group_gone,
)

__all__ = ["ManagedProcessBackend"]


class ManagedProcessBackend(CommandBackend, mode="run"):
    """hasup runs the service program itself (see the module docs).

    :meth:`start` spawns the program with ``HASUP_TERM=<term>`` in its environment. The
    environment of a running process cannot change: a program that already runs (or
    was adopted) keeps the value it was started with.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        assert self.run_argv is not None
        self._argv: tuple[str, ...] = self.run_argv
        self._process: Child | None = None
        self._fence_fd: int | None = None  # write end of the shim's lifeline pipe
        self._service_pid: int | None = None
        self._phase = "idle"  # idle | starting | running | stopping
        self._adopt_checked = False  # the pid file is read once, by the first call
        self._changed: anyio.Event | None = None  # created lazily, like the lock

    def describe(self) -> str:
        ready = f", ready when {format_address(*self.ready_tcp)} accepts" if self.ready_tcp else ""
        return f"command: run {show(self._argv)}{ready}"

    async def check(self) -> list[str]:
        problems = await super().check()
        if not self.bind_to_hasup and self.pid_file is None:
            problems.append(
                "run without bind_to_hasup and without pid_file: the program outlives hasup, "
                "but a restarted hasup cannot find it and would start a second copy"
            )
        return problems

    # -- the ServiceBackend interface -------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """The process group id of the running program.

        ``os.killpg(backend.pid, signal.SIGKILL)`` simulates a crash of the service.
        Without ``bind_to_hasup`` it is also the program's own pid.
        """
        return self._process.pid if self._process is not None else None

    @property
    def service_pid(self) -> int | None:
        """The pid of the program itself (with ``bind_to_hasup`` the group leader is
        hasup's small lifeline shim, see :mod:`._process`)."""
        return self._service_pid if self._process is not None else None

    async def status(self) -> ServiceStatus:
        self._adopt()
        return self._status()

    async def watch(self) -> AsyncGenerator[ServiceStatus, None]:
        last: ServiceStatus | None = None
        while True:
            self._adopt()
            changed = self._change_event()  # taken before reading, so no change is missed
            current = self._status()
            if current is not last:
                last = current
                yield current
                continue  # look again: it may have changed while the consumer ran
            await self._wait_for_change(changed)

    # -- status ------------------------------------------------------------------------
    def _status(self) -> ServiceStatus:
        process = self._process
        if process is None:
            return ServiceStatus.STOPPED
        if self._phase == "starting":
            return ServiceStatus.STARTING
        if self._phase == "stopping":
            return ServiceStatus.STOPPING
        if alive(process):
            return ServiceStatus.RUNNING
        # It exited without being asked to: failed, and not yet confirmed stopped (what
        # it started may still run) until stop() has cleaned up its process group.
        return ServiceStatus.FAILED

    async def _wait_for_change(self, changed: anyio.Event) -> None:
        process = self._process
        if process is None or not alive(process):
            await changed.wait()
            return
        async with anyio.create_task_group() as tg:

            async def exited() -> None:
                await process.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(exited)
            await changed.wait()
            tg.cancel_scope.cancel()

    def _change_event(self) -> anyio.Event:
        if self._changed is None:
            self._changed = anyio.Event()
        return self._changed

    def _set_phase(self, phase: str) -> None:
        self._phase = phase
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    # -- start -------------------------------------------------------------------------
    async def _start(self, term: int) -> None:
        argv = self._argv
        self._adopt()
        if self._process is not None:
            if alive(self._process) and self._phase == "running":
                return  # already running: start is idempotent
            await self._stop()  # clean up what a crashed run left behind
        env = self._environment(term)
        if shutil.which(argv[0], path=env.get("PATH", os.defpath)) is None:
            raise ServiceFailed(f"run: command not found or not executable: {argv[0]!r}")
        if self.cwd is not None and not await anyio.Path(self.cwd).is_dir():
            raise ServiceFailed(f"run: cwd is not a directory: {self.cwd!r}")
        process, report_fd = await self._spawn(env)
        self._set_phase("starting")
        succeeded = False
        try:
            if report_fd is not None:
                await self._wait_spawned(process, report_fd)
            if isinstance(process, FreeChild) and self.pid_file is not None:
                try:
                    await anyio.to_thread.run_sync(_write_pid_file, self.pid_file, process.pid, process.start_time)
                except OSError as exc:
                    # Without it a restarted hasup would start a second copy: refuse.
                    raise ServiceFailed(f"run: cannot write the pid file {self.pid_file}: {exc}") from exc
            logger.info("started %s (pid %s)", show(argv), self._service_pid or process.pid)
            await self._wait_ready(process)
            succeeded = True
        finally:
            if report_fd is not None:
                os.close(report_fd)
            if not succeeded:  # failed or cancelled: do not leave a half-started service
                with anyio.CancelScope(shield=True):
                    await kill_and_reap(process)
                    await wait_group_gone(process.pid, KILL_GRACE)
                    await self._forget_process()
        self._set_phase("running")

    async def _spawn(self, env: dict[str, str]) -> tuple[Child, int | None]:
        """Start the program (bound: through the shim) and record it; the read end of
        the shim's report pipe, if there is one, comes with it."""
        argv = self._argv
        if not self.bind_to_hasup:
            try:
                child = spawn_free(argv, env=env, cwd=self.cwd, output=self.output, poll_interval=self.poll_interval)
            except OSError as exc:
                raise ServiceFailed(f"run: cannot start {show(argv)}: {exc}") from exc
            self._process, self._service_pid = child, child.pid
            return child, None
        try:
            process, self._fence_fd, report_fd = await spawn_bound(argv, env=env, cwd=self.cwd, output=self.output)
        except OSError as exc:
            await self._forget_process()
            raise ServiceFailed(f"run: cannot start {show(argv)}: {exc}") from exc
        self._process = process
        if report_fd is None:  # no shim: the program itself
            self._service_pid = process.pid
        return process, report_fd

    async def _wait_spawned(self, process: Child, report_fd: int) -> None:
        """Wait for the shim to report the service's pid (so that the start grace
        period measures the service, not the shim's own start-up)."""
        pid = await read_spawned_pid(report_fd, self.start_timeout)
        if pid is None:
            with anyio.move_on_after(1.0):
                await process.wait()
            raise ServiceFailed(f"run: could not start {show(self._argv)} (exit status {process.returncode})")
        self._service_pid = pid

    async def _wait_ready(self, process: Child) -> None:
        name = show(self._argv)
        if self.ready_tcp is None:
            # No readiness signal: require the program to survive a short grace period,
            # which catches "command not found", bad arguments and instant crashes.
            with anyio.move_on_after(self.start_grace):
                code = await process.wait()
                raise ServiceFailed(f"{name} exited with status {code} right after starting")
            return
        host, port = self.ready_tcp
        deadline = anyio.current_time() + self.start_timeout
        delay = 0.005
        while True:
            if process.returncode is not None:
                raise ServiceFailed(
                    f"{name} exited with status {process.returncode} before accepting "
                    f"connections on {format_address(host, port)}"
                )
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                raise ServiceFailed(
                    f"{name} did not accept connections on {format_address(host, port)} "
                    f"within {self.start_timeout:g}s (killed)"
                )
            with anyio.move_on_after(min(remaining, 1.0)):
                try:
                    stream = await anyio.connect_tcp(host, port)
                except OSError:
                    pass
                else:
                    await stream.aclose()
                    return
            # Retry after a short delay, but notice at once if the program dies.
            with anyio.move_on_after(min(delay, max(0.0, deadline - anyio.current_time()))):
                await process.wait()
            delay = min(delay * 2, 0.1)

    # -- stop --------------------------------------------------------------------------
    async def _stop(self) -> None:
        process = self._process
        if process is None:
            return  # never started, or already confirmed stopped
        pgid = process.pid
        self._set_phase("stopping")
        signal_child_group(process, signal.SIGTERM)
        if not await wait_gone(process, self.stop_timeout):
            logger.warning(
                "%s did not exit within %gs of SIGTERM: sending SIGKILL",
                show(self._argv),
                self.stop_timeout,
            )
            signal_child_group(process, signal.SIGKILL)
            if not await wait_gone(process, KILL_GRACE):
                self._set_phase("running")  # still a holder: status reports what it sees
                raise BackendError(
                    f"process group {pgid} is still alive {KILL_GRACE:g}s after SIGKILL "
                    "(uninterruptible sleep?); the service is not confirmed stopped"
                )
        code = process.returncode
        logger.info(
            "stopped %s (%s)",
            show(self._argv),
            f"exit status {code}" if code is not None else "adopted: exit status unknown",
        )
        await self._forget_process()

    async def _forget_process(self) -> None:
        """Drop the (reaped) managed process, its lifeline pipe and its pid file."""
        process, self._process = self._process, None
        self._service_pid = None
        if self._fence_fd is not None:
            os.close(self._fence_fd)
            self._fence_fd = None
        if isinstance(process, FreeChild) and self.pid_file is not None:
            _remove_pid_file(self.pid_file)
        self._set_phase("idle")
        if process is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(KILL_GRACE):
                await process.aclose()

    # -- adoption ----------------------------------------------------------------------
    def _adopt(self) -> None:
        """On the first look at the service, take over the program that a previous hasup
        started and left running (its pid file), or remove a stale pid file."""
        if self._adopt_checked:
            return
        self._adopt_checked = True
        if self.pid_file is None or self._process is not None:
            return
        recorded = _read_pid_file(self.pid_file)
        if recorded is None:
            return
        pid, start_time = recorded
        # Open the pidfd first, then check: if the stat still shows the recorded start
        # time, the pidfd refers to that very process (a reused pid has another one).
        pidfd = pidfd_open(pid)
        stat = proc_stat(pid)
        if stat is not None and stat.start_time == start_time and stat.state not in ("Z", "X"):
            child = FreeChild(pid, start_time, pidfd=pidfd, poll_interval=self.poll_interval)
            self._process = child
            self._service_pid = pid
            self._set_phase("running")
            logger.info(
                "adopted %s (pid %d, from %s): it kept running while hasup was not",
                show(self._argv),
                pid,
                self.pid_file,
            )
            return
        if pidfd is not None:
            os.close(pidfd)
        if (stat is None or stat.start_time == start_time) and group_alive(pid):
            # The program is gone but processes it started still run in its group (the
            # pgid cannot have been reused while they do): failed, not confirmed stopped.
            self._process = FreeChild(pid, start_time, pidfd=None, poll_interval=self.poll_interval, dead=True)
            self._service_pid = pid
            self._set_phase("running")
            logger.warning(
                "%s (pid %d, from %s) has exited but its process group still runs: stop() will clean it up",
                show(self._argv),
                pid,
                self.pid_file,
            )
            return
        why = "has exited" if stat is None or stat.start_time == start_time else "now is another process"
        logger.info("removing the stale pid file %s: pid %d %s", self.pid_file, pid, why)
        _remove_pid_file(self.pid_file)


# -- the pid file ------------------------------------------------------------------------
def _read_pid_file(path: str) -> tuple[int, int] | None:
    """(pid, start time) from a pid file, None if there is none. A malformed one is
    removed (it is written atomically: only someone else can have garbled it)."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        logger.warning("cannot read the pid file %s: %s", path, exc)
        return None
    try:
        pid_text, start_text = text.split()[:2]
        pid, start_time = int(pid_text), int(start_text)
        if pid <= 0:
            raise ValueError(pid)
    except ValueError:
        logger.warning("removing the malformed pid file %s: %r", path, text[:100])
        _remove_pid_file(path)
        return None
    return pid, start_time


def _write_pid_file(path: str, pid: int, start_time: int) -> None:
    """Write ``PID\\nSTART_TIME\\n`` atomically (temp file, fsync, rename, fsync dir)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, f"{pid}\n{start_time}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _remove_pid_file(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        logger.warning("cannot remove the pid file %s: %s", path, exc)
