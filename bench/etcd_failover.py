"""Failover of two `python -m hasup run` processes on loopback: etcd leadership
([coordinator] type = "etcd") against the heartbeat election, in the same run (issue 9).

Starts a 3-member etcd cluster with tests/fixtures/etcd/setup.sh (heartbeat 50 ms,
election timeout 500 ms, as the tests do) and always tears it down. The service is
`busybox httpd`. For each configuration and scenario, repeated N times:

* kill -9    kill -9 of the leader's hasup (its service dies with it)
             → the other node's service answers HTTP
* graceful   SIGTERM to the leader's hasup → the other node's service answers

Configurations: etcd at TTL 2 s and 5 s (heartbeats every 100 ms alongside), and the
heartbeat election (no [coordinator]) at advert 1 s and 100 ms. A thread checks both
services every 10 ms; "dual" counts the samples in which both answered.

    .venv/bin/python bench/etcd_failover.py [--runs 5] [--ttls 2,5] [--adverts 1,0.1]
"""

from __future__ import annotations

import argparse
import inspect
import json
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
import threading
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "etcd"
ETCD_ARGS = "--heartbeat-interval=50 --election-timeout=500"
sys.path.insert(0, str(ROOT))
from hasup.backends.command import CommandBackend  # noqa: E402

# kill -9 of hasup must take its service down with it (the node is "lost"): where the
# command backend lets the program outlive hasup by default, ask for the hard binding.
BIND = "bind_to_hasup = true" if "bind_to_hasup" in inspect.signature(CommandBackend.__init__).parameters else ""


def free_ports(kind: int, count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, kind)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


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


class Etcd:
    """A 3-member cluster on loopback, started by the tests' setup.sh."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="hasup-bench-etcd-"))
        self.ports = free_ports(socket.SOCK_STREAM, 6)
        self.endpoints = [f"http://127.0.0.1:{self.ports[2 * i]}" for i in range(3)]

    def __enter__(self) -> Etcd:
        env = {**os.environ, "ETCD_EXTRA_ARGS": ETCD_ARGS}
        try:
            result = subprocess.run(
                ["bash", str(FIXTURES / "setup.sh"), str(self.root), "cluster", ",".join(map(str, self.ports))],
                capture_output=True,
                text=True,
                timeout=300,
                env=env,
                check=False,
            )
            if result.returncode != 0:
                raise RuntimeError(f"etcd setup failed: {(result.stderr or result.stdout)[-800:]}")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(
            ["bash", str(FIXTURES / "teardown.sh"), str(self.root), "--purge"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(self.root, ignore_errors=True)

    def version(self) -> str:
        with urllib.request.urlopen(f"{self.endpoints[0]}/version", timeout=2) as r:
            return str(json.load(r).get("etcdserver", "?"))


class Node:
    def __init__(self, tmp: Path, name: str, prio: int, udp: int, peer: int, advert: float, coordinator: str) -> None:
        self.name = name
        self.http, self.status = free_ports(socket.SOCK_STREAM, 2)
        www = tmp / f"www-{name}"
        www.mkdir(exist_ok=True)
        (www / "index.html").write_text(name)
        state = tmp / f"state-{name}"
        shutil.rmtree(state, ignore_errors=True)
        self.config = tmp / f"{name}.toml"
        self.config.write_text(
            textwrap.dedent(
                f"""
                [node]
                name = "{name}"
                priority = {prio}
                state_dir = "{state}"
                [group]
                id = 3
                listen = "127.0.0.1:{udp}"
                peers = ["127.0.0.1:{peer}"]
                advert_interval = "{round(advert * 1000)}ms"
                key_file = "{tmp / "key"}"
                fault_holddown = "1s"
                [service]
                backend = "command"
                run = ["{shutil.which("busybox")}", "httpd", "-f", "-p", "127.0.0.1:{self.http}", "-h", "{www}"]
                ready_tcp = "127.0.0.1:{self.http}"
                output = "discard"
                {BIND}
                [status]
                listen = "127.0.0.1:{self.status}"
                """
            )
            + coordinator
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hasup", "run", "-c", str(self.config), "--log-level", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def state(self) -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.status}/status", timeout=0.5) as r:
                return str(json.load(r)["state"])
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL (a scenario's node loss)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        """Clean-up: SIGTERM (hasup stops its service, whatever the binding), then SIGKILL."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


