"""The ``command`` backend: manage a service with commands, or run it directly.

Two modes, chosen by the keys of ``[service]``:

* **commands** — ``start``, ``stop`` and (recommended) ``status`` argv lists, e.g. the
  ``systemctl`` or init-script commands of an existing installation. ``status`` follows
  the LSB convention: exit 0 = running, 3 = stopped, anything else = failed.
* **managed process** — ``run = [...]``: hasup spawns the program itself, in its own
  session, and notices its exit the moment it happens (no polling). By default the
  program outlives hasup: its pid is kept in ``pid_file`` and a restarted hasup adopts
  it (ARCHITECTURE §2 rules 6 and 13). ``bind_to_hasup = true`` fences it instead: it
  is SIGKILLed when hasup dies.

Commands are argv lists executed without a shell: nothing in a configuration value is
ever interpreted by ``/bin/sh`` (no quoting bugs, no injection through a file name).
Every command runs in a new session so that a timeout can kill the command *and*
everything it started (its process group).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias

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

# With bind_to_hasup = true, the managed process is started through this small shim so
# that it cannot outlive hasup: the shim holds the read end of a pipe whose write end only hasup holds. When
# hasup dies (even by SIGKILL or OOM), the pipe reports EOF and the shim SIGKILLs the
# whole process group, fencing the service before a peer takes over (ARCHITECTURE §2
# rule 13's opt-in hard binding: a crashed supervisor never leaves a copy behind, at the
# price of a blip on every restart of hasup).
# PR_SET_PDEATHSIG is not enough: it fires when the *thread* that forked exits, and
# trio spawns processes from worker threads.
# The shim ignores SIGTERM (stop() signals the whole group; the shim waits for the
# service) and exits with the service's status, re-raising a terminating signal
# (SIGKILL and SIGSTOP cannot be given a disposition: they are simply sent again).
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
    if -code not in (signal.SIGKILL, signal.SIGSTOP):
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

    Managed mode: with ``bind_to_hasup=False`` (the default) the program outlives hasup;
    give ``pid_file`` so that a restarted hasup adopts it (``Config.make_backend``
    defaults it to ``<state_dir>/service.pid``). ``bind_to_hasup=True`` kills it with
    hasup (fencing).
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
        bind_to_hasup: bool = False,
        pid_file: str | None = None,
    ) -> None:
        if run is not None:
            extra = [n for n, v in (("start", start), ("stop", stop), ("status", status), ("kill", kill)) if v]
            if extra:
                raise ValueError(f"run cannot be combined with {', '.join(extra)}")
        elif start is None or stop is None:
            raise ValueError("give either run, or both start and stop")
        else:
            for name, value in (("ready_tcp", ready_tcp), ("bind_to_hasup", bind_to_hasup), ("pid_file", pid_file)):
                if value:
                    raise ValueError(f"{name} is only for run (managed process) mode")
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
        self.bind_to_hasup = bind_to_hasup
        self.pid_file = pid_file
        # commands mode without a status command: what our own commands established.
        self._assumed = ServiceStatus.STOPPED
        # managed mode
        self._process: _Child | None = None
        self._fence_fd: int | None = None  # write end of the shim's lifeline pipe
        self._service_pid: int | None = None
        self._phase = "idle"  # idle | starting | running | stopping
        self._adopt_checked = False  # the pid file is read once, by the first call
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
        bind_to_hasup = section.get_bool("bind_to_hasup", False)
        pid_file = section.get_str("pid_file", None)
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
            if bind_to_hasup:
                raise section.error("bind_to_hasup", "is only for run = [...] (with start, bind the units instead)")
            if pid_file is not None:
                raise section.error("pid_file", "is only for run = [...]")
        if pid_file is not None and not pid_file:
            raise section.error("pid_file", "must not be empty")
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
            bind_to_hasup=bind_to_hasup,
            pid_file=pid_file,
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
        if self.run_argv is not None and not self.bind_to_hasup and self.pid_file is None:
            problems.append(
                "run without bind_to_hasup and without pid_file: the program outlives hasup, "
                "but a restarted hasup cannot find it and would start a second copy"
            )
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
        Without ``bind_to_hasup`` it is also the program's own pid.
        """
        return self._process.pid if self._process is not None else None

    @property
    def service_pid(self) -> int | None:
        """Managed mode: the pid of the program itself (with ``bind_to_hasup`` the group
        leader is hasup's small lifeline shim, see the module source)."""
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
            self._adopt()
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
            self._adopt()
            changed = self._change_event()  # taken before reading, so no change is missed
            current = self._managed_status()
            if current is not last:
                last = current
                yield current
                continue  # look again: it may have changed while the consumer ran
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
        if _alive(process):
            return ServiceStatus.RUNNING
        # It exited without being asked to: failed, and not yet confirmed stopped (what
        # it started may still run) until stop() has cleaned up its process group.
        return ServiceStatus.FAILED

    async def _start_managed(self, argv: tuple[str, ...]) -> None:
        self._adopt()
        if self._process is not None:
            if _alive(self._process) and self._phase == "running":
                return  # already running: start is idempotent
            await self._stop_managed()  # clean up what a crashed run left behind
        program = shutil.which(argv[0], path=self._environment().get("PATH", os.defpath))
        if program is None:
            raise ServiceFailed(f"run: command not found or not executable: {argv[0]!r}")
        if self.cwd is not None and not await anyio.Path(self.cwd).is_dir():
            raise ServiceFailed(f"run: cwd is not a directory: {self.cwd!r}")
        process: _Child
        report_fd: int | None = None
        if self.bind_to_hasup:
            process, report_fd = await self._spawn(argv)
        else:
            process = self._spawn_free(argv)
        self._set_phase("starting")
        succeeded = False
        try:
            if report_fd is not None:
                await self._wait_spawned(process, report_fd)
            if isinstance(process, _FreeChild) and self.pid_file is not None:
                try:
                    await anyio.to_thread.run_sync(_write_pid_file, self.pid_file, process.pid, process.start_time)
                except OSError as exc:
                    # Without it a restarted hasup would start a second copy: refuse.
                    raise ServiceFailed(f"run: cannot write the pid file {self.pid_file}: {exc}") from exc
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

    def _spawn_free(self, argv: tuple[str, ...]) -> _FreeChild:
        """Start the program itself, not bound to hasup: in its own session (it leads its
        process group) and not through asyncio's or trio's process objects, which kill a
        child they still own when they are closed or garbage-collected."""
        stdio = None if self.output == "inherit" else subprocess.DEVNULL
        try:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=stdio,
                stderr=stdio,
                cwd=self.cwd,
                env=self._environment(),
                start_new_session=True,
            )
        except OSError as exc:
            raise ServiceFailed(f"run: cannot start {_show(argv)}: {exc}") from exc
        stat = _proc_stat(popen.pid)  # our unreaped child: /proc/PID cannot vanish yet
        child = _FreeChild(
            popen.pid,
            stat.start_time if stat is not None else 0,
            pidfd=_pidfd_open(popen.pid),
            popen=popen,
            poll_interval=self.poll_interval,
        )
        self._process = child
        self._service_pid = popen.pid
        return child

    def _adopt(self) -> None:
        """On the first look at the service, take over the program that a previous hasup
        started and left running (its pid file), or remove a stale pid file."""
        if self._adopt_checked or self.run_argv is None:
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
        pidfd = _pidfd_open(pid)
        stat = _proc_stat(pid)
        if stat is not None and stat.start_time == start_time and stat.state not in ("Z", "X"):
            child = _FreeChild(pid, start_time, pidfd=pidfd, poll_interval=self.poll_interval)
            self._process = child
            self._service_pid = pid
            self._set_phase("running")
            logger.info(
                "adopted %s (pid %d, from %s): it kept running while hasup was not",
                _show(self.run_argv),
                pid,
                self.pid_file,
            )
            return
        if pidfd is not None:
            os.close(pidfd)
        if (stat is None or stat.start_time == start_time) and _group_alive(pid):
            # The program is gone but processes it started still run in its group (the
            # pgid cannot have been reused while they do): failed, not confirmed stopped.
            self._process = _FreeChild(pid, start_time, pidfd=None, poll_interval=self.poll_interval, dead=True)
            self._service_pid = pid
            self._set_phase("running")
            logger.warning(
                "%s (pid %d, from %s) has exited but its process group still runs: stop() will clean it up",
                _show(self.run_argv),
                pid,
                self.pid_file,
            )
            return
        why = "has exited" if stat is None or stat.start_time == start_time else "now is another process"
        logger.info("removing the stale pid file %s: pid %d %s", self.pid_file, pid, why)
        _remove_pid_file(self.pid_file)

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

    async def _wait_spawned(self, process: _Child, report_fd: int) -> None:
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

    async def _wait_ready(self, process: _Child) -> None:
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
        _signal_child_group(process, signal.SIGTERM)
        if not await self._wait_gone(process, self.stop_timeout):
            logger.warning(
                "%s did not exit within %gs of SIGTERM: sending SIGKILL",
                _show(self.run_argv or ()),
                self.stop_timeout,
            )
            _signal_child_group(process, signal.SIGKILL)
            if not await self._wait_gone(process, _KILL_GRACE):
                self._set_phase("running")  # still a holder: status reports what it sees
                raise BackendError(
                    f"process group {pgid} is still alive {_KILL_GRACE:g}s after SIGKILL "
                    "(uninterruptible sleep?); the service is not confirmed stopped"
                )
        code = process.returncode
        logger.info(
            "stopped %s (%s)",
            _show(self.run_argv or ()),
            f"exit status {code}" if code is not None else "adopted: exit status unknown",
        )
        await self._forget_process()

    async def _wait_gone(self, process: _Child, time_limit: float) -> bool:
        """Wait until the process has exited (and, if it is our child, is reaped) and its
        group is empty; False on timeout."""
        deadline = anyio.current_time() + time_limit
        with anyio.move_on_after(time_limit):
            await process.wait()
        if _alive(process):
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
        """Drop the (reaped) managed process, its lifeline pipe and its pid file."""
        process, self._process = self._process, None
        self._service_pid = None
        if self._fence_fd is not None:
            os.close(self._fence_fd)
            self._fence_fd = None
        if isinstance(process, _FreeChild) and self.pid_file is not None:
            _remove_pid_file(self.pid_file)
        self._set_phase("idle")
        if process is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(_KILL_GRACE):
                await process.aclose()

    async def _wait_for_change(self, changed: anyio.Event) -> None:
        process = self._process
        if process is None or not _alive(process):
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


