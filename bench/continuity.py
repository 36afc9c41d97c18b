#!/usr/bin/env python3
"""Data continuity benchmark: what reaches the northbound broker across a failover.

    sudo .venv/bin/python bench/continuity.py --out docs/benchmarks.md

Three testbed namespaces (tests/cluster/testbed.py): n1 (preferred) and n2 run a
NeuronEX stand-in (tests/neuronex/standin.py: the NeuronEX HTTP API subset, a Modbus
TCP driver, an MQTT app) under one of three supervisors; n3 is the plant: a real
pymodbus TCP device whose holding register counts poll periods, Debian's mosquitto on
n3's address, and a recorder subscribed to it (tests/neuronex/recorder.py). Every
collector polls at mid-period, so each counter value is one poll: a value nobody
published is a lost sample, a value published twice a duplicated one (exact).

Systems, side by side in one run, at 1 s and 100 ms adverts:

* ``keepalived``: the NeuronEX recipe (tests/cluster/keepalived.py; ``tuned`` at
  100 ms) whose notify scripts start and stop the stand-in (cold start: NeuronEX's
  start-up, then its nodes resume);
* ``hasup cold``: ``backend = "command"`` running the stand-in (cold start);
* ``hasup warm``: ``backend = "neuronex"``: the stand-in runs on both nodes, hasup
  promotes/demotes its driver and app nodes through the API.

Scenarios, each from a fresh steady state (n1 publishing, n2 standby):

* ``nodeloss``: kill -9 of n1's supervisor and NeuronEX at once;
* ``crash``: kill -9 of NeuronEX on n1;
* ``failback``: after a node loss and n2 publishing, n1 boots again (its NeuronEX first,
  as its unit would; then the supervisor) and takes the service back;
* ``switchover``: ``hasup switchover --to n2`` (the recipe has no planned move);
* ``crashrestart`` (warm only): a crash, then NeuronEX restarted on the old holder one
  second later (systemd ``RestartSec=1``); it restores its nodes' running state, so it
  collects until hasup demotes it: the window lasts until it is demoted and silent.

Per scenario: samples lost and duplicated, the longest time with no publisher and the
time with two publishers (at the recorder), and for hasup the new holder's handover
ledger entry (the windows it measured itself).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.cluster.hasup_node import hasup_runner_unavailable  # noqa: E402
from tests.cluster.keepalived import KeepalivedPair, ensure_keepalived, keepalived_unavailable  # noqa: E402
from tests.cluster.testbed import Node, Testbed, netns_unavailable  # noqa: E402
from tests.neuronex.plant import (  # noqa: E402
    API_PORT,
    NeuronexCluster,
    Plant,
    continuity,
    kill_standins,
    plant_unavailable,
    standin_pids,
)

SCENARIOS = ("nodeloss", "crash", "crashrestart", "failback", "switchover")
HASUP = ["env", f"PYTHONPATH={REPO_ROOT}", sys.executable, "-m", "hasup"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def wait(pred: Callable[[], bool], timeout: float, what: str, poll: float = 0.05) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return time.monotonic()
        time.sleep(poll)
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")


class KeepalivedNeuronex(KeepalivedPair):
    """The recipe's pair, its notify scripts starting/stopping the NeuronEX stand-in."""

    def __init__(self, bed: Testbed, plant: Plant, variant: str, startup_delay: float) -> None:
        self.plant = plant
        self.startup_delay = startup_delay
        super().__init__(bed, variant)

    def _write(self, role: Any) -> None:
        super()._write(role)
        d = role.dir
        state = d / "neuronex-state.json"
        state.write_text(json.dumps({"modbus-1": True, "mqtt-1": True}))  # its nodes resume at start
        start = f"""#!/bin/bash
# stand-in for `systemctl start neuronex`
cd {d}
if [ -f svc.pid ] && kill -0 "$(cat svc.pid)" 2>/dev/null; then exit 0; fi
PYTHONPATH={REPO_ROOT} setsid {self.python} -m tests.neuronex.standin --listen 127.0.0.1:{API_PORT} \\
  --modbus {self.plant.modbus} --mqtt {self.plant.mqtt} --source {role.node.name} --period {self.plant.period} \\
  --startup-delay {self.startup_delay} --state-file {state} >>svc.log 2>&1 </dev/null &
echo $! > svc.pid
"""
        (d / "svc-start.sh").write_text(start)

    def boot(self, node: Node) -> None:
        # as the recipe: the enabled unit starts NeuronEX at boot on the master, then
        # keepalived; keepalived is started once NeuronEX answers (KeepalivedPair.boot)
        if self.roles[node.name].master:
            self.start_service(node)
            wait(lambda: bool(node.listening_pids(API_PORT)), self.startup_delay + 15, "NeuronEX up")
        self.start_supervisor(node)

    def service_pids(self, node: Node) -> list[int]:
        return standin_pids(node)

    def kill_service(self, node: Node, *, before: Any = None) -> list[int]:
        pids = kill_standins(node, before=before)
        (self.roles[node.name].dir / "svc.pid").unlink(missing_ok=True)
        return pids

    def reset(self) -> None:
        """Forget the previous scenario: notify logs (the steady check reads them)."""
        for role in self.roles.values():
            (role.dir / "notify.log").unlink(missing_ok=True)