class Config:
    def __init__(self, label: str, advert: float, ttl: float | None) -> None:
        self.label, self.advert, self.ttl = label, advert, ttl

    def coordinator(self, etcd: Etcd) -> str:
        if self.ttl is None:
            return ""
        urls = ", ".join(f'"{e}"' for e in etcd.endpoints)
        return (
            f'\n[coordinator]\ntype = "etcd"\nendpoints = [{urls}]\n'
            f'prefix = "/hasup-bench/{uuid.uuid4().hex[:12]}"\nttl = "{self.ttl:g}s"\n'
        )


def one_round(tmp: Path, etcd: Etcd, cfg: Config, scenario: str) -> tuple[float, int]:
    ua, ub = free_ports(socket.SOCK_DGRAM, 2)
    coord = cfg.coordinator(etcd)  # one prefix for both nodes, new each round
    a = Node(tmp, "a", 100, ua, ub, cfg.advert, coord)
    b = Node(tmp, "b", 90, ub, ua, cfg.advert, coord)
    dual = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal dual
        while not stop.is_set():
            if answers(a.http) and answers(b.http):
                dual += 1
            stop.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        a.start()
        b.start()
        sampler.start()
        wait(lambda: a.state() == "MASTER" and b.state() == "BACKUP" and answers(a.http) and not answers(b.http), 30)
        # a random phase against the advert / lease renewal period
        period = cfg.advert if cfg.ttl is None else cfg.ttl / 3
        time.sleep(period + random.uniform(0, period))
        assert a.proc is not None
        t0 = time.monotonic()
        if scenario == "kill -9":
            a.proc.kill()
        else:
            a.proc.send_signal(signal.SIGTERM)
        t1 = wait(lambda: answers(b.http), 30)
        return t1 - t0, dual
    finally:
        stop.set()
        if sampler.is_alive():
            sampler.join(5)
        a.stop()
        b.stop()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--ttls", default="2,5", help="etcd lease TTLs (whole seconds)")
    parser.add_argument("--adverts", default="1,0.1", help="heartbeat-election advert intervals")
    parser.add_argument("--etcd-advert", type=float, default=0.1, help="advert interval alongside etcd")
    parser.add_argument("--scenarios", default="kill -9,graceful")
    args = parser.parse_args()
    if shutil.which("busybox") is None:
        print("busybox is needed (apt-get install busybox)", file=sys.stderr)
        return 2
    configs = [Config(f"etcd, TTL {float(t):g} s", args.etcd_advert, float(t)) for t in args.ttls.split(",") if t]
    configs += [
        Config(f"heartbeats, advert {float(a) * 1000:g} ms", float(a), None) for a in args.adverts.split(",") if a
    ]
    scenarios = [s.strip() for s in args.scenarios.split(",")]

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # unwind: stop the nodes, tear etcd down

    signal.signal(signal.SIGTERM, on_sigterm)
    with tempfile.TemporaryDirectory(prefix="hasup-bench-") as d, Etcd() as etcd:
        tmp = Path(d)
        subprocess.run([sys.executable, "-m", "hasup", "keygen", str(tmp / "key")], check=True, capture_output=True)
        print(
            f"etcd {etcd.version()}, 3 members on loopback ({ETCD_ARGS}); service busybox httpd; "
            f"{args.runs} runs per cell; seconds from the signal to the other node's service answering"
        )
        print("| election | scenario | median | min | max | dual-active samples |")
        print("|---|---|---|---|---|---|")
        for cfg in configs:
            for scenario in scenarios:
                results = [one_round(tmp, etcd, cfg, scenario) for _ in range(args.runs)]
                values = [r[0] for r in results]
                print(
                    f"| {cfg.label} | {scenario} | {statistics.median(values):.3f} | {min(values):.3f} | "
                    f"{max(values):.3f} | {sum(r[1] for r in results)} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
