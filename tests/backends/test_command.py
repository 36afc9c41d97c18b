"""The command backend: commands mode (start/stop/status) and managed-process mode (run)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import tomllib
from contextlib import aclosing
from pathlib import Path

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from hasup._errors import BackendError, ConfigError, ServiceFailed
from hasup._section import Section, Source
from hasup.backends import load_backend_class
from hasup.backends.command import CommandBackend
from hasup.config import parse_config
from hasup.protocol._enums import ServiceStatus

from .._support import wait_until

pytestmark = pytest.mark.anyio


def section(toml: str) -> Section:
    text = '[service]\nbackend = "command"\n' + textwrap.dedent(toml)
    return Section(tomllib.loads(text)["service"], path="service", source=Source("hasup.toml", text))


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def read_pid(path: Path) -> int:
    """The pid a test program wrote, waiting (with a deadline) for it to appear."""
    file = anyio.Path(path)
    with anyio.fail_after(5):
        # A file written by another process signals no event: poll it, with a deadline.
        while not (await file.exists() and (await file.read_text()).strip()):
            await anyio.sleep(0.01)
    return int(await file.read_text())


def start_time(pid: int) -> int:
    """Field 22 of /proc/PID/stat: with the pid, it names one process."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        return int(f.read().rsplit(b")", 1)[1].split()[19])


@pytest.fixture(params=[False, True], ids=["unbound", "bound"])
def bind(request: pytest.FixtureRequest) -> bool:
    """Managed-process tests that must hold with and without bind_to_hasup."""
    value: bool = request.param
    return value


def fake_service(tmp: Path, **kwargs: object) -> CommandBackend:
    """A 'service' that is running while a state file exists (LSB status: 0 or 3)."""
    state = str(tmp / "state")
    options: dict[str, object] = {
        "start": ["touch", state],
        "stop": ["rm", "-f", state],
        "status": ["sh", "-c", f'test -e "{state}" || exit 3'],
        "poll_interval": 0.05,
    }
    options.update(kwargs)
    return CommandBackend(**options)  # type: ignore[arg-type]


# -- commands mode ----------------------------------------------------------------------------


async def test_start_stop_status(tmp_path: Path) -> None:
    backend = fake_service(tmp_path)
    assert await backend.status() is ServiceStatus.STOPPED
    await backend.start()
    assert await backend.status() is ServiceStatus.RUNNING
    await backend.stop()
    assert await backend.status() is ServiceStatus.STOPPED
    await backend.stop()  # idempotent
    assert await backend.status() is ServiceStatus.STOPPED


@pytest.mark.parametrize(("code", "status"), [(0, "running"), (3, "stopped"), (1, "failed"), (4, "failed")])
async def test_lsb_exit_codes(code: int, status: str) -> None:
    backend = CommandBackend(start=["true"], stop=["true"], status=["sh", "-c", f"exit {code}"])
    assert (await backend.status()).value == status


async def test_status_timeout_is_unknown_and_killed(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    backend = CommandBackend(
        start=["true"],
        stop=["true"],
        status=["sh", "-c", f"sleep 30 & echo $! > {pidfile}; wait"],
        status_timeout=0.3,
    )
    with anyio.fail_after(5):
        assert await backend.status() is ServiceStatus.UNKNOWN
    child = await read_pid(pidfile)
    wait_until(lambda: not alive(child), timeout=5, what="the status command's child to be killed")


async def test_start_failure_reports_exit_code_and_output() -> None:
    script = "echo line1; echo line2 >&2; echo 'unit neuronex not found' >&2; exit 5"
    backend = CommandBackend(start=["sh", "-c", script], stop=["true"])
    with pytest.raises(
        ServiceFailed,
        match=re.escape("start command exited with status 5: line1 | line2 | unit neuronex not found"),
    ):
        await backend.start()
    assert await backend.status() is ServiceStatus.FAILED  # no status command: not confirmed stopped


async def test_start_timeout_kills_the_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    backend = CommandBackend(
        start=["sh", "-c", f"sleep 30 & echo $! > {pidfile}; wait"], stop=["true"], start_timeout=0.3
    )
    with anyio.fail_after(5), pytest.raises(ServiceFailed, match=r"start command .* timed out after 0.3s"):
        await backend.start()
    child = await read_pid(pidfile)
    wait_until(lambda: not alive(child), timeout=5, what="the start command's child to be killed")


async def test_start_waits_for_status_running(tmp_path: Path) -> None:
    state = tmp_path / "state"
    # The start command returns at once; the service becomes "running" a bit later.
    start = ["sh", "-c", f"(sleep 0.3; touch {state}) >/dev/null 2>&1 &"]
    backend = fake_service(tmp_path, start=start)
    with anyio.fail_after(5):
        await backend.start()
    assert state.exists()


async def test_start_not_confirmed_running(tmp_path: Path) -> None:
    backend = fake_service(tmp_path, start=["true"], start_timeout=0.3)
    with (
        anyio.fail_after(5),
        pytest.raises(ServiceFailed, match=r"did not report running within 0.3s \(last: stopped\)"),
    ):
        await backend.start()


async def test_stop_escalates_to_kill_command(tmp_path: Path) -> None:
    state = tmp_path / "state"
    backend = fake_service(tmp_path, stop=["true"], kill=["rm", "-f", str(state)], stop_timeout=0.2)
    await backend.start()
    with anyio.fail_after(5):
        await backend.stop()
    assert await backend.status() is ServiceStatus.STOPPED


async def test_stop_not_confirmed_raises(tmp_path: Path) -> None:
    backend = fake_service(tmp_path, stop=["true"], stop_timeout=0.2)
    await backend.start()
    with anyio.fail_after(5), pytest.raises(BackendError, match="could not confirm that the service stopped"):
        await backend.stop()
    assert await backend.status() is ServiceStatus.RUNNING


async def test_stop_timeout_then_kill(tmp_path: Path) -> None:
    state = tmp_path / "state"
    backend = fake_service(tmp_path, stop=["sleep", "30"], kill=["rm", "-f", str(state)], stop_timeout=0.2)
    await backend.start()
    with anyio.fail_after(5):
        await backend.stop()
    assert not state.exists()


async def test_without_status_command_trusts_exit_codes() -> None:
    backend = CommandBackend(start=["true"], stop=["true"])
    assert await backend.status() is ServiceStatus.STOPPED
    await backend.start()
    assert await backend.status() is ServiceStatus.RUNNING
    await backend.stop()
    assert await backend.status() is ServiceStatus.STOPPED
    failing = CommandBackend(start=["true"], stop=["false"])
    await failing.start()
    with pytest.raises(BackendError, match="no kill command configured"):
        await failing.stop()
    assert any("no status command" in p for p in await failing.check())


async def test_env_and_cwd(tmp_path: Path) -> None:
    backend = CommandBackend(
        start=["sh", "-c", 'echo "$HASUP_TEST_VALUE" > out'],
        stop=["true"],
        env={"HASUP_TEST_VALUE": "x y"},
        cwd=str(tmp_path),
    )
    await backend.start()
    assert (tmp_path / "out").read_text() == "x y\n"


async def test_missing_command_is_service_failed() -> None:
    backend = CommandBackend(start=["/nonexistent/start"], stop=["true"])
    with pytest.raises(ServiceFailed, match="start command '/nonexistent/start' could not be run"):
        await backend.start()


async def test_polling_watch(tmp_path: Path) -> None:
    backend = fake_service(tmp_path)
    seen: list[ServiceStatus] = []
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                async with aclosing(backend.watch()) as statuses:
                    async for status in statuses:
                        seen.append(status)
                        if status is ServiceStatus.RUNNING:
                            tg.cancel_scope.cancel()

            tg.start_soon(watch)
            (tmp_path / "state").touch()  # the service starts behind hasup's back
    assert seen == [ServiceStatus.STOPPED, ServiceStatus.RUNNING] or seen == [ServiceStatus.RUNNING]


async def test_check_reports_problems(tmp_path: Path) -> None:
    backend = CommandBackend(
        start=["no-such-program-xyz"], stop=["true"], status=["true"], cwd=str(tmp_path / "nope")
    )
    problems = await backend.check()
    assert "start command not found or not executable: 'no-such-program-xyz'" in problems
    assert any("cwd is not a directory" in p for p in problems)
    assert await fake_service(tmp_path).check() == []


# -- configuration ----------------------------------------------------------------------------


def test_from_config_commands() -> None:
    backend = CommandBackend.from_config(
        section(
            """
            start = ["systemctl", "start", "neuronex"]
            stop = ["systemctl", "stop", "neuronex"]
            status = ["systemctl", "is-active", "--quiet", "neuronex"]
            kill = ["systemctl", "kill", "-s", "KILL", "neuronex"]
            start_timeout = "20s"
            stop_timeout = "10s"
            status_timeout = "2s"
            poll_interval = "500ms"
            cwd = "/"
            env = { LANG = "C" }
            """
        )
    )
    assert backend.start_argv == ("systemctl", "start", "neuronex")
    assert backend.kill_argv == ("systemctl", "kill", "-s", "KILL", "neuronex")
    assert (backend.start_timeout, backend.stop_timeout, backend.status_timeout) == (20, 10, 2)
    assert backend.poll_interval == 0.5
    assert backend.env == {"LANG": "C"}
    assert backend.describe() == "command: start systemctl start neuronex"
    assert load_backend_class("command") is CommandBackend


def test_from_config_run() -> None:
    backend = CommandBackend.from_config(
        section(
            'run = ["python3", "-m", "http.server", "8085"]\nready_tcp = "127.0.0.1:8085"\noutput = "discard"'
        )
    )
    assert backend.run_argv == ("python3", "-m", "http.server", "8085")
    assert backend.ready_tcp == ("127.0.0.1", 8085)
    assert backend.describe() == "command: run python3 -m http.server 8085, ready when 127.0.0.1:8085 accepts"
    assert backend.bind_to_hasup is False  # the service outlives hasup by default (rule 13)
    assert backend.pid_file is None
    bound = CommandBackend.from_config(section('run = ["x"]\nbind_to_hasup = true\npid_file = "/run/x.pid"'))
    assert bound.bind_to_hasup is True
    assert bound.pid_file == "/run/x.pid"


CONFIG = """
[node]
name = "edge-a"
priority = 100
state_dir = "/var/lib/hasup-test"
[group]
id = 51
listen = "127.0.0.1:5405"
peers = ["127.0.0.2:5405"]
key = "a-long-enough-shared-secret"
[service]
backend = "command"
"""


def test_make_backend_defaults_the_pid_file_to_the_state_dir() -> None:
    backend = parse_config(CONFIG + 'run = ["x"]').make_backend()
    assert isinstance(backend, CommandBackend)
    assert backend.pid_file == "/var/lib/hasup-test/service.pid"
    backend = parse_config(CONFIG + 'run = ["x"]\npid_file = "/run/x.pid"').make_backend()
    assert isinstance(backend, CommandBackend)
    assert backend.pid_file == "/run/x.pid"
    backend = parse_config(CONFIG + 'start = ["x"]\nstop = ["y"]').make_backend()
    assert isinstance(backend, CommandBackend)
    assert backend.pid_file is None


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            'start = "systemctl start neuronex"\nstop = ["x"]',
            "service.start: commands are argv lists, not shell strings",
        ),
        ('run = ["x"]\nstart = ["y"]', "service.start: cannot be combined with run"),
        ('run = ["x"]\nstatus = ["y"]', "service.status: cannot be combined with run"),
        ("", "service: the command backend needs run"),
        ('start = ["x"]', "service.stop: is required with start"),
        ('stop = ["x"]', "service.start: is required with stop"),
        ('start = ["x"]\nstop = ["y"]\nready_tcp = "127.0.0.1:1"', "service.ready_tcp: is only for run"),
        ('run = ["x"]\nready_tcp = "localhost"', "service.ready_tcp: 'localhost': missing ':port'"),
        ('run = ["x"]\nstart_timeout = 5', "service.start_timeout: expected a duration string"),
        ('run = ["x"]\nenv = { A = 1 }', "service.env.A: expected a string"),
        ('run = ["x"]\noutput = "syslog"', "service.output: must be one of"),
        ('run = ["x"]\nstart_tiemout = "5s"', "service.start_tiemout: unknown key"),
        ("run = []", "service.run: expected a non-empty list"),
        ('start = ["x"]\nstop = ["y"]\nbind_to_hasup = true', "service.bind_to_hasup: is only for run"),
        ('start = ["x"]\nstop = ["y"]\npid_file = "/run/x.pid"', "service.pid_file: is only for run"),
        ('run = ["x"]\nbind_to_hasup = "yes"', "service.bind_to_hasup: expected"),
    ],
)
def test_config_errors(toml: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as info:
        CommandBackend.from_config(section(toml))
    assert str(info.value).startswith("hasup.toml: ")


def test_config_error_has_line() -> None:
    with pytest.raises(ConfigError, match=r"\(line 4\)"):
        CommandBackend.from_config(section('start = ["x"]\nstop = "y z"'))


# -- managed process mode -----------------------------------------------------------------------


@pytest.fixture
def http_server_argv() -> tuple[list[str], int]:
    port = free_port()
    return [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)], port


async def test_run_http_server_ready_tcp(http_server_argv: tuple[list[str], int]) -> None:
    argv, port = http_server_argv
    backend = CommandBackend(run=argv, ready_tcp=f"127.0.0.1:{port}", output="discard", stop_timeout=5)
    assert await backend.status() is ServiceStatus.STOPPED
    with anyio.fail_after(10):
        await backend.start()
    assert await backend.status() is ServiceStatus.RUNNING
    stream = await anyio.connect_tcp("127.0.0.1", port)  # ready means accepting
    await stream.aclose()
    pid = backend.pid
    assert pid is not None
    await backend.start()  # idempotent: same process
    assert backend.pid == pid
    with anyio.fail_after(10):
        await backend.stop()
    assert await backend.status() is ServiceStatus.STOPPED
    assert backend.pid is None
    assert not alive(pid)
    with pytest.raises(OSError, match=r"connection attempts failed|refused"):
        await anyio.connect_tcp("127.0.0.1", port)
    await backend.stop()  # idempotent


async def test_run_exits_immediately(bind: bool) -> None:
    backend = CommandBackend(run=["sh", "-c", "exit 7"], bind_to_hasup=bind)
    with anyio.fail_after(5), pytest.raises(ServiceFailed, match="exited with status 7 right after starting"):
        await backend.start()
    assert await backend.status() is ServiceStatus.STOPPED