def publishing(plant: Plant, source: str, after: float, n: int = 3) -> Callable[[], bool]:
    return lambda: sum(1 for s in plant.samples() if s["source"] == source and float(s["rx"]) > after) >= n


def quiet(plant: Plant, source: str, period: float) -> Callable[[], bool]:
    """``source`` has not published for two periods."""

    def pred() -> bool:
        last = max((float(s["rx"]) for s in plant.samples() if s["source"] == source), default=0.0)
        return time.time() - last > 2 * period

    return pred


def ledger_last(system: Any, node: Node) -> dict[str, Any] | None:
    if not isinstance(system, NeuronexCluster):
        return None
    proc = node.run(
        [*HASUP, "ledger", "--json", "--last", "1", "-c", str(system.config_path(node))],
        check=False,
    )
    try:
        entries = json.loads(proc.stdout)
    except ValueError:
        return None
    return entries[-1] if entries else None


def demoted_and_ready(system: NeuronexCluster, node: Node) -> bool:
    status = system.status(node) or {}
    return (
        bool(node.listening_pids(API_PORT))
        and status.get("service") == "stopped"
        and "standby_not_ready" not in status.get("alarms", {"unknown": ""})
    )


def steady(system: Any, plant: Plant, timeout: float) -> None:
    n1 = system.master
    t = time.time()
    wait(lambda: system.steady(), timeout, f"{system.label}: steady")
    wait(publishing(plant, n1.name, t, 2), timeout, f"{system.label}: n1 publishing")


def power_off(system: Any, node: Node) -> None:
    system.kill_node(node)
    if isinstance(system, NeuronexCluster):
        system.kill_service(node)  # warm: NeuronEX is not a child of hasup


def run_scenario(system: Any, plant: Plant, scenario: str, timeout: float) -> dict[str, Any]:
    n1, n2 = system.master, system.backup
    period = plant.period
    system.start()
    steady(system, plant, timeout)
    if scenario == "switchover" and not isinstance(system, NeuronexCluster):
        return {"na": "the recipe has no planned move"}
    if scenario == "crashrestart" and not (isinstance(system, NeuronexCluster) and system.mode == "warm"):
        return {"na": "NeuronEX is started by the supervisor on a claim"}
    if scenario == "failback":
        power_off(system, n1)
        t = time.time()
        wait(publishing(plant, n2.name, t), timeout, "n2 publishing after the node loss")
        wait(quiet(plant, n1.name, period), timeout, "n1 silent")
    before = time.time() - 2.5 * period
    t0 = time.time()
    if scenario == "nodeloss":
        power_off(system, n1)
        new = n2
    elif scenario in ("crash", "crashrestart"):
        system.kill_service(n1)
        new = n2
    elif scenario == "failback":
        if isinstance(system, NeuronexCluster) and system.mode == "warm":
            system.start_standin(n1)
        system.boot(n1)
        new = n1
    else:  # switchover
        proc = n1.run(
            [*HASUP, "switchover", "--to", n2.name, "-c", str(system.config_path(n1))],
            check=False,
            timeout=60,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"switchover failed: {proc.stderr.strip()}")
        new = n2
    old = n2 if new is n1 else n1
    wait(publishing(plant, new.name, t0), timeout, f"{new.name} publishing")
    wait(quiet(plant, old.name, period), timeout, f"{old.name} silent")
    if scenario == "crashrestart":
        # systemd restarts NeuronEX on the old holder (RestartSec=1): it restores its
        # nodes' running state, so it comes back collecting until hasup demotes it
        wait(lambda: time.time() > t0 + 1.0, 5, "RestartSec")
        system.start_standin(n1)
        wait(lambda: demoted_and_ready(system, n1), timeout, "n1's NeuronEX up, demoted and ready")
        wait(quiet(plant, n1.name, period), timeout, "n1 silent again")
    after = time.time()
    result = continuity(plant.samples(), before, after, period).as_dict()
    result["ledger"] = ledger_last(system, new)
    return result


