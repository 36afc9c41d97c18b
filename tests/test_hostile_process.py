"""Process and file hygiene, against real processes and a real file system.

* a ``[[notify]]`` hook that times out is killed with everything it started;
* no program hasup starts inherits ``NOTIFY_SOCKET``/``WATCHDOG_*`` (it could report
  READY or keep the watchdog fed in hasup's name);
* the control token is written without following or reusing anything planted in the
  state directory;
* the configuration, ``state_dir``, key and password files are refused when someone
  else could change them (StrictModes), and an etcd password never goes over http.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from hasup import ConfigError
from hasup._hooks import HookEvent, HookRunner, NotifyHook
from hasup._statusapi import write_control_token
from hasup.backends._process import run_command
from hasup.backends.command import CommandBackend
from hasup.config import load_config, parse_config
from hasup.protocol import State
from hasup.testing import config_text, free_port, write_key_file
from tests._support import wait_until
from tests.backends.test_term import DUMP_ENV, dump_env, read_env

PRIVATE = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}

EVENT = HookEvent(State.MASTER, State.BACKUP, "edge-a", 7, 3, "test")

# Starts a grandchild that writes its pid to argv[1] and sleeps; then sleeps itself.
SPAWNER = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c',"
    " 'import os, sys, time; open(sys.argv[1], \"w\").write(str(os.getpid())); time.sleep(600)', sys.argv[1]])\n"
    "time.sleep(600)\n"
)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.anyio
async def test_a_hook_that_times_out_is_killed_with_its_grandchildren(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    runner = HookRunner((NotifyHook(frozenset({State.MASTER}), (sys.executable, "-c", SPAWNER, str(pid_file)), 2.0),))
    async with anyio.create_task_group() as tg:
        tg.start_soon(runner.run)
        runner.submit(EVENT)
        with anyio.fail_after(10):
            while not pid_file.exists() or not pid_file.read_text():
                await anyio.sleep(0.01)  # another process's file: poll it, with a deadline
        grandchild = int(pid_file.read_text())
        assert alive(grandchild)
        with anyio.fail_after(10):
            while runner.failures == 0:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    wait_until(lambda: not alive(grandchild), timeout=5, what="the hook's grandchild killed")


@pytest.mark.anyio
async def test_no_child_inherits_the_systemd_notification_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in PRIVATE.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("KEPT", "yes")
    # a [[notify]] hook
    hook_env = tmp_path / "hook.env"
    runner = HookRunner((NotifyHook(frozenset({State.MASTER}), tuple(dump_env(hook_env)), 10.0),))
    async with anyio.create_task_group() as tg:
        tg.start_soon(runner.run)
        runner.submit(EVENT)
        env = await read_env(hook_env)
        tg.cancel_scope.cancel()
    assert env["HASUP_STATE"] == "MASTER" and env["KEPT"] == "yes"
    assert not PRIVATE.keys() & env.keys()
    # an exec probe or a backend command (run without an explicit environment)
    probe_env = tmp_path / "probe.env"
    result = await run_command(dump_env(probe_env), 10.0)
    assert result.returncode == 0
    assert not PRIVATE.keys() & (await read_env(probe_env)).keys()
    # the managed service itself
    service_env = tmp_path / "service.env"
    backend = CommandBackend(
        run=[sys.executable, "-c", DUMP_ENV + "import time\ntime.sleep(60)\n", str(service_env)],
        pid_file=str(tmp_path / "service.pid"),
        stop_timeout=5,
    )
    try:
        await backend.start(term=1)
        env = await read_env(service_env)
    finally:
        with anyio.fail_after(10):
            await backend.stop()
    assert env["KEPT"] == "yes" and not PRIVATE.keys() & env.keys()


def test_control_token_does_not_follow_a_planted_link(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    # the old fixed temporary name, and the token itself, planted as links
    (state / "control.tmp").symlink_to(victim)
    (state / "control.token").symlink_to(victim)
    token = write_control_token(state)
    assert token is not None
    assert victim.read_text() == "precious\n"
    path = state / "control.token"
    assert not path.is_symlink() and path.read_text() == token + "\n"
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in state.iterdir() if p.name.startswith(".control")] == []


def test_control_token_refused_in_a_world_writable_state_dir(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o777)
    assert write_control_token(state) is None
    assert not (state / "control.token").exists()


def node_config(tmp: Path, **kw: str) -> Path:
    key = tmp / "group.key"
    write_key_file(key)
    path = tmp / "hasup.toml"
    path.write_text(
        config_text(
            "edge-a",
            100,
            f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}",
            ["127.0.0.1:9"],
            key_file=key,
            state_dir=tmp / "state",
            status=f'listen = "127.0.0.1:{free_port(socket.SOCK_STREAM)}"',
            service={"backend": "command", "run": [sys.executable, "-c", "import time; time.sleep(600)"]},
            **kw,
        )
    )
    return path


def check(config: Path) -> subprocess.CompletedProcess[str]:
    """``hasup check``: the same file checks as ``run``, without starting anything."""
    return subprocess.run(
        [sys.executable, "-m", "hasup", "check", "--offline", "-c", str(config)], capture_output=True, text=True
    )


def run_refused(config: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "hasup", "run", "-c", str(config)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_group_writable_config_is_refused(tmp_path: Path) -> None:
    config = node_config(tmp_path)
    config.chmod(0o664)
    line = run_refused(config)
    assert f"{config}: file {config} is writable by group or others (mode 0664)" in line
    assert check(config).returncode == 2


def test_config_in_a_world_writable_directory_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    config = node_config(tmp_path).rename(shared / "hasup.toml")
    shared.chmod(0o777)
    assert f"{config}: directory {shared} is writable by group or others (mode 0777)" in run_refused(config)
    shared.chmod(0o1777)  # sticky, as /tmp: only the owner may replace the file
    assert check(config).returncode == 0, check(config).stderr


def test_world_writable_state_dir_is_refused(tmp_path: Path) -> None:
    config = node_config(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o757)
    assert f"node.state_dir: directory {state} is writable by group or others (mode 0757)" in run_refused(config)


def test_state_dir_of_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a directory to another user")
    config = node_config(tmp_path)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chown(state, 65534, 65534)
    assert f"node.state_dir: {state} is owned by uid 65534, not by root or uid 0" in run_refused(config)


def test_key_file_of_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file to another user")
    config = node_config(tmp_path)
    os.chown(tmp_path / "group.key", 65534, 65534)
    with pytest.raises(ConfigError, match=r"group\.key_file: key file: .* is owned by uid 65534"):
        load_config(config)


def etcd_table(tmp: Path, endpoint: str, mode: int = 0o600) -> str:
    password = tmp / "etcd.password"
    password.write_text("s3cret\n")
    password.chmod(mode)
    return (
        f'[coordinator]\ntype = "etcd"\nendpoints = ["{endpoint}"]\nusername = "hasup"\n'
        f'password_file = "{password}"\n'
    )


def make_coordinator(tmp: Path, table: str) -> None:
    config = parse_config(config_text("edge-a", 100, "127.0.0.1:5405", ["127.0.0.1:5406"], extra=table))
    config.make_coordinator()


def test_etcd_password_over_plain_http_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"password_file: the etcd password would cross the network in clear"):
        make_coordinator(tmp_path, etcd_table(tmp_path, "http://10.0.0.9:2379"))
    make_coordinator(tmp_path, etcd_table(tmp_path, "https://10.0.0.9:2379"))
    make_coordinator(tmp_path, etcd_table(tmp_path, "http://127.0.0.1:2379"))  # loopback: not the network


def test_etcd_password_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"password_file: .* is accessible to group or others \(mode 0644\)"):
        make_coordinator(tmp_path, etcd_table(tmp_path, "https://10.0.0.9:2379", mode=0o644))
