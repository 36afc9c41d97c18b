"""Failover of two `python -m hasup run` processes on loopback (issue 3's benchmark).

For each advert interval (1 s, 100 ms, 20 ms) and each scenario, repeated N times:

* node loss      kill -9 of the master's hasup and of its service (the machine dies)
                 → the backup's service answers HTTP
* service crash  kill -9 of the master's service → the backup's service answers
* graceful       SIGTERM to the master's hasup → the backup's service answers

Also idle CPU% (from /proc/PID/schedstat over a window) and RSS of one supervisor.
The service is `busybox httpd` when available (starts in a few ms, so the figures show
hasup's own latency), else `python -m http.server`.

    .venv/bin/python bench/supervisor_failover.py [--runs 10] [--adverts 1,0.1,0.02] [--idle 10]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=0.05) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def wait(pred, timeout: float, step: float = 0.002) -> float:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return time.monotonic()
        time.sleep(step)
    raise TimeoutError("condition not reached")


def service_argv(port: int, www: Path) -> list[str]:
    busybox = shutil.which("busybox")
    if busybox:
        return [busybox, "httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", str(www)]
    return [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(www)]


class Node:
    def __init__(self, tmp: Path, name: str, prio: int, udp: int, peer: int, advert: float) -> None:
        self.name = name
        self.http = free_port(socket.SOCK_STREAM)
        self.status = free_port(socket.SOCK_STREAM)
        www = tmp / f"www-{name}"
        www.mkdir(exist_ok=True)
        (www / "index.html").write_text(name)
        argv = ", ".join(f'"{a}"' for a in service_argv(self.http, www))
        self.config = tmp / f"{name}.toml"
        self.config.write_text(
            textwrap.dedent(
                f"""
                [node]
                name = "{name}"
                priority = {prio}
                state_dir = "{tmp / ("state-" + name)}"
                [group]
                id = 3
                listen = "127.0.0.1:{udp}"
                peers = ["127.0.0.1:{peer}"]
                advert_interval = "{round(advert * 1000)}ms"
                key_file = "{tmp / "key"}"
                fault_holddown = "1s"
                [service]
                backend = "command"
                run = [{argv}]
                ready_tcp = "127.0.0.1:{self.http}"
                output = "discard"
                [status]
                listen = "127.0.0.1:{self.status}"
                """
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hasup", "run", "-c", str(self.config), "--log-level", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def state(self) -> str:
        import json

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.status}/status", timeout=0.5) as r:
                return str(json.load(r)["state"])
        except OSError:
            return ""

    def service_pgid(self) -> int:
        """The managed service's process group (child of hasup, session leader)."""
        assert self.proc is not None
        out = subprocess.run(
            ["ps", "-o", "pid=,pgid=,ppid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True
        ).stdout.split()
        return int(out[1])

    def kill(self) -> None:
        """Stop this node and its service (the service outlives a killed hasup)."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # graceful: hasup stops its service and resigns
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        pid_file = self.config.parent / f"state-{self.name}" / "service.pid"
        try:
            pid = int(pid_file.read_text().split()[0])
            os.killpg(pid, signal.SIGKILL)  # left over by a kill -9 of hasup
        except (OSError, ValueError, IndexError):
            pass


def steady(a: Node, b: Node) -> None:
    wait(lambda: a.state() == "MASTER" and b.state() == "BACKUP" and answers(a.http) and not answers(b.http), 30)


def one_round(tmp: Path, advert: float, scenario: str) -> float:
    ua, ub = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    for d in tmp.glob("state-*"):
        shutil.rmtree(d)
    a, b = Node(tmp, "a", 100, ua, ub, advert), Node(tmp, "b", 90, ub, ua, advert)
    try:
        a.start()
        b.start()
        steady(a, b)
        time.sleep(advert * (2 + random.random()))  # a random phase of the advert cycle
        assert a.proc is not None
        t0 = time.monotonic()
        if scenario == "node loss":
            # the machine dies: supervisor and service at once
            pgid = a.service_pgid()
            a.proc.kill()
            os.killpg(pgid, signal.SIGKILL)
        elif scenario == "service crash":
            os.killpg(a.service_pgid(), signal.SIGKILL)
        else:
            a.proc.send_signal(signal.SIGTERM)
        t1 = wait(lambda: answers(b.http), 30)
        return t1 - t0
    finally:
        a.kill()
        b.kill()


def idle(tmp: Path, advert: float, seconds: float) -> tuple[float, float]:
    for d in tmp.glob("state-*"):
        shutil.rmtree(d)
    ua, ub = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    a, b = Node(tmp, "a", 100, ua, ub, advert), Node(tmp, "b", 90, ub, ua, advert)
    try:
        a.start()
        b.start()
        steady(a, b)
        time.sleep(1.0)
        assert a.proc is not None

        def cpu_ns(pid: int) -> int:
            total = 0
            for task in Path(f"/proc/{pid}/task").iterdir():
                total += int((task / "schedstat").read_text().split()[0])
            return total

        c0, w0 = cpu_ns(a.proc.pid), time.monotonic()
        time.sleep(seconds)
        c1, w1 = cpu_ns(a.proc.pid), time.monotonic()
        rss = 0
        for line in Path(f"/proc/{a.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
        return (c1 - c0) / 1e9 / (w1 - w0) * 100, rss / 1024
    finally:
        a.kill()
        b.kill()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--adverts", default="1,0.1,0.02")
    parser.add_argument("--idle", type=float, default=10.0)
    parser.add_argument("--scenarios", default="node loss,service crash,graceful")
    args = parser.parse_args()
    adverts = [float(x) for x in args.adverts.split(",")]
    scenarios = [s.strip() for s in args.scenarios.split(",")]
    with tempfile.TemporaryDirectory(prefix="hasup-bench-") as d:
        tmp = Path(d)
        subprocess.run([sys.executable, "-m", "hasup", "keygen", str(tmp / "key")], check=True, capture_output=True)
        print(f"service: {Path(service_argv(1, tmp)[0]).name}; {args.runs} runs per cell; seconds")
        print("| advert | scenario | median | min | max | master-down interval |")
        print("|---|---|---|---|---|---|")
        for advert in adverts:
            mdi = 3 * advert + (256 - 90) * advert / 256
            for scenario in scenarios:
                values = [one_round(tmp, advert, scenario) for _ in range(args.runs)]
                print(
                    f"| {advert:g} s | {scenario} | {statistics.median(values):.3f} | {min(values):.3f} | "
                    f"{max(values):.3f} | {mdi:.3f} |",
                    flush=True,
                )
        print("\n| advert | idle CPU % (one supervisor, master) | RSS MB |")
        print("|---|---|---|")
        for advert in adverts:
            cpu, rss = idle(tmp, advert, args.idle)
            print(f"| {advert:g} s | {cpu:.3f} | {rss:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
