"""The plant around the NeuronEX stand-ins, in testbed namespaces, and the continuity
measure the warm-standby test and the benchmark share.

* :class:`Plant` — on one node namespace: Debian's mosquitto (listening only on that
  namespace's address), the Modbus counter device and the MQTT recorder.
* :class:`NeuronexCluster` — hasup in warm (``neuronex`` backend) or cold mode on the
  other nodes, each with a stand-in NeuronEX on its loopback.
* :func:`continuity` — samples lost and duplicated in a window, time with no
  publisher and with two, from the recorder's file.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..cluster.hasup_node import REPO_ROOT, HasupCluster, _env

if TYPE_CHECKING:
    from ..cluster.testbed import Node, Testbed

__all__ = ["API_PORT", "Continuity", "NeuronexCluster", "Plant", "continuity", "plant_unavailable"]

MQTT_PORT = 1883
MODBUS_PORT = 5020
API_PORT = 8085  # NeuronEX's port (Neuron 2.x: 7000), the one the recipe probes
MOSQUITTO = "/usr/sbin/mosquitto"


def plant_unavailable() -> str | None:
    """Why the real plant cannot run here (mosquitto, pymodbus, paho-mqtt), or None."""
    if shutil.which("mosquitto") is None and not Path(MOSQUITTO).exists():
        return "mosquitto is not installed (apt-get install mosquitto)"
    for module in ("pymodbus", "paho.mqtt"):
        try:
            __import__(module)
        except ImportError:
            return f"python module {module} is not installed (pip install '.[test]')"
    return None


class Plant:
    """Broker, device and recorder on ``node`` (a namespace of the testbed)."""

    def __init__(self, node: Node, workdir: Path, *, period: float) -> None:
        self.node = node
        self.period = period
        self.dir = workdir / "plant"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.samples_path = self.dir / "samples.jsonl"
        self.mqtt = f"{node.addr}:{MQTT_PORT}"
        self.modbus = f"{node.addr}:{MODBUS_PORT}"

    def start(self, timeout: float = 20.0) -> None:
        conf = self.dir / "mosquitto.conf"
        # a test broker inside the testbed: only on the namespace's address, no auth
        conf.write_text(
            f"listener {MQTT_PORT} {self.node.addr}\nallow_anonymous true\npersistence false\nlog_dest stderr\n"
        )
        self.node.spawn("mosquitto", [MOSQUITTO, "-c", str(conf)])
        self.node.spawn(
            "device",
            [sys.executable, "-m", "tests.neuronex.device", "--listen", self.modbus, "--period", str(self.period)],
            env=_env(),
            cwd=REPO_ROOT,
        )
        _wait_port(self.node, self.node.addr, MQTT_PORT, timeout)
        _wait_port(self.node, self.node.addr, MODBUS_PORT, timeout)
        recorder = self.node.spawn(
            "recorder",
            [sys.executable, "-m", "tests.neuronex.recorder", "--mqtt", self.mqtt, "--out", str(self.samples_path)],
            env=_env(),
            cwd=REPO_ROOT,
            stdout_pipe=True,
        )
        line = recorder.stdout.readline()
        if b"ready" not in line:
            raise RuntimeError(f"recorder did not subscribe: {line!r}")

    def samples(self) -> list[dict[str, Any]]:
        out = []
        if self.samples_path.exists():
            for line in self.samples_path.read_text().splitlines():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue  # a line being written
        return out


def _wait_port(node: Node, addr: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    probe = f"import socket; socket.create_connection(({addr!r}, {port}), timeout=0.5).close()"
    while time.monotonic() < deadline:
        if node.run([sys.executable, "-c", probe], check=False).returncode == 0:
            return
        time.sleep(0.05)
    raise RuntimeError(f"{addr}:{port} did not open within {timeout:g}s")


@dataclass
class Continuity:
    """What the northbound broker received in a window (see :func:`continuity`)."""

    expected: int
    lost: int
    duplicated: int
    #: longest time, at the recorder, between two consecutive samples, minus one period
    no_publisher: float
    #: time during which two sources published (poll periods inside both one's and the
    #: other's run of samples)
    two_publishers: float
    sources: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return {
            "expected": self.expected,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "no_publisher_s": round(self.no_publisher, 3),
            "two_publishers_s": round(self.two_publishers, 3),
            "sources": self.sources,
        }


def continuity(samples: Sequence[dict[str, Any]], since: float, until: float, period: float) -> Continuity:
    """Count the polls of ``[since, until]`` (wall clock) nobody published and those
    published more than once: the device's counter names each poll period, and every
    collector polls at mid-period (:mod:`.standin`)."""
    first = int((since // period) + 1)
    last = int(until // period) - 1
    expected = {k % 65536 for k in range(first, last + 1)}
    seen: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for s in samples:
        if int(s["value"]) in expected:
            seen[int(s["value"])].append(s)
    lost = sum(1 for k in expected if not seen.get(k))
    duplicated = sum(len(v) - 1 for v in seen.values() if len(v) > 1)
    window = sorted((s for v in seen.values() for s in v), key=lambda s: float(s["rx"]))
    gaps = [float(b["rx"]) - float(a["rx"]) - period for a, b in itertools.pairwise(window)]
    # Each source publishes one sample per poll period while it runs: its runs, in
    # poll periods (counter values), are the periods it was publishing. Two publishers =
    # the periods inside a run of two sources at once (poll resolution: receive-time
    # jitter of a few ms between two adjacent samples is not an overlap).
    runs: dict[str, list[list[int]]] = defaultdict(list)
    for s in sorted(window, key=lambda s: int(s["value"])):
        tick = int(s["value"])
        own = runs[str(s["source"])]
        if own and tick - own[-1][1] <= 2:
            own[-1][1] = tick
        else:
            own.append([tick, tick])
    covered: dict[int, int] = defaultdict(int)
    for own in runs.values():
        for first, last in own:
            for tick in range(first, last + 1):
                covered[tick] += 1
    both = float(sum(period for n in covered.values() if n >= 2))
    sources: dict[str, int] = defaultdict(int)
    for s in window:
        sources[str(s["source"])] += 1
    return Continuity(len(expected), lost, duplicated, max([0.0, *gaps]), both, dict(sources))


class NeuronexCluster(HasupCluster):
    """hasup on the first two nodes of ``bed``, each with a NeuronEX stand-in.

    ``mode``: "warm" (``backend = "neuronex"``: the stand-in always runs, hasup promotes
    and demotes it) or "cold" (``backend = "command"``: hasup starts the stand-in with
    its nodes running, and stops it — the keepalived recipe's behaviour under hasup).
    """

    def __init__(
        self,
        bed: Testbed,
        plant: Plant,
        *,
        mode: str = "warm",
        startup_delay: float = 5.0,
        advert_interval: str = "1s",
        poll_interval: str = "100ms",
        fault_holddown: str = "5s",
    ) -> None:
        self.fault_holddown = fault_holddown
        self.plant = plant
        self.mode = mode
        self.startup_delay = startup_delay
        self.poll_interval = poll_interval
        super().__init__(bed, advert_interval=advert_interval, nodes=bed.nodes[:2], tag=f"{mode}-{advert_interval}")

    @property
    def label(self) -> str:
        return f"hasup {self.mode} {self.advert_interval}"

    def standin_argv(self, node: Node, *, running: bool = False) -> list[str]:
        argv = [
            sys.executable,
            "-m",
            "tests.neuronex.standin",
            "--listen",
            f"127.0.0.1:{API_PORT}",
            "--modbus",
            self.plant.modbus,
            "--mqtt",
            self.plant.mqtt,
            "--source",
            node.name,
            "--period",
            str(self.plant.period),
            "--startup-delay",
            str(self.startup_delay),
        ]
        state = self.node_dir(node) / "neuronex-state.json"
        if running:
            state.write_text(json.dumps({"modbus-1": True, "mqtt-1": True}))
        return [*argv, "--state-file", str(state)]

    def sections(self, node: Node) -> dict[str, dict[str, Any]]:
        sections = super().sections(node)
        # one move per scenario: a faulted node does not come back (and fail back) within it
        sections["group"]["fault_holddown"] = self.fault_holddown
        if self.mode == "warm":
            sections["service"] = {
                "backend": "neuronex",
                "url": f"http://127.0.0.1:{API_PORT}",
                "nodes": ["mqtt-1", "modbus-1"],
                "poll_interval": self.poll_interval,
            }
        else:
            sections["service"] = {
                "backend": "command",
                "run": [*self.standin_argv(node, running=True)],
                "ready_tcp": f"127.0.0.1:{API_PORT}",
                "start_timeout": "60s",
            }
        return sections

    def start_standin(self, node: Node) -> None:
        """Warm mode: NeuronEX runs on every node (its own unit or container)."""
        node.spawn("neuronex", self.standin_argv(node), env=_env(), cwd=REPO_ROOT)

    def start(self) -> None:
        if self.mode == "warm":
            for node in self.nodes:
                self.start_standin(node)
        super().start()

    def kill_neuronex(self, node: Node) -> list[int]:
        """kill -9 of the NeuronEX process on ``node`` (also one still starting up)."""
        return kill_standins(node)

    def service_pids(self, node: Node) -> list[int]:
        return standin_pids(node)

    def kill_service(self, node: Node, *, before: Any = None) -> list[int]:
        return kill_standins(node, before=before)


def standin_pids(node: Node) -> list[int]:
    """The NeuronEX stand-ins running in ``node``'s namespace."""
    pids = []
    for pid in node.pids():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"tests.neuronex.standin" in cmdline:
            pids.append(pid)
    return pids


def kill_standins(node: Node, *, before: Any = None) -> list[int]:
    pids = standin_pids(node)
    if before is not None:
        before()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids
