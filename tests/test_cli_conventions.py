"""Command-line conventions an operator scripts against: streams, exit codes, defaults.

`hasup check | jq` sees only JSON (warnings go to stderr); `hasup status` exit codes
tell monitoring FAULT (3) and alarms (4) from healthy (0) and unreachable (1), asked
from a real HTTP endpoint on loopback; `-c` defaults to /etc/hasup/hasup.toml; control
commands fail with one line, never a traceback; under journald the log lines carry
sd-daemon priority prefixes.
"""

from __future__ import annotations

import http.server
import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from hasup import _cli


def hasup(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hasup", *args], capture_output=True, text=True, timeout=60)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(tmp: Path, *, status_port: int, extra: str = "") -> Path:
    """A valid node config; ``extra`` goes into ``[group]`` (default: the key file)."""
    path = tmp / "hasup.toml"
    if not extra:
        (tmp / "group.key").write_text("ab" * 32 + "\n")
        (tmp / "group.key").chmod(0o600)
        extra = f'key_file = "{tmp / "group.key"}"'
    path.write_text(
        textwrap.dedent(
            f"""
            [node]
            name = "edge-a"
            priority = 100
            state_dir = "{tmp / "state"}"
            [group]
            id = 7
            listen = "127.0.0.1:{closed_port()}"
            peers = ["127.0.0.1:{closed_port()}"]
            {extra}
            [service]
            backend = "command"
            run = ["{sys.executable}", "-m", "http.server", "8085", "--bind", "127.0.0.1"]
            [status]
            listen = "127.0.0.1:{status_port}"
            """
        )
    )
    return path


def test_check_prints_only_json_on_stdout_and_warnings_on_stderr(tmp_path: Path) -> None:
    config = write_config(tmp_path, status_port=closed_port(), extra="insecure = true")
    proc = hasup("check", "--offline", "-c", str(config))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)  # nothing but the JSON document
    assert doc["group"]["authenticated"] is False
    assert "warning:" in proc.stderr and "group.insecure" in proc.stderr


def test_config_defaults_to_etc_hasup(tmp_path: Path) -> None:
    if os.path.exists(_cli.DEFAULT_CONFIG):
        pytest.skip(f"{_cli.DEFAULT_CONFIG} exists on this machine")
    proc = hasup("check", "--offline")
    assert proc.returncode == 2
    assert _cli.DEFAULT_CONFIG in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


class _Status(http.server.BaseHTTPRequestHandler):
    doc: ClassVar[dict[str, Any]] = {}

    def do_GET(self) -> None:
        body = json.dumps(self.doc).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def status_server() -> Iterator[tuple[str, type[_Status]]]:
    handler = type("Handler", (_Status,), {"doc": {}})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def status_doc(state: str, alarms: dict[str, str]) -> dict[str, Any]:
    return {
        "node": "edge-a",
        "state": state,
        "term": 3,
        "priority": 100,
        "effective_priority": 100,
        "service": "running" if state == "MASTER" else "stopped",
        "since_seconds": 12.5,
        "reason": "test",
        "peers": [],
        "alarms": alarms,
    }


@pytest.mark.parametrize(
    ("state", "alarms", "code"),
    [
        ("MASTER", {}, _cli.STATUS_OK),
        ("BACKUP", {}, _cli.STATUS_OK),
        ("BACKUP", {"peer_down": "edge-b not heard for 4 s"}, _cli.STATUS_ALARM),
        ("FAULT", {"stop_failed": "the service did not stop"}, _cli.STATUS_FAULT),
    ],
)
@pytest.mark.parametrize("as_json", [False, True])
def test_status_exit_codes(
    status_server: tuple[str, type[_Status]], state: str, alarms: dict[str, str], code: int, as_json: bool
) -> None:
    url, handler = status_server
    handler.doc = status_doc(state, alarms)
    proc = hasup("status", "--url", url, *(["--json"] if as_json else []))
    assert proc.returncode == code, proc.stderr
    if as_json:
        assert json.loads(proc.stdout)["state"] == state
    else:
        assert proc.stdout.startswith(f"edge-a: {state}")


def test_status_of_an_unreachable_node_is_one_line_exit_1() -> None:
    proc = hasup("status", "--url", f"http://127.0.0.1:{closed_port()}")
    assert proc.returncode == _cli.STATUS_UNREACHABLE
    assert "cannot reach" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.parametrize("command", [["switchover"], ["maintenance", "on"], ["confirm-stopped"]])
def test_control_commands_fail_in_one_line_when_the_node_does_not_answer(tmp_path: Path, command: list[str]) -> None:
    config = write_config(tmp_path, status_port=closed_port())
    (tmp_path / "state").mkdir(mode=0o700)
    (tmp_path / "state" / "control.token").write_text("x" * 32)
    proc = hasup(*command, "-c", str(config))
    assert proc.returncode == 1, proc.stderr
    assert "cannot reach" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_help_describes_hasup_not_the_module() -> None:
    proc = hasup("--help")
    assert proc.returncode == 0
    assert "exactly one copy of a service" in proc.stdout and "``" not in proc.stdout


def test_journald_gets_priority_prefixes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log_file = (tmp_path / "journal").open("w")
    st = os.fstat(log_file.fileno())
    monkeypatch.setattr(sys, "stderr", log_file)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        _cli._setup_logging("info", "text")
        logging.getLogger("hasup").warning("peer edge-b lost")
        logging.getLogger("hasup").error("stop failed")
        logging.getLogger("hasup").debug("not shown at info")
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")  # stderr redirected elsewhere
        _cli._setup_logging("info", "text")
        logging.getLogger("hasup").info("plain")
        log_file.flush()
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        log_file.close()
    lines = (tmp_path / "journal").read_text().splitlines()
    assert lines[:2] == ["<4>peer edge-b lost", "<3>stop failed"]
    assert len(lines) == 3 and not lines[2].startswith("<") and lines[2].endswith("INFO plain")
