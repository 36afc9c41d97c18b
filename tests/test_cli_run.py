"""Two real `python -m hasup run` processes on 127.0.0.1 with managed HTTP services."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._support import wait_until


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=0.2) as r:
            return bool(r.status == 200)
    except (OSError, http.client.HTTPException):
        return False


class Node:
    def __init__(self, tmp: Path, name: str, priority: int, udp: int, peer: int, extra: str = "") -> None:
        self.name = name
        self.http = free_port(socket.SOCK_STREAM)
        self.status_port = free_port(socket.SOCK_STREAM)
        self.config = tmp / f"{name}.toml"
        self.log = tmp / f"{name}.log"
        www = tmp / f"www-{name}"
        www.mkdir()
        (www / "index.html").write_text(name)
        self.config.write_text(
            textwrap.dedent(
                f"""
                [node]
                name = "{name}"
                priority = {priority}
                state_dir = "{tmp / ('state-' + name)}"
                [group]
                id = 9
                listen = "127.0.0.1:{udp}"
                peers = ["127.0.0.1:{peer}"]
                advert_interval = "100ms"
                key_file = "{tmp / 'group.key'}"
                [service]
                backend = "command"
                run = ["{sys.executable}", "-m", "http.server", "{self.http}", "--bind", "127.0.0.1",
                       "--directory", "{www}"]
                ready_tcp = "127.0.0.1:{self.http}"
                output = "discard"
                stop_timeout = "5s"
                # fencing: the service dies with hasup (the kill -9 test relies on it)
                bind_to_hasup = true
                [status]
                listen = "127.0.0.1:{self.status_port}"
                """
            )
            + extra
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hasup", "run", "-c", str(self.config)],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    def status(self) -> dict[str, object]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.status_port}/status", timeout=0.5) as r:
                doc: dict[str, object] = json.load(r)
                return doc
        except OSError:
            return {}

    def state(self) -> object:
        return self.status().get("state")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class Sampler(threading.Thread):
    """Which services answer, every 10 ms."""

    def __init__(self, nodes: list[Node]) -> None:
        super().__init__(daemon=True)
        self.nodes = nodes
        self.samples: list[tuple[float, set[str]]] = []
        self.running = True

    def run(self) -> None:
        while self.running:
            up = {n.name for n in self.nodes if answers(n.http)}
            self.samples.append((time.monotonic(), up))
            time.sleep(0.01)

    def both_active(self) -> list[float]:
        return [t for t, up in self.samples if len(up) > 1]


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Node, Node]]:
    subprocess.run([sys.executable, "-m", "hasup", "keygen", str(tmp_path / "group.key")], check=True,
                   capture_output=True)
    ua, ub = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    a, b = Node(tmp_path, "edge-a", 100, ua, ub), Node(tmp_path, "edge-b", 90, ub, ua)
    try:
        yield a, b
    finally:
        for n in (a, b):
            n.stop()
        for n in (a, b):
            if n.log.exists():
                sys.stdout.write(f"--- {n.name} log ---\n{n.log.read_text()[-3000:]}\n")


def test_kill9_failover_failback_and_sigterm(pair: tuple[Node, Node]) -> None:
    a, b = pair
    a.start()
    b.start()
    wait_until(lambda: a.state() == "MASTER" and b.state() == "BACKUP", timeout=20, what="a MASTER, b BACKUP")
    wait_until(lambda: answers(a.http), timeout=10, what="a's service")
    sampler = Sampler([a, b])
    sampler.start()
    try:
        # kill -9 of the master's hasup: its managed service goes with it (lifeline of
        # bind_to_hasup = true), the backup takes over.
        assert a.proc is not None
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(10)
        wait_until(lambda: b.state() == "MASTER" and answers(b.http), timeout=10, what="b takes over")
        assert not answers(a.http)
        # restart: a takes back over through the release handshake
        a.start()
        wait_until(lambda: a.state() == "MASTER" and b.state() == "BACKUP", timeout=20, what="failback")
        wait_until(lambda: answers(a.http) and not answers(b.http), timeout=10, what="a serving alone")
        # SIGTERM on the master: graceful resign, the backup takes over at once
        t0 = time.monotonic()
        a.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: b.state() == "MASTER" and answers(b.http), timeout=10, what="b after SIGTERM")
        handover = time.monotonic() - t0
        assert a.proc.wait(10) == 0
        assert handover < 5.0
    finally:
        sampler.running = False
        sampler.join()
    assert sampler.both_active() == [], "two services answered at the same moment"
    assert len(sampler.samples) > 50


def test_sighup_with_a_bad_config_keeps_running(pair: tuple[Node, Node]) -> None:
    a, _ = pair
    a.start()
    wait_until(lambda: a.state() in ("BACKUP", "MASTER"), timeout=20, what="a running")
    good = a.config.read_text()
    a.config.write_text(good.replace("priority = 100", "priority = 1000"))
    assert a.proc is not None
    a.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reload rejected" in a.log.read_text(), timeout=10, what="reload rejected")
    assert a.proc.poll() is None and a.state() in ("BACKUP", "CLAIMING", "MASTER")
    a.config.write_text(good.replace("priority = 100", "priority = 120"))
    a.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: a.status().get("priority") == 120, timeout=20, what="reloaded priority")
    os.kill(a.proc.pid, signal.SIGTERM)
    assert a.proc.wait(10) == 0


def hasup_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hasup", *args], capture_output=True, text=True, timeout=60)


def test_switchover_maintenance_metrics_and_hooks(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "hasup", "keygen", str(tmp_path / "group.key")], check=True,
                   capture_output=True)
    events = tmp_path / "events.txt"
    hook = textwrap.dedent(
        f"""
        [[notify]]
        on = ["MASTER", "BACKUP", "FAULT", "STOP"]
        command = ["/bin/sh", "-c", "echo $HASUP_NODE $HASUP_PREVIOUS_STATE $HASUP_STATE >> {events}"]
        timeout = "5s"
        [[notify]]
        on = ["MASTER"]
        command = ["/bin/false"]
        """
    )
    ua, ub = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    a = Node(tmp_path, "edge-a", 100, ua, ub, hook)
    b = Node(tmp_path, "edge-b", 90, ub, ua, hook)
    try:
        a.start()
        b.start()
        wait_until(lambda: a.state() == "MASTER" and b.state() == "BACKUP", timeout=20, what="a MASTER")
        sampler = Sampler([a, b])
        sampler.start()
        try:
            refused = hasup_cli("switchover", "-c", str(b.config))
            assert refused.returncode == 1 and "only the MASTER can switch over" in refused.stderr
            done = hasup_cli("switchover", "-c", str(a.config))
            assert done.returncode == 0, done.stderr
            assert "switched over to edge-b" in done.stdout
            wait_until(lambda: answers(b.http), timeout=10, what="b serving")
            # the old master went into maintenance, so preemption does not take it straight back
            assert a.status()["maintenance"] is True
            status = hasup_cli("status", "-c", str(a.config))
            assert "edge-a: BACKUP" in status.stdout and "peer edge-b" in status.stdout
            with urllib.request.urlopen(f"http://127.0.0.1:{a.status_port}/metrics", timeout=2) as r:
                metrics = r.read().decode()
            assert 'hasup_state{node="edge-a",state="BACKUP"} 1.0' in metrics
            assert 'hasup_transitions_total{from_state="MASTER",node="edge-a",to_state="RELEASING"} 1.0' in metrics
            assert 'hasup_failover_seconds_count{node="edge-a"} 1.0' in metrics
            assert 'hasup_backend_call_seconds_count{call="stop",node="edge-a",result="ok"} 1.0' in metrics
            assert 'hasup_heartbeats_total{direction="received",node="edge-a"}' in metrics
            off = hasup_cli("maintenance", "off", "-c", str(a.config))
            assert off.returncode == 0, off.stderr
            wait_until(lambda: a.state() == "MASTER" and answers(a.http) and not answers(b.http), timeout=20,
                       what="a takes back after maintenance off")
        finally:
            sampler.running = False
            sampler.join()
        assert sampler.both_active() == []
        wait_until(lambda: events.read_text().count("edge-a CLAIMING MASTER") == 2, timeout=10, what="hooks ran")
        lines = events.read_text().splitlines()
        # only the subscribed states, in order: a MASTER, a BACKUP (after the switchover), b MASTER, ...
        assert "edge-a RELEASING BACKUP" in lines and "edge-b CLAIMING MASTER" in lines
        assert not any(line.endswith(("RELEASING", "CLAIMING")) for line in lines)
        assert a.status()["statistics"]["notify_hook_failures"] >= 1  # /bin/false is counted, not fatal
    finally:
        for n in (a, b):
            n.stop()
