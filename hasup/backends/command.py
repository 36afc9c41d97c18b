"""The ``command`` backend: manage a service with commands, or run it directly.

Two modes, chosen by the keys of ``[service]``:

* **commands** — ``start``, ``stop`` and (recommended) ``status`` argv lists, e.g. the
  ``systemctl`` or init-script commands of an existing installation. ``status`` follows
  the LSB convention: exit 0 = running, 3 = stopped, anything else = failed.
* **managed process** — ``run = [...]``: hasup spawns the program itself, in its own
  session, and notices its exit the moment it happens (no polling).

Commands are argv lists executed without a shell: nothing in a configuration value is
ever interpreted by ``/bin/sh`` (no quoting bugs, no injection through a file name).
Every command runs in a new session so that a timeout can kill the command *and*
everything it started (its process group).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, ClassVar

import anyio
import attrs
from anyio.abc import ByteReceiveStream, Process

from .._addr import format_address, parse_address
from .._errors import BackendError, ServiceFailed
from ..protocol._enums import ServiceStatus
from .base import ServiceBackend

if TYPE_CHECKING:
    from typing import Self

    from .._section import Section

__all__ = ["CommandBackend", "CommandResult", "run_command"]

logger = logging.getLogger("hasup.backends.command")

#: How long a SIGKILLed process group may take to disappear before stop() gives up.
_KILL_GRACE = 5.0
#: After a command exits, how long its output pipe is drained (a daemon it left behind
#: may hold the pipe open forever).
_DRAIN_AFTER_EXIT = 0.25
_TAIL_BYTES = 8192
_TAIL_LINES = 5

# The managed process is started through this small shim so that it cannot outlive
# hasup: the shim holds the read end of a pipe whose write end only hasup holds. When
# hasup dies (even by SIGKILL or OOM), the pipe reports EOF and the shim SIGKILLs the
# whole process group, fencing the service before a peer takes over (ARCHITECTURE §2
# rule 13: a crashed supervisor must not leave a second active copy behind).
# PR_SET_PDEATHSIG is not enough: it fires when the *thread* that forked exits, and
# trio spawns processes from worker threads.
# The shim ignores SIGTERM (stop() signals the whole group; the shim waits for the
# service) and exits with the service's status, re-raising a terminating signal.
_SHIM = r"""
import os, select, signal, sys
fd, report = int(sys.argv[1]), int(sys.argv[2])
argv = sys.argv[3:]
os.set_inheritable(fd, False)
os.set_inheritable(report, False)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGINT, signal.SIG_IGN)
reset = (signal.SIGTERM, signal.SIGINT, signal.SIGPIPE, signal.SIGXFSZ)
try:
    pid = os.posix_spawnp(argv[0], argv, os.environ, setsigdef=reset)
except OSError as exc:
    sys.stderr.write(f"hasup: cannot run {argv[0]!r}: {exc}\n")
    os._exit(127)
os.write(report, b"%d\n" % pid)
os.close(report)
try:
    pidfd = os.pidfd_open(pid)
except (AttributeError, OSError):
    pidfd = None
while True:
    watched = [fd] if pidfd is None else [fd, pidfd]
    ready = select.select(watched, [], [], None if pidfd is not None else 0.05)[0]
    if fd in ready:
        os.killpg(0, signal.SIGKILL)
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
code = os.waitstatus_to_exitcode(status)
if code < 0:
    signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
    code = 128 - code