def stop(system: Any) -> None:
    system.stop()
    for node in system.nodes if hasattr(system, "nodes") else (system.master, system.backup):
        system.kill_service(node)
    if isinstance(system, NeuronexCluster):
        system.wipe_state()
        for node in system.nodes:
            (system.node_dir(node) / "neuronex-state.json").unlink(missing_ok=True)
            system.write_config(node)
    else:
        system.reset()


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt(runs: list[dict[str, Any]] | None) -> str:
    """Medians over the runs, and the per-run losses and duplicates."""
    if not runs:
        return "-"
    if any("na" in r for r in runs):
        return "n/a"
    ok = [r for r in runs if "error" not in r]
    errors = len(runs) - len(ok)
    if not ok:
        return "error"
    lost = [r["lost"] for r in ok]
    dup = [r["duplicated"] for r in ok]
    text = (
        f"{_median(lost):g} lost, {_median(dup):g} dup; gap {_median([r['no_publisher_s'] for r in ok]):.2f} s, "
        f"two {_median([r['two_publishers_s'] for r in ok]):.2f} s"
    )
    if len(ok) > 1:
        text += f" (lost {','.join(map(str, lost))}; dup {','.join(map(str, dup))})"
    if errors:
        text += f" ({errors} run(s) failed)"
    return text


def report(results: dict[str, dict[str, list[dict[str, Any]]]], args: argparse.Namespace) -> str:
    systems = list(results)
    lines = [
        "| scenario | " + " | ".join(systems) + " |",
        "|---|" + "---|" * len(systems),
    ]
    for scenario in args.scenarios:
        lines.append(f"| {scenario} | " + " | ".join(fmt(results[s].get(scenario)) for s in systems) + " |")
    ledger = []
    for system, cells in results.items():
        for scenario, runs in cells.items():
            entries = [r["ledger"] for r in runs if r.get("ledger")]
            if entries:
                moves = sorted({f"{e['previous']} → {e['holder']}" for e in entries})
                ledger.append(
                    f"| {system} | {scenario} | {', '.join(moves)} | "
                    f"{_median([e['no_holder'] for e in entries]):.3f} | "
                    f"{_median([e['two_holders'] for e in entries]):.3f} |"
                )
    out = "\n".join(lines)
    if ledger:
        out += (
            "\n\nThe new holder's `hasup ledger` entry for each hasup move (its own measurement, medians):\n\n"
            "| system | scenario | move | no holder s | two holders s |\n|---|---|---|---|---|\n" + "\n".join(ledger)
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--adverts", default="1s,100ms")
    p.add_argument("--systems", default="keepalived,cold,warm")
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--period", type=float, default=1.0, help="poll period of the driver (s)")
    p.add_argument("--startup-delay", type=float, default=5.0, help="NeuronEX start-up (s)")
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--runs", type=int, default=1, help="runs per scenario (medians are printed)")
    p.add_argument("--json", help="write the raw results here")
    p.add_argument("--workdir", help="keep every log under this directory")
    args = p.parse_args(argv)
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    for what, why in (
        ("network namespaces", netns_unavailable()),
        ("hasup runner", hasup_runner_unavailable()),
        ("plant", plant_unavailable()),
    ):
        if why is not None:
            print(f"{what} unavailable: {why}", file=sys.stderr)
            return 2
    if "keepalived" in args.systems:
        ensure_keepalived()
        if keepalived_unavailable():
            print(keepalived_unavailable(), file=sys.stderr)
            return 2
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for advert in args.adverts.split(","):
        for kind in args.systems.split(","):
            workdir = Path(args.workdir) / f"{kind}-{advert}" if args.workdir else None
            with Testbed(3, workdir=workdir) as bed:
                plant = Plant(bed.nodes[2], bed.workdir, period=args.period)
                plant.start()
                system: Any
                if kind == "keepalived":
                    variant = "recipe" if advert == "1s" else "tuned"
                    system = KeepalivedNeuronex(bed, plant, variant, args.startup_delay)
                else:
                    system = NeuronexCluster(
                        bed,
                        plant,
                        mode=kind,
                        startup_delay=args.startup_delay,
                        advert_interval=advert,
                        fault_holddown="60s",
                    )
                label = f"{system.label}" if kind != "keepalived" else f"keepalived {variant} ({advert})"
                cells = results.setdefault(label, {})
                for scenario in args.scenarios:
                    for run in range(args.runs):
                        log(f"{label}: {scenario} #{run + 1}")
                        try:
                            cell = run_scenario(system, plant, scenario, args.timeout)
                        except (TimeoutError, RuntimeError, subprocess.SubprocessError) as exc:
                            log(f"  {label} {scenario}: {exc}")
                            cell = {"error": str(exc)}
                        finally:
                            stop(system)
                        cells.setdefault(scenario, []).append(cell)
                        log(f"  {json.dumps(cell)}")
                        if "na" in cell:
                            break
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    print(report(results, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