async def test_run_program_not_found() -> None:
    backend = CommandBackend(run=["no-such-program-xyz", "--flag"])
    with pytest.raises(ServiceFailed, match="command not found or not executable: 'no-such-program-xyz'"):
        await backend.start()


async def test_run_exits_before_ready() -> None:
    backend = CommandBackend(run=["sh", "-c", "read x; exit 2"], ready_tcp=f"127.0.0.1:{free_port()}")
    # stdin is /dev/null: `read` fails and the program exits 2 without listening.
    with (
        anyio.fail_after(5),
        pytest.raises(ServiceFailed, match="exited with status 2 before accepting connections"),
    ):
        await backend.start()


async def test_run_never_ready_is_killed(tmp_path: Path, bind: bool) -> None:
    pidfile = tmp_path / "pid"
    backend = CommandBackend(
        run=["sh", "-c", f"echo $$ > {pidfile}; exec sleep 30"],
        ready_tcp=f"127.0.0.1:{free_port()}",
        start_timeout=0.5,
        bind_to_hasup=bind,
        pid_file=str(tmp_path / "service.pid"),
    )
    with (
        anyio.fail_after(5),
        pytest.raises(ServiceFailed, match=r"did not accept connections .* within 0.5s"),
    ):
        await backend.start()
    pid = await read_pid(pidfile)
    assert not alive(pid)
    assert await backend.status() is ServiceStatus.STOPPED
    assert not (tmp_path / "service.pid").exists()


async def test_watch_reports_crash_at_once(tmp_path: Path, bind: bool) -> None:
    pidfile = tmp_path / "pid"
    # poll_interval of an hour: a FAILED within the deadline proves watch() is event-driven.
    backend = CommandBackend(
        run=["sh", "-c", f"echo $$ > {pidfile}; exec sleep 60"], poll_interval=3600, bind_to_hasup=bind
    )
    await backend.start()
    pid = await read_pid(pidfile)
    seen: list[ServiceStatus] = []
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                async with aclosing(backend.watch()) as statuses:
                    async for status in statuses:
                        seen.append(status)
                        if status is ServiceStatus.RUNNING:
                            os.kill(pid, signal.SIGKILL)  # the service crashes
                        if status is ServiceStatus.FAILED:
                            tg.cancel_scope.cancel()

            tg.start_soon(watch)
    assert seen == [ServiceStatus.RUNNING, ServiceStatus.FAILED]
    assert await backend.status() is ServiceStatus.FAILED  # not confirmed stopped until stop()
    with anyio.fail_after(5):
        await backend.stop()
    assert await backend.status() is ServiceStatus.STOPPED
    # and it can be started again after a crash
    await backend.start()
    assert await backend.status() is ServiceStatus.RUNNING
    await backend.stop()