class _FreeChild:
    """A managed program that is not bound to hasup's life.

    Either this hasup started it (``popen`` is set: we are its parent and reap it) or it
    was adopted from the pid file of a previous hasup (someone else is its parent). Its
    exit is an event on a pidfd (Linux >= 5.3) that works without being the parent;
    without pidfd_open, /proc is polled every ``poll_interval`` (our own child: 50 ms).
    """

    def __init__(
        self,
        pid: int,
        start_time: int,
        *,
        pidfd: int | None,
        poll_interval: float,
        popen: subprocess.Popen[bytes] | None = None,
        dead: bool = False,
    ) -> None:
        self.pid = pid
        self.start_time = start_time
        self.pidfd = pidfd
        self.popen = popen
        self.poll_interval = poll_interval
        self._dead = dead

    @property
    def returncode(self) -> int | None:
        """The exit status once reaped; always None for an adopted process (unknowable)."""
        return self.popen.returncode if self.popen is not None else None

    @property
    def exited(self) -> bool:
        """True once the program has exited (our own child is reaped here)."""
        if self._dead:
            return True
        if self.popen is not None:
            self._dead = self.popen.poll() is not None
        elif self.pidfd is not None:
            self._dead = bool(select.select([self.pidfd], [], [], 0)[0])
        else:
            stat = _proc_stat(self.pid)
            self._dead = stat is None or stat.state in ("Z", "X") or stat.start_time != self.start_time
        return self._dead

    async def wait(self) -> int | None:
        while not self.exited:
            if self.pidfd is None:
                # No exit event without pidfd_open (Linux < 5.3): poll.
                await anyio.sleep(self.poll_interval if self.popen is None else min(self.poll_interval, 0.05))
                continue
            # A private duplicate per waiter: watch() and stop() may wait at once, and
            # one descriptor can have only one waiter.
            fd = os.dup(self.pidfd)
            try:
                await anyio.wait_readable(fd)
            finally:
                anyio.notify_closing(fd)
                os.close(fd)
        return self.returncode

    def kill(self) -> None:
        if self.exited:
            return
        with contextlib.suppress(ProcessLookupError):
            if self.pidfd is not None:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            else:
                os.kill(self.pid, signal.SIGKILL)

    async def aclose(self) -> None:
        if self.pidfd is not None:
            anyio.notify_closing(self.pidfd)
            os.close(self.pidfd)
            self.pidfd = None


