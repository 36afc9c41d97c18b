"""Processes for the ``command`` backend and the ``exec`` probe: spawning, process-group
kill, output handling.

Everything here is shared by the commands mode (:mod:`._commands`), the managed-process
mode (:mod:`._managed`) and :mod:`hasup.probes.exec`; none of it knows about a backend.

Every process runs in a new session, so that a timeout or a stop can signal the
process *and* everything it started (its process group). Commands are argv lists
executed without a shell.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import anyio
import attrs
from anyio.abc import ByteReceiveStream, Process

__all__ = [
    "KILL_GRACE",
    "TERM_VARIABLE",
    "Child",
    "CommandResult",
    "FreeChild",
    "alive",
    "group_alive",
    "kill_and_reap",
    "logger",
    "output_suffix",
    "process_environment",
    "pidfd_open",
    "proc_stat",
    "read_spawned_pid",
    "run_command",
    "show",
    "signal_child_group",
    "spawn_bound",
    "spawn_free",
    "wait_gone",
    "wait_group_gone",
]

# One logger for the whole backend: its name is what users configure.
logger = logging.getLogger("hasup.backends.command")

#: How long a SIGKILLed process group may take to disappear before a stop gives up.
KILL_GRACE = 5.0
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


#: The variable that carries the fencing token (the election term) to the service.
TERM_VARIABLE = "HASUP_TERM"


#: Variables that systemd gives hasup itself: a child that inherited them could send
#: READY=1/WATCHDOG=1 in hasup's name (or claim its sockets).
PRIVATE_VARIABLES = frozenset(
    {"NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"}
)


def process_environment(env: Mapping[str, str], term: int | None = None) -> dict[str, str]:
    """hasup's environment without :data:`PRIVATE_VARIABLES`, plus ``env``; with
    ``term``, also ``HASUP_TERM=<term>`` (it overrides a configured value: the token is
    hasup's to give). Every program hasup starts gets its environment from here."""
    environment = {k: v for k, v in os.environ.items() if k not in PRIVATE_VARIABLES}
    environment.update(env)
    if term is not None:
        environment[TERM_VARIABLE] = str(term)
    return environment


# -- commands that run to completion ----------------------------------------------------
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
    # Shielded: a cancellation that lands while the child is being spawned would leave
    # it running with nobody holding it (seen with a status poll under move_on_after);
    # once spawned, the try/finally below kills and reaps it on any cancellation.
    with anyio.CancelScope(shield=True):
        process = await anyio.open_process(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=process_environment({}) if env is None else env,
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
                await kill_and_reap(process)
            else:
                with anyio.move_on_after(_DRAIN_AFTER_EXIT):
                    await drained.wait()
                if not drained.is_set():
                    logger.warning(
                        "%s command %s exited but something it started still holds its output "
                        "pipe; that process may get SIGPIPE (daemonize properly, or use run = [...])",
                        what or "a",
                        show(argv),
                    )
            tg.cancel_scope.cancel()
    finally:
        if process.returncode is None:  # cancelled from outside: leave nothing behind
            await kill_and_reap(process)
        with anyio.CancelScope(shield=True):
            await process.aclose()
    assert process.returncode is not None
    return CommandResult(process.returncode, _last_lines(bytes(tail)), timed_out)


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


# -- long-running programs ----------------------------------------------------------------
class FreeChild:
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
            stat = proc_stat(self.pid)
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
Child: TypeAlias = Process | FreeChild


def spawn_free(
    argv: Sequence[str], *, env: Mapping[str, str], cwd: str | None, output: str, poll_interval: float
) -> FreeChild:
    """Start the program itself, not bound to hasup: in its own session (it leads its
    process group) and not through asyncio's or trio's process objects, which kill a
    child they still own when they are closed or garbage-collected. ``OSError`` if it
    cannot be started."""
    stdio = None if output == "inherit" else subprocess.DEVNULL
    popen = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=stdio,
        stderr=stdio,
        cwd=cwd,
        env=env,
        start_new_session=True,
    )
    stat = proc_stat(popen.pid)  # our unreaped child: /proc/PID cannot vanish yet
    return FreeChild(
        popen.pid,
        stat.start_time if stat is not None else 0,
        pidfd=pidfd_open(popen.pid),
        popen=popen,
        poll_interval=poll_interval,
    )


async def spawn_bound(
    argv: Sequence[str], *, env: Mapping[str, str], cwd: str | None, output: str
) -> tuple[Process, int | None, int | None]:
    """Start the program through the lifeline shim (or, without a Python executable,
    the program itself), in its own session. ``OSError`` if it cannot be started.

    Returns the process, the write end of the lifeline pipe (the program is SIGKILLed
    once it is closed, by us or by our death) and the read end of the shim's report
    pipe, on which the shim writes the program's pid (see :func:`read_spawned_pid`);
    both are None without the shim.
    """
    stdio = None if output == "inherit" else subprocess.DEVNULL
    command: list[str] = list(argv)
    child_fds: tuple[int, ...] = ()
    fence_fd: int | None = None
    report_fd: int | None = None
    if sys.executable:
        lifeline, fence_fd = os.pipe()
        report_fd, report_w = os.pipe()
        child_fds = (lifeline, report_w)
        command = [sys.executable, "-I", "-S", "-c", _SHIM, str(lifeline), str(report_w), *argv]
    try:
        process = await anyio.open_process(
            command,
            stdin=subprocess.DEVNULL,
            stdout=stdio,
            stderr=stdio,
            cwd=cwd,
            env=env,
            start_new_session=True,
            pass_fds=child_fds,
        )
    except OSError:
        for fd in (report_fd, fence_fd):
            if fd is not None:
                os.close(fd)
        raise
    finally:
        for fd in child_fds:
            os.close(fd)
    return process, fence_fd, report_fd


async def read_spawned_pid(report_fd: int, time_limit: float) -> int | None:
    """The program's pid as the shim reports it once it has spawned the program; None
    if the shim exits without spawning it or does not report within ``time_limit``."""
    os.set_blocking(report_fd, False)
    data = b""
    with anyio.move_on_after(time_limit):
        while not data.endswith(b"\n"):
            await anyio.wait_readable(report_fd)
            chunk = os.read(report_fd, 64)
            if not chunk:
                break  # the shim exited without spawning the program
            data += chunk
    return int(data) if data.endswith(b"\n") else None


def alive(process: Child) -> bool:
    if isinstance(process, FreeChild):
        return not process.exited
    return process.returncode is None


async def wait_gone(process: Child, time_limit: float) -> bool:
    """Wait until the process has exited (and, if it is our child, is reaped) and its
    group is empty; False on timeout."""
    deadline = anyio.current_time() + time_limit
    with anyio.move_on_after(time_limit):
        await process.wait()
    if alive(process):
        return False
    return await wait_group_gone(process.pid, max(0.0, deadline - anyio.current_time()))


async def wait_group_gone(pgid: int, time_limit: float) -> bool:
    """Wait until no live process is left in process group ``pgid``; False on timeout."""
    # There is no event for "the last member of a process group exited": poll
    # briefly. Usually the group is already empty when the leader has exited.
    deadline = anyio.current_time() + time_limit
    delay = 0.002
    while group_alive(pgid):
        if anyio.current_time() >= deadline:
            return False
        await anyio.sleep(delay)
        delay = min(delay * 2, 0.05)
    return True


async def kill_and_reap(process: Child) -> None:
    """SIGKILL the process and its group and wait for it, even when cancelled."""
    with anyio.CancelScope(shield=True):
        signal_child_group(process, signal.SIGKILL)
        if alive(process):
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        with anyio.move_on_after(KILL_GRACE):
            await process.wait()


def signal_child_group(process: Child, signum: int) -> None:
    """Signal the program's process group; a group whose leader has exited and that is
    empty is left alone (its number may belong to someone else by now)."""
    if isinstance(process, FreeChild) and process.exited and not group_alive(process.pid):
        return
    _signal_group(process.pid, signum)


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass  # the group is already gone
    except PermissionError as exc:  # pragma: no cover - a setuid program in the group
        logger.warning("cannot signal process group %d: %s", pgid, exc)


def group_alive(pgid: int) -> bool:
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


@attrs.frozen
class ProcStat:
    state: str
    pgid: int
    start_time: int  # clock ticks after boot: with the pid, identifies one process


def proc_stat(pid: int) -> ProcStat | None:
    """Fields 3, 5 and 22 of /proc/PID/stat, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # Fields after the command name (which may contain spaces and parentheses).
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        return ProcStat(fields[0].decode(), int(fields[2]), int(fields[19]))
    except (IndexError, ValueError):  # pragma: no cover - not Linux's format
        return None


def pidfd_open(pid: int) -> int | None:
    """A pidfd for ``pid`` (readable once it exits), or None: no such process, or no
    pidfd_open (Linux < 5.3, seccomp)."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


# -- output ---------------------------------------------------------------------------------
def _last_lines(data: bytes) -> str:
    lines = [line.strip() for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
    return " | ".join(lines[-_TAIL_LINES:])


def output_suffix(output: str) -> str:
    """``": <output>"`` for an error message, or nothing when there was no output."""
    return f": {output}" if output else ""


def show(argv: Sequence[Any]) -> str:
    """An argv list as one line for logs and messages."""
    return " ".join(str(a) for a in argv)