async def test_watch_follows_start_and_stop() -> None:
    backend = CommandBackend(run=["sleep", "60"], poll_interval=3600)
    seen: list[ServiceStatus] = []
    got = anyio.Event()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                async with aclosing(backend.watch()) as statuses:
                    async for status in statuses:
                        seen.append(status)
                        got.set()

            tg.start_soon(watch)
            await got.wait()
            await backend.start()
            await backend.stop()
            while seen[-1] is not ServiceStatus.STOPPED or len(seen) < 2:
                got = anyio.Event()
                await got.wait()
            tg.cancel_scope.cancel()
    assert seen[0] is ServiceStatus.STOPPED
    assert seen[-1] is ServiceStatus.STOPPED
    assert ServiceStatus.FAILED not in seen  # a requested stop is not a failure


async def test_stop_escalates_to_sigkill(tmp_path: Path, bind: bool) -> None:
    pidfile = tmp_path / "pid"
    script = f"trap '' TERM; echo $$ > {pidfile}; while :; do sleep 0.05; done"
    backend = CommandBackend(run=["sh", "-c", script], stop_timeout=0.3, bind_to_hasup=bind)
    await backend.start()
    pid = await read_pid(pidfile)
    begin = time.monotonic()
    with anyio.fail_after(5):
        await backend.stop()
    assert time.monotonic() - begin >= 0.3  # it did wait for SIGTERM first
    assert not alive(pid)
    assert await backend.status() is ServiceStatus.STOPPED


async def test_stop_kills_the_whole_process_group(tmp_path: Path, bind: bool) -> None:
    pidfile = tmp_path / "pid"
    # The program's own child ignores SIGTERM and would outlive a kill of the leader alone.
    script = f"(trap '' TERM; exec sleep 60) & echo $! > {pidfile}; wait"
    backend = CommandBackend(run=["sh", "-c", script], stop_timeout=0.3, bind_to_hasup=bind)
    await backend.start()
    child = await read_pid(pidfile)
    with anyio.fail_after(5):
        await backend.stop()
    assert not alive(child)


async def test_cancelled_start_leaves_nothing_running(tmp_path: Path, bind: bool) -> None:
    pidfile = tmp_path / "pid"
    backend = CommandBackend(
        run=["sh", "-c", f"echo $$ > {pidfile}; exec sleep 30"],
        ready_tcp=f"127.0.0.1:{free_port()}",
        bind_to_hasup=bind,
    )
    with anyio.move_on_after(0.5):
        await backend.start()
    pid = await read_pid(pidfile)
    assert not alive(pid)
    assert await backend.status() is ServiceStatus.STOPPED


_SUPERVISOR = """
import sys, anyio
from hasup.backends.command import CommandBackend

async def main():
    backend = CommandBackend(
        run=["sh", "-c", "echo $$ > " + sys.argv[1] + "; exec sleep 60"],
        bind_to_hasup=sys.argv[2] == "bound",
        pid_file=sys.argv[3],
    )
    await backend.start()
    print("started", flush=True)
    await anyio.sleep_forever()

anyio.run(main, backend=sys.argv[4])
"""


async def kill9_supervisor(tmp_path: Path, mode: str, anyio_backend: str) -> int:
    """Run a supervisor process that starts a service, kill -9 it; the service's pid."""
    pidfile = tmp_path / "pid"
    supervisor = await anyio.open_process(
        [sys.executable, "-c", _SUPERVISOR, str(pidfile), mode, str(tmp_path / "service.pid"), anyio_backend],
        stdin=subprocess.DEVNULL,
        stderr=None,
    )
    async with supervisor:
        try:
            assert supervisor.stdout is not None
            with anyio.fail_after(10):
                line = await BufferedByteReceiveStream(supervisor.stdout).receive_until(b"\n", 100)
            assert line == b"started"
            pid = await read_pid(pidfile)
            assert alive(pid)
        finally:
            supervisor.kill()
            await supervisor.wait()
    return pid