#: A managed program: the shim (bind_to_hasup) or the program itself.
_Child: TypeAlias = Process | _FreeChild


def _alive(process: _Child) -> bool:
    if isinstance(process, _FreeChild):
        return not process.exited
    return process.returncode is None


def _signal_child_group(process: _Child, signum: int) -> None:
    """Signal the program's process group; a group whose leader has exited and that is
    empty is left alone (its number may belong to someone else by now)."""
    if isinstance(process, _FreeChild) and process.exited and not _group_alive(process.pid):
        return
    _signal_group(process.pid, signum)


@attrs.frozen
class _ProcStat:
    state: str
    pgid: int
    start_time: int  # clock ticks after boot: with the pid, identifies one process


def _proc_stat(pid: int) -> _ProcStat | None:
    """Fields 3, 5 and 22 of /proc/PID/stat, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # Fields after the command name (which may contain spaces and parentheses).
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        return _ProcStat(fields[0].decode(), int(fields[2]), int(fields[19]))
    except (IndexError, ValueError):  # pragma: no cover - not Linux's format
        return None


def _pidfd_open(pid: int) -> int | None:
    """A pidfd for ``pid`` (readable once it exits), or None: no such process, or no
    pidfd_open (Linux < 5.3, seccomp)."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


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
    """Write ``PID\nSTART_TIME\n`` atomically (temp file, fsync, rename, fsync dir)."""
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


async def _kill_and_reap(process: _Child) -> None:
    """SIGKILL the process and its group and wait for it, even when cancelled."""
    with anyio.CancelScope(shield=True):
        _signal_child_group(process, signal.SIGKILL)
        if _alive(process):
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