os._exit(code)
"""


@attrs.frozen
class CommandResult:
    """How a command ended: its exit status (negative: killed by that signal) and the
    last lines of its output (stdout and stderr)."""

    returncode: int
    output: str
    timed_out: bool = False


async def run_command(
    argv: Sequence[str],
    time_limit: float,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    what: str = "",
) -> CommandResult:
    """Run ``argv`` (no shell) in a new session, collecting the tail of its output.

    After ``time_limit`` seconds the command and its whole process group are killed
    and the result has ``timed_out=True``. Cancellation kills them too. ``OSError``
    if the command cannot be started at all (not found, not executable).
    """
    process = await anyio.open_process(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        env=env,
        start_new_session=True,
    )
    tail = bytearray()
    drained = anyio.Event()
    timed_out = False
    try:
        async with anyio.create_task_group() as tg:
            assert process.stdout is not None
            tg.start_soon(_collect, process.stdout, tail, drained)
            with anyio.move_on_after(time_limit) as waiting:
                await process.wait()
            if waiting.cancelled_caught:
                timed_out = True
                await _kill_and_reap(process)
            else:
                with anyio.move_on_after(_DRAIN_AFTER_EXIT):
                    await drained.wait()
                if not drained.is_set():
                    logger.warning(
                        "%s command %s exited but something it started still holds its output "
                        "pipe; that process may get SIGPIPE (daemonize properly, or use run = [...])",
                        what or "a",
                        _show(argv),
                    )
            tg.cancel_scope.cancel()
    finally:
        if process.returncode is None:  # cancelled from outside: leave nothing behind
            await _kill_and_reap(process)
        with anyio.CancelScope(shield=True):
            await process.aclose()
    assert process.returncode is not None
    return CommandResult(process.returncode, _last_lines(bytes(tail)), timed_out)


class CommandBackend(ServiceBackend):
    """Start, stop and observe a service with argv commands, or run it directly.

    Exactly one of ``run`` (managed process) or ``start`` + ``stop`` (commands) must be
    given. ``status`` (commands mode) is optional but strongly recommended: without it
    hasup trusts the exit codes of ``start``/``stop`` and cannot notice a crash.
    Durations are seconds.
    """

    kind: ClassVar[str] = "command"

    def __init__(
        self,
        *,
        run: Sequence[str] | None = None,
        start: Sequence[str] | None = None,
        stop: Sequence[str] | None = None,
        status: Sequence[str] | None = None,
        kill: Sequence[str] | None = None,
        ready_tcp: str | None = None,
        start_timeout: float = 60.0,
        stop_timeout: float = 30.0,
        status_timeout: float = 5.0,
        poll_interval: float = 1.0,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        output: str = "inherit",
        start_grace: float = 0.05,
    ) -> None:
        if run is not None:
            extra = [n for n, v in (("start", start), ("stop", stop), ("status", status), ("kill", kill)) if v]
            if extra:
                raise ValueError(f"run cannot be combined with {', '.join(extra)}")
        elif start is None or stop is None:
            raise ValueError("give either run, or both start and stop")
        elif ready_tcp is not None:
            raise ValueError("ready_tcp is only for run (managed process) mode")
        for name, argv in (
            ("run", run),
            ("start", start),
            ("stop", stop),
            ("status", status),
            ("kill", kill),
        ):
            if argv is not None and (isinstance(argv, str) or not argv):
                raise ValueError(f"{name} must be a non-empty argv list, not a shell string")
        if output not in ("inherit", "discard"):
            raise ValueError('output must be "inherit" or "discard"')
        self.run_argv = tuple(run) if run is not None else None
        self.start_argv = tuple(start) if start is not None else None
        self.stop_argv = tuple(stop) if stop is not None else None
        self.status_argv = tuple(status) if status is not None else None
        self.kill_argv = tuple(kill) if kill is not None else None
        self.ready_tcp = parse_address(ready_tcp) if ready_tcp is not None else None
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.status_timeout = status_timeout
        self.poll_interval = poll_interval
        self.env = dict(env or {})
        self.cwd = cwd
        self.output = output
        self.start_grace = start_grace
        # commands mode without a status command: what our own commands established.
        self._assumed = ServiceStatus.STOPPED
        # managed mode
        self._process: Process | None = None
        self._fence_fd: int | None = None  # write end of the shim's lifeline pipe
        self._service_pid: int | None = None
        self._phase = "idle"  # idle | starting | running | stopping
        # anyio primitives are created lazily: from_config may run outside an event loop.
        self._lock_obj: anyio.Lock | None = None
        self._changed: anyio.Event | None = None

    # -- configuration ------------------------------------------------------------------
    @classmethod
    def from_config(cls, section: Section) -> Self:
        section.raw("backend")
        run = section.get_argv("run", None)
        commands = {key: section.get_argv(key, None) for key in ("start", "stop", "status", "kill")}
        ready_tcp = section.get_str("ready_tcp", None)
        if run is not None:
            for key, argv in commands.items():
                if argv is not None:
                    raise section.error(key, "cannot be combined with run = [...] (run: hasup runs the program itself)")
        else:
            if commands["start"] is None and commands["stop"] is None:
                raise section.error(
                    None,
                    'the command backend needs run = ["program", ...] (hasup runs it) '
                    "or start = [...], stop = [...] and status = [...]",
                )
            for key, other in (("start", "stop"), ("stop", "start")):
                if commands[key] is None:
                    raise section.error(key, f"is required with {other} = [...]")
            if ready_tcp is not None:
                raise section.error("ready_tcp", "is only for run = [...] (with start, use a status command)")
        if ready_tcp is not None:
            try:
                parse_address(ready_tcp)
            except ValueError as exc:
                raise section.error("ready_tcp", str(exc)) from None
        env: dict[str, str] = {}
        env_table = section.get_table("env")
        if env_table is not None:
            for key in env_table.keys():  # noqa: SIM118 - Section is not a dict
                env[key] = env_table.get_str(key)
            env_table.finish()
        cwd = section.get_str("cwd", None)
        backend = cls(
            run=run,
            start=commands["start"],
            stop=commands["stop"],
            status=commands["status"],
            kill=commands["kill"],
            ready_tcp=ready_tcp,
            start_timeout=section.get_duration("start_timeout", 60.0, min=0.001),
            stop_timeout=section.get_duration("stop_timeout", 30.0, min=0.001),
            status_timeout=section.get_duration("status_timeout", 5.0, min=0.001),
            poll_interval=section.get_duration("poll_interval", 1.0, min=0.01),
            env=env,
            cwd=cwd,
            output=section.get_str("output", "inherit", choices=("inherit", "discard")),
        )
        section.finish()
        return backend

    def describe(self) -> str:
        if self.run_argv is not None:
            ready = f", ready when {format_address(*self.ready_tcp)} accepts" if self.ready_tcp else ""
            return f"command: run {_show(self.run_argv)}{ready}"
        assert self.start_argv is not None
        return f"command: start {_show(self.start_argv)}"

    async def check(self) -> list[str]:
        problems = []
        path = self._environment().get("PATH", os.defpath)
        for name, argv in (
            ("run", self.run_argv),
            ("start", self.start_argv),
            ("stop", self.stop_argv),
            ("status", self.status_argv),
            ("kill", self.kill_argv),
        ):
            if argv is not None and shutil.which(argv[0], path=path) is None:
                problems.append(f"{name} command not found or not executable: {argv[0]!r}")
        if self.cwd is not None and not await anyio.Path(self.cwd).is_dir():
            problems.append(f"cwd is not a directory: {self.cwd!r}")
        if self.run_argv is None and self.status_argv is None:
            problems.append(
                "no status command: hasup cannot notice that the service crashed nor confirm "
                "that stop worked (it trusts the exit codes); add status = [...]"
            )
        return problems

    # -- the ServiceBackend interface -------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """Managed mode: the process group id of the running program (None otherwise).

        ``os.killpg(backend.pid, signal.SIGKILL)`` simulates a crash of the service.
        """
        return self._process.pid if self._process is not None else None

    @property
    def service_pid(self) -> int | None:
        """Managed mode: the pid of the program itself (the group leader is hasup's
        small lifeline shim, see the module source)."""
        return self._service_pid if self._process is not None else None

    async def start(self) -> None:
        async with self._lock():
            if self.run_argv is not None:
                await self._start_managed(self.run_argv)
            else:
                await self._start_commands()

    async def stop(self) -> None:
        async with self._lock():
            if self.run_argv is not None:
                await self._stop_managed()
            else:
                await self._stop_commands()

    async def status(self) -> ServiceStatus:
        if self.run_argv is not None:
            return self._managed_status()
        if self.status_argv is None:
            return self._assumed
        return await self._run_status(self.status_timeout)

    async def watch(self) -> AsyncGenerator[ServiceStatus, None]:
        if self.run_argv is None:
            # the base watch() is an async generator: close it with ours
            polling = super().watch()
            async with aclosing(polling) as statuses:
                async for status in statuses:
                    yield status
            return
        last: ServiceStatus | None = None
        while True:
            changed = self._change_event()  # taken before reading, so no change is missed
            current = self._managed_status()
            if current is not last:
                last = current
                yield current
            await self._wait_for_change(changed)

    # -- commands mode -------------------------------------------------------------------
    async def _start_commands(self) -> None:
        assert self.start_argv is not None
        deadline = anyio.current_time() + self.start_timeout
        try:
            result = await self._run(self.start_argv, self.start_timeout, "start")
        except ServiceFailed:
            self._assumed = ServiceStatus.FAILED
            raise
        if result.returncode != 0:
            self._assumed = ServiceStatus.FAILED
            raise ServiceFailed(f"start command exited with status {result.returncode}{_output_suffix(result.output)}")
        if self.status_argv is None:
            self._assumed = ServiceStatus.RUNNING
            return
        reached, last = await self._poll_status(ServiceStatus.RUNNING, deadline)
        if not reached:
            raise ServiceFailed(
                f"start command succeeded but status did not report running within "
                f"{self.start_timeout:g}s (last: {last.value})"
            )

    async def _stop_commands(self) -> None:
        assert self.stop_argv is not None
        if await self._stop_step(self.stop_argv, "stop"):
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
                    _output_suffix(result.output),
                )
        except ServiceFailed as exc:
            logger.warning("%s", exc)
        if self.status_argv is None:
            return succeeded
        reached, last = await self._poll_status(ServiceStatus.STOPPED, deadline)
        if not reached:
            logger.warning("after the %s command, status still reports %s", what, last.value)
        return reached

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

    async def _run(self, argv: tuple[str, ...], time_limit: float, what: str) -> CommandResult:
        """Run one of the service commands; ServiceFailed if it cannot run or times out."""
        try:
            result = await run_command(argv, time_limit, env=self._environment(), cwd=self.cwd, what=what)
        except OSError as exc:
            raise ServiceFailed(f"{what} command {argv[0]!r} could not be run: {exc}") from exc
        if result.timed_out:
            raise ServiceFailed(
                f"{what} command {_show(argv)} timed out after {time_limit:g}s and was killed"
                f"{_output_suffix(result.output)}"
            )
        return result

    # -- managed process mode -------------------------------------------------------------
    def _managed_status(self) -> ServiceStatus:
        process = self._process
        if process is None:
            return ServiceStatus.STOPPED
        if self._phase == "starting":
            return ServiceStatus.STARTING
        if self._phase == "stopping":
            return ServiceStatus.STOPPING
        if process.returncode is None:
            return ServiceStatus.RUNNING
        # It exited without being asked to: failed, and not yet confirmed stopped (what
        # it started may still run) until stop() has cleaned up its process group.
        return ServiceStatus.FAILED

    async def _start_managed(self, argv: tuple[str, ...]) -> None:
        if self._process is not None:
            if self._process.returncode is None and self._phase == "running":
                return  # already running: start is idempotent
            await self._stop_managed()  # clean up what a crashed run left behind
        program = shutil.which(argv[0], path=self._environment().get("PATH", os.defpath))
        if program is None:
            raise ServiceFailed(f"run: command not found or not executable: {argv[0]!r}")
        if self.cwd is not None and not await anyio.Path(self.cwd).is_dir():
            raise ServiceFailed(f"run: cwd is not a directory: {self.cwd!r}")
        process, report_fd = await self._spawn(argv)
        self._set_phase("starting")
        succeeded = False
        try:
            if report_fd is not None:
                await self._wait_spawned(process, report_fd)
            logger.info("started %s (pid %s)", _show(argv), self._service_pid or process.pid)
            await self._wait_ready(process)
            succeeded = True
        finally:
            if report_fd is not None:
                os.close(report_fd)
            if not succeeded:  # failed or cancelled: do not leave a half-started service
                with anyio.CancelScope(shield=True):
                    await _kill_and_reap(process)
                    await self._wait_group_gone(process.pid, _KILL_GRACE)
                    await self._forget_process()
        self._set_phase("running")

    async def _spawn(self, argv: tuple[str, ...]) -> tuple[Process, int | None]:
        """Start the shim (or, without a Python executable, the program itself).

        Returns the process and the read end of the shim's report pipe, on which the
        shim writes the service's pid once it has spawned it.
        """
        stdio = None if self.output == "inherit" else subprocess.DEVNULL
        command: list[str] = list(argv)
        child_fds: tuple[int, ...] = ()
        report_fd: int | None = None
        if sys.executable:
            lifeline, self._fence_fd = os.pipe()
            report_fd, report_w = os.pipe()
            child_fds = (lifeline, report_w)
            command = [sys.executable, "-I", "-S", "-c", _SHIM, str(lifeline), str(report_w), *argv]
        try:
            self._process = await anyio.open_process(
                command,
                stdin=subprocess.DEVNULL,
                stdout=stdio,
                stderr=stdio,
                cwd=self.cwd,
                env=self._environment(),
                start_new_session=True,
                pass_fds=child_fds,
            )
        except OSError as exc:
            if report_fd is not None:
                os.close(report_fd)
            await self._forget_process()
            raise ServiceFailed(f"run: cannot start {_show(argv)}: {exc}") from exc
        finally:
            for fd in child_fds:
                os.close(fd)
        if report_fd is None:
            self._service_pid = self._process.pid
        return self._process, report_fd

    async def _wait_spawned(self, process: Process, report_fd: int) -> None:
        """Wait for the shim to report the service's pid (so that the start grace
        period measures the service, not the shim's own start-up)."""
        os.set_blocking(report_fd, False)
        data = b""
        with anyio.move_on_after(self.start_timeout):
            while not data.endswith(b"\n"):
                await anyio.wait_readable(report_fd)
                chunk = os.read(report_fd, 64)
                if not chunk:
                    break  # the shim exited without spawning the program
                data += chunk
        if not data.endswith(b"\n"):
            with anyio.move_on_after(1.0):
                await process.wait()
            raise ServiceFailed(f"run: could not start {_show(self.run_argv or ())} (exit status {process.returncode})")
        self._service_pid = int(data)

    async def _wait_ready(self, process: Process) -> None:
        assert self.run_argv is not None
        name = _show(self.run_argv)
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

    async def _stop_managed(self) -> None:
        process = self._process
        if process is None:
            return  # never started, or already confirmed stopped
        pgid = process.pid
        self._set_phase("stopping")
        _signal_group(pgid, signal.SIGTERM)
        if not await self._wait_gone(process, self.stop_timeout):
            logger.warning(
                "%s did not exit within %gs of SIGTERM: sending SIGKILL",
                _show(self.run_argv or ()),
                self.stop_timeout,
            )
            _signal_group(pgid, signal.SIGKILL)
            if not await self._wait_gone(process, _KILL_GRACE):
                self._set_phase("running")  # still a holder: status reports what it sees
                raise BackendError(
                    f"process group {pgid} is still alive {_KILL_GRACE:g}s after SIGKILL "
                    "(uninterruptible sleep?); the service is not confirmed stopped"
                )
        logger.info("stopped %s (exit status %s)", _show(self.run_argv or ()), process.returncode)
        await self._forget_process()

    async def _wait_gone(self, process: Process, time_limit: float) -> bool:
        """Wait until the process is reaped and its group is empty; False on timeout."""
        deadline = anyio.current_time() + time_limit
        with anyio.move_on_after(time_limit):
            await process.wait()
        if process.returncode is None:
            return False
        return await self._wait_group_gone(process.pid, max(0.0, deadline - anyio.current_time()))

    async def _wait_group_gone(self, pgid: int, time_limit: float) -> bool:
        # There is no event for "the last member of a process group exited": poll
        # briefly. Usually the group is already empty when the leader has exited.
        deadline = anyio.current_time() + time_limit
        delay = 0.002
        while _group_alive(pgid):
            if anyio.current_time() >= deadline:
                return False
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.05)
        return True

    async def _forget_process(self) -> None:
        """Drop the (reaped) managed process and its lifeline pipe."""
        process, self._process = self._process, None
        self._service_pid = None
        if self._fence_fd is not None:
            os.close(self._fence_fd)
            self._fence_fd = None
        self._set_phase("idle")
        if process is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(_KILL_GRACE):
                await process.aclose()

    async def _wait_for_change(self, changed: anyio.Event) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            await changed.wait()
            return
        async with anyio.create_task_group() as tg:

            async def exited() -> None:
                await process.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(exited)
            await changed.wait()
            tg.cancel_scope.cancel()

    # -- helpers -------------------------------------------------------------------------
    def _environment(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    def _lock(self) -> anyio.Lock:
        if self._lock_obj is None:
            self._lock_obj = anyio.Lock()
        return self._lock_obj

    def _change_event(self) -> anyio.Event:
        if self._changed is None:
            self._changed = anyio.Event()
        return self._changed

    def _set_phase(self, phase: str) -> None:
        self._phase = phase
        if self._changed is not None:
            self._changed.set()
            self._changed = None


async def _collect(stream: ByteReceiveStream, tail: bytearray, done: anyio.Event) -> None:
    """Keep the last bytes of a command's output."""
    try:
        async for chunk in stream:
            tail.extend(chunk)
            del tail[:-_TAIL_BYTES]
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        pass
    finally:
        done.set()


async def _kill_and_reap(process: Process) -> None:
    """SIGKILL the process and its group and wait for it, even when cancelled."""
    with anyio.CancelScope(shield=True):
        _signal_group(process.pid, signal.SIGKILL)
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        with anyio.move_on_after(_KILL_GRACE):
            await process.wait()


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass  # the group is already gone
    except PermissionError as exc:  # pragma: no cover - a setuid program in the group
        logger.warning("cannot signal process group %d: %s", pgid, exc)


def _group_alive(pgid: int) -> bool:
    """True while a live (non-zombie) process is in process group ``pgid``.

    Reads /proc, because ``killpg(pgid, 0)`` also counts zombies, and in a container
    without an init that reaps orphans those never go away.
    """
    try:
        entries = os.listdir("/proc")
    except OSError:  # pragma: no cover - not Linux
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # exited meanwhile
        # Fields after the command name (which may contain spaces and parentheses).
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


def _last_lines(data: bytes) -> str:
    lines = [line.strip() for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
    return " | ".join(lines[-_TAIL_LINES:])


def _output_suffix(output: str) -> str:
    return f": {output}" if output else ""


def _show(argv: Sequence[Any]) -> str:
    return " ".join(str(a) for a in argv)