async def test_bound_service_dies_with_a_killed_supervisor(tmp_path: Path, anyio_backend: str) -> None:
    """bind_to_hasup = true (fencing): kill -9 of hasup takes its managed service with it."""
    pid = await kill9_supervisor(tmp_path, "bound", anyio_backend)
    wait_until(lambda: not alive(pid), timeout=5, what="the orphaned service to be killed")


async def test_unbound_service_survives_a_killed_supervisor_and_is_adopted(tmp_path: Path, anyio_backend: str) -> None:
    """The default: kill -9 of hasup leaves the service running; the next hasup adopts it."""
    pid = await kill9_supervisor(tmp_path, "unbound", anyio_backend)
    try:
        assert alive(pid)
        assert (tmp_path / "service.pid").read_text().split() == [str(pid), str(start_time(pid))]
        backend = CommandBackend(run=["sleep", "60"], pid_file=str(tmp_path / "service.pid"))
        assert await backend.status() is ServiceStatus.RUNNING
        assert backend.pid == pid
        await backend.start()  # idempotent: no second copy
        assert backend.pid == pid
        with anyio.fail_after(5):
            await backend.stop()
        assert not alive(pid)
        assert not (tmp_path / "service.pid").exists()
        assert await backend.status() is ServiceStatus.STOPPED
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


async def test_adopts_the_service_of_a_previous_backend(tmp_path: Path) -> None:
    """A new backend (hasup restarted) adopts the running program, sees its crash at once
    through a pidfd although it is not its parent, and cleans up after it."""
    pid_file = tmp_path / "service.pid"
    script = "sleep 60 & echo $! > child; exec sleep 60"
    first = CommandBackend(run=["sh", "-c", script], pid_file=str(pid_file), cwd=str(tmp_path))
    await first.start()
    pid = first.service_pid
    assert pid is not None
    assert first.pid == pid  # no shim: the program leads its own group and session
    assert os.getpgid(pid) == pid
    assert os.getsid(pid) == pid
    child = await read_pid(tmp_path / "child")
    assert pid_file.read_text().split() == [str(pid), str(start_time(pid))]
    # `first` is dropped without stop(), as by a crashed hasup (it stays referenced so
    # that nothing of it is collected meanwhile; at the end its stop() reaps the zombie).
    second = CommandBackend(run=["sh", "-c", script], pid_file=str(pid_file), poll_interval=3600)
    try:
        assert await second.status() is ServiceStatus.RUNNING
        assert second.pid == pid
        assert second.service_pid == pid
        seen: list[tuple[ServiceStatus, float]] = []
        with anyio.fail_after(5):
            async with aclosing(second.watch()) as statuses:
                killed = 0.0
                async for status in statuses:
                    seen.append((status, anyio.current_time()))
                    if status is ServiceStatus.RUNNING:
                        killed = anyio.current_time()
                        os.kill(pid, signal.SIGKILL)  # the service crashes
                    elif status is ServiceStatus.FAILED:
                        break
        assert [s for s, _ in seen] == [ServiceStatus.RUNNING, ServiceStatus.FAILED]
        assert seen[1][1] - killed < 0.1  # an event (pidfd), not a poll (poll_interval is 1 h)
        # the program is gone but its child still runs in the group: not confirmed stopped
        assert alive(child)
        assert await second.status() is ServiceStatus.FAILED
        with anyio.fail_after(5):
            await second.stop()  # signals the whole group
        assert not alive(child)
        assert await second.status() is ServiceStatus.STOPPED
        assert not pid_file.exists()
    finally:
        for p in (pid, child):
            if alive(p):
                os.kill(p, signal.SIGKILL)
        await first.stop()


async def test_adopted_service_is_stopped_with_sigterm_then_sigkill(tmp_path: Path) -> None:
    pid_file = tmp_path / "service.pid"
    first = CommandBackend(run=["sh", "-c", "trap '' TERM; while :; do sleep 0.05; done"], pid_file=str(pid_file))
    await first.start()
    pid = first.service_pid
    assert pid is not None
    second = CommandBackend(run=["true"], pid_file=str(pid_file), stop_timeout=0.3)
    try:
        assert await second.status() is ServiceStatus.RUNNING
        begin = time.monotonic()
        with anyio.fail_after(5):
            await second.stop()
        assert time.monotonic() - begin >= 0.3  # SIGTERM first, ignored, then SIGKILL
        assert not alive(pid)
        assert not pid_file.exists()
        assert await second.status() is ServiceStatus.STOPPED
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
        await first.stop()


async def test_stale_pid_file_is_removed(tmp_path: Path) -> None:
    done = await anyio.run_process(["sh", "-c", "echo $$"])
    gone = int(done.stdout)  # a pid that has exited (and been reaped)
    pid_file = tmp_path / "service.pid"
    pid_file.write_text(f"{gone}\n12345\n")
    backend = CommandBackend(run=["sleep", "60"], pid_file=str(pid_file))
    assert await backend.status() is ServiceStatus.STOPPED
    assert not pid_file.exists()
    assert backend.pid is None
    # garbage is removed too
    pid_file.write_text("not a pid\n")
    backend = CommandBackend(run=["sleep", "60"], pid_file=str(pid_file))
    assert await backend.status() is ServiceStatus.STOPPED
    assert not pid_file.exists()


async def test_pid_reuse_is_not_adopted(tmp_path: Path) -> None:
    """A live process with the recorded pid but another start time is someone else."""
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)  # noqa: ASYNC220 - instant
    try:
        pid_file = tmp_path / "service.pid"
        pid_file.write_text(f"{other.pid}\n{start_time(other.pid) + 1}\n")
        backend = CommandBackend(run=["sleep", "60"], pid_file=str(pid_file))
        assert await backend.status() is ServiceStatus.STOPPED
        assert not pid_file.exists()
        assert backend.pid is None
        with anyio.fail_after(5):
            await backend.stop()  # nothing to stop: the other process is left alone
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


async def test_pid_file_follows_the_service(tmp_path: Path) -> None:
    pid_file = tmp_path / "state" / "service.pid"  # the directory is created
    backend = CommandBackend(run=["sleep", "60"], pid_file=str(pid_file))
    await backend.start()
    pid = backend.pid
    assert pid is not None
    assert pid_file.read_text() == f"{pid}\n{start_time(pid)}\n"
    with anyio.fail_after(5):
        await backend.stop()
    assert not pid_file.exists()
    # a failed start leaves no pid file behind
    failing = CommandBackend(run=["sh", "-c", "exit 3"], pid_file=str(pid_file))
    with pytest.raises(ServiceFailed):
        await failing.start()
    assert not pid_file.exists()
    # bind_to_hasup = true does not need it: the service cannot outlive hasup
    bound = CommandBackend(run=["sleep", "60"], pid_file=str(pid_file), bind_to_hasup=True)
    await bound.start()
    assert not pid_file.exists()
    with anyio.fail_after(5):
        await bound.stop()


async def test_bound_shim_reports_a_sigkill(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """kill -9 of the bound program: the shim exits by SIGKILL too (it used to crash on
    signal.signal(SIGKILL, SIG_DFL) and exit with status 1)."""
    caplog.set_level("INFO", logger="hasup.backends.command")
    backend = CommandBackend(run=["sleep", "60"], bind_to_hasup=True, poll_interval=3600)
    await backend.start()
    assert backend.service_pid is not None
    assert backend.service_pid != backend.pid  # the shim leads the group
    with anyio.fail_after(5):
        async with aclosing(backend.watch()) as statuses:
            async for status in statuses:
                if status is ServiceStatus.RUNNING:
                    os.kill(backend.service_pid, signal.SIGKILL)
                elif status is ServiceStatus.FAILED:
                    break
        await backend.stop()
    assert "exit status -9" in caplog.text
    assert "Traceback" not in caplog.text


async def test_check_warns_about_unbound_run_without_pid_file() -> None:
    problems = await CommandBackend(run=["sleep", "1"]).check()
    assert any("without pid_file" in p for p in problems)
    assert await CommandBackend(run=["sleep", "1"], pid_file="/tmp/x.pid").check() == []
    assert await CommandBackend(run=["sleep", "1"], bind_to_hasup=True).check() == []
