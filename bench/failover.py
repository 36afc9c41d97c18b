#!/usr/bin/env python3
"""Failover benchmark: keepalived (NeuronEX recipe and tuned) against hasup, same testbed.

    sudo .venv/bin/python bench/failover.py --runs 5 --scenarios nodeloss,crash,failback \\
        --out docs/benchmarks.md --timelines docs/img

Two node namespaces joined through a bridge namespace (tests/cluster/testbed.py), a
sampler in each namespace polling the local stand-in service every 10 ms
(tests/cluster/observer.py). For each implementation, each run starts from a
verified steady state (preferred node MASTER and serving, the other BACKUP and
stopped), waits a random 0-1 s, then injects the fault:

* ``nodeloss``: kill -9 of the supervisor (keepalived parent + VRRP child / hasup) and
  of the service on the preferred node → time until the other node's service answers;
* ``failback``: after a node loss, boot the preferred node again (keepalived: the
  service first, as a systemd-enabled unit would, then keepalived; hasup: start hasup)
  → time until the preferred node is the only one serving, dual-active and gap;
* ``crash``: kill -9 of the service on the preferred node → time until a service
  answers again (any node);
* ``partition``: only the heartbeat traffic between the two nodes is dropped for 8 s
  (iptables both ways: VRRP for keepalived, UDP for hasup; a witness on a third node
  stays reachable) → dual-active while cut, time without service, and time after the
  heal until the preferred node is the sole server again;
* ``linkdown``: the preferred node's cable pulled (its switch port down) for 8 s,
  default configs (keepalived tracks its instance's ``interface``; hasup tracks the
  interface of its heartbeats by default) → time until the other node serves,
  dual-active (each node's own service sampled in its namespace), and time after the
  heal until the preferred node is the sole server again.

Idle CPU % (``/proc/PID/task/*/schedstat``; "+children" adds reaped children such as
keepalived's ``curl`` checks, from ``/proc/PID/stat`` ticks) and RSS are measured per
node on the supervisor processes, with the samplers stopped.

hasup rows need ``python -m hasup run``; when it is not available they are skipped
and the table says so.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.cluster.client import ClientSampler  # noqa: E402
from tests.cluster.hasup_node import HasupCluster, hasup_runner_unavailable  # noqa: E402
from tests.cluster.keepalived import VIP as KA_VIP  # noqa: E402
from tests.cluster.keepalived import KeepalivedPair, ensure_keepalived, keepalived_unavailable  # noqa: E402
from tests.cluster.observer import Observer, Timeline  # noqa: E402
from tests.cluster.testbed import Node, Testbed, netns_unavailable  # noqa: E402
from tests.cluster.witness_node import WitnessPair  # noqa: E402

SCENARIOS = ("nodeloss", "crash", "failback", "linkdown", "partition")
LINK_DOWN_SECS = 8.0
PARTITION_SECS = 8.0
Factory = Callable[[Testbed], Any]
#: --vip: hasup gets the recipe's virtual IP too (keepalived always has it), and its
#: stand-in listens on every address so that the VIP reaches it.
VIP_MODE = {"on": False}
#: The client's own address in the VIP's subnet.
CLIENT_ADDR = "192.160.127.250/17"


def _hasup(advert: str) -> Factory:
    def make(bed: Testbed) -> HasupCluster:
        pair = bed.nodes[:2]  # a third node, when there is one, is the witness's
        if not VIP_MODE["on"]:
            return HasupCluster(bed, advert_interval=advert, nodes=pair)
        vip = {"vip": [{"address": KA_VIP, "device": "eth0"}]}
        return HasupCluster(bed, advert_interval=advert, extra=vip, bind="0.0.0.0", nodes=pair)

    return make


IMPLS: dict[str, tuple[str, Factory]] = {
    "ka-recipe": ("keepalived recipe (advert 1 s)", lambda bed: KeepalivedPair(bed, "recipe")),
    "ka-tuned": ("keepalived tuned (v3, advert 0.1 s)", lambda bed: KeepalivedPair(bed, "tuned")),
    "hasup-1s": ("hasup default (advert 1 s)", _hasup("1s")),
    "hasup-100ms": ("hasup tuned (advert 100 ms)", _hasup("100ms")),
    "hasup-20ms": ("hasup tuned (advert 20 ms)", _hasup("20ms")),
    # the pair witness (docs/witness.md) runs on a third namespace behind the bridge
    "hasup-witness-1s": ("hasup default + witness (advert 1 s)", lambda bed: WitnessPair(bed)),
}
#: hasup column -> the keepalived column it is compared with
RATIOS = {"hasup-1s": "ka-recipe", "hasup-100ms": "ka-tuned", "hasup-20ms": "ka-tuned", "hasup-witness-1s": "ka-recipe"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Cell:
    values: list[float] = field(default_factory=list)

    def add(self, v: float | None) -> None:
        if v is not None:
            self.values.append(v)


@dataclass
class ImplResult:
    key: str
    label: str
    metrics: dict[str, Cell] = field(default_factory=dict)
    idle: dict[str, dict[str, float]] = field(default_factory=dict)
    timelines: dict[str, tuple[Timeline, float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def add(self, metric: str, v: float | None) -> None:
        self.metrics.setdefault(metric, Cell()).add(v)


# -- process accounting -----------------------------------------------------------------
def cpu_ns(pid: int) -> tuple[int, int]:
    """(ns run by the process's threads from schedstat, ticks of reaped children)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    children_ticks = int(stat[13]) + int(stat[14])  # cutime, cstime (fields 16, 17)
    return total, children_ticks


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def measure_idle(impl: Any, nodes: Sequence[Node], seconds: float) -> dict[str, dict[str, float]]:
    pids = {n.name: impl.idle_pids(n) for n in nodes}
    before = {name: [cpu_ns(p) for p in ps] for name, ps in pids.items()}
    t0 = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - t0
    hz = os.sysconf("SC_CLK_TCK")
    out: dict[str, dict[str, float]] = {}
    for name, ps in pids.items():
        after = [cpu_ns(p) for p in ps]
        self_ns = sum(a[0] - b[0] for a, b in zip(after, before[name], strict=True))
        child_s = sum(a[1] - b[1] for a, b in zip(after, before[name], strict=True)) / hz
        out[name] = {
            "cpu_pct": 100 * self_ns / 1e9 / wall,
            "cpu_pct_children": 100 * (self_ns / 1e9 + child_s) / wall,
            "rss_kb": float(sum(rss_kb(p) for p in ps)),
            "processes": float(len(ps)),
        }
    return out


# -- one implementation -----------------------------------------------------------------
def wait(pred: Callable[[], bool], timeout: float, what: str, poll: float = 0.05) -> float:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(poll)
    return time.monotonic()


_client: dict[str, ClientSampler | None] = {"sampler": None}


def _power_off(node: Node) -> None:
    """After a kill -9 of the node's processes (--vip): the machine is gone, so are its
    link and its runtime addresses (the VIP); a reboot brings the link back."""
    node.link_down("node")
    _drop_vip(node)


def _drop_vip(node: Node) -> None:
    node.run(["ip", "addr", "del", KA_VIP, "dev", node.dev], check=False)


def _mac(node: Node) -> str:
    return str(json.loads(node.run(["ip", "-j", "link", "show", node.dev]).stdout)[0]["address"])


def _client_figures(res: ImplResult, scenario: str, t0: float, t1: float, holder: Node) -> None:
    client = _client["sampler"]
    if client is None:
        return
    view = client.view()
    res.add(f"{scenario}_client_gap_s", view.longest_gap(t0, t1))
    res.add(f"{scenario}_client_fail", float(view.failures(t0, t1)))
    arp = view.first_mac(_mac(holder), t0)
    res.add(f"{scenario}_client_arp_s", None if arp is None else arp - t0)
    res.add(f"{scenario}_conn_gap_s", view.conn_gap(t0, t1))
    res.add(f"{scenario}_conn_hung", float(view.conn_ends(t0, t1).get("timeout", 0)))


def reset(impl: Any, obs: Observer, timeout: float = 40.0) -> None:
    """Stop everything, start the pair, wait for the steady state."""
    impl.stop()
    if VIP_MODE["on"]:
        for node in impl.bed.nodes:  # kill -9 leaves the VIP: a clean start, as after a reboot
            node.link_up("node")
            _drop_vip(node)
    wait(lambda: not obs.serving(), 10, "no service answering")
    if hasattr(impl, "wipe_state"):
        impl.wipe_state()  # a fresh pair, like keepalived's, which keeps no state
    impl.start()
    ensure_steady(impl, obs, timeout)


def ensure_steady(impl: Any, obs: Observer, timeout: float = 40.0) -> None:
    master = impl.master.name
    wait(lambda: obs.serving() == {master} and impl.steady(), timeout, f"{impl.label} steady state", poll=0.1)
    # one more look after a short hold: exactly the master serves
    obs.wait_serving({master}, timeout=timeout, hold=0.5)


def run_impl(
    key: str,
    bed: Testbed,
    obs: Observer,
    scenarios: Sequence[str],
    runs: int,
    idle_secs: float,
    rng: random.Random,
) -> ImplResult:
    label, factory = IMPLS[key]
    res = ImplResult(key, label)
    impl = factory(bed)
    a, b = impl.master, impl.backup
    try:
        log(f"{label}: starting")
        reset(impl, obs)
        if idle_secs > 0:
            obs.stop()
            res.idle = measure_idle(impl, [a, b], idle_secs)
            obs.start()
            log(f"{label}: idle {json.dumps(res.idle)}")
        for run in range(runs):
            if "nodeloss" in scenarios or "failback" in scenarios:
                try:
                    _nodeloss_failback(impl, obs, res, scenarios, rng, a, b)
                except (TimeoutError, RuntimeError) as exc:
                    res.errors.append(f"run {run + 1} nodeloss/failback: {exc}")
                    log(f"{label}: {exc}")
                    reset(impl, obs)
            if "linkdown" in scenarios:
                try:
                    _linkdown(impl, obs, res, rng, a, b)
                except (TimeoutError, RuntimeError) as exc:
                    res.errors.append(f"run {run + 1} linkdown: {exc}")
                    log(f"{label}: {exc}")
                    a.link_up("switch")
                reset(impl, obs)
            if "partition" in scenarios:
                try:
                    _partition(impl, obs, res, rng, a, b)
                except (TimeoutError, RuntimeError) as exc:
                    res.errors.append(f"run {run + 1} partition: {exc}")
                    log(f"{label}: {exc}")
                    bed.heal()
                reset(impl, obs)
            if "crash" in scenarios:
                try:
                    _crash(impl, obs, res, rng, a)
                except (TimeoutError, RuntimeError) as exc:
                    res.errors.append(f"run {run + 1} crash: {exc}")
                    log(f"{label}: {exc}")
                reset(impl, obs)
            log(f"{label}: run {run + 1}/{runs} done")
    finally:
        impl.stop()
    return res


def _nodeloss_failback(
    impl: Any, obs: Observer, res: ImplResult, scenarios: Sequence[str], rng: random.Random, a: Node, b: Node
) -> None:
    ensure_steady(impl, obs)
    obs.clear()  # the timeline keeps the 0-1 s before the fault as context
    time.sleep(rng.uniform(0, 1))
    impl.kill_node(a, before=lambda: obs.mark("kill"))
    t_kill = obs.timeline().mark_time("kill")
    if VIP_MODE["on"]:
        _power_off(a)
    obs.wait(lambda: b.name in obs.serving(), timeout=40, what=f"{b.name} serving after node loss")
    obs.wait_serving({b.name}, timeout=40, hold=1.0)
    tl = obs.timeline()
    first = tl.first_up(t_kill, [b.name])
    assert first is not None
    res.add("nodeloss_s", first[0] - t_kill)
    res.add("nodeloss_dual_ms", 1000 * sum(i.length for i in tl.dual_active(t_kill)))
    _client_figures(res, "nodeloss", t_kill, time.monotonic(), b)
    if "nodeloss" in scenarios:
        res.timelines["nodeloss"] = (tl, t_kill)
    if VIP_MODE["on"]:
        a.link_up("node")
    if "failback" not in scenarios:
        impl.boot(a)
        ensure_steady(impl, obs)
        return
    time.sleep(rng.uniform(0.5, 1.5))
    t_boot = obs.mark("boot")
    impl.boot(a)
    settled = obs.wait_serving({a.name}, timeout=40, hold=1.5)
    tl = obs.timeline()
    res.add("failback_s", settled - t_boot if (s := tl.settled(t_boot, a.name)) is None else s - t_boot)
    res.add("failback_dual_ms", 1000 * sum(i.length for i in tl.dual_active(t_boot)))
    res.add("failback_gap_ms", 1000 * sum(i.length for i in tl.no_service(t_boot)))
    _client_figures(res, "failback", t_boot, time.monotonic(), a)
    res.timelines["failback"] = (tl, t_boot)
    ensure_steady(impl, obs)


def _crash(impl: Any, obs: Observer, res: ImplResult, rng: random.Random, a: Node) -> None:
    ensure_steady(impl, obs)
    obs.clear()  # the timeline keeps the 0-1 s before the fault as context
    time.sleep(rng.uniform(0, 1))
    if not impl.kill_service(a, before=lambda: obs.mark("kill")):
        raise RuntimeError("no service process found to kill")
    t_kill = obs.timeline().mark_time("kill")
    obs.wait(lambda: obs.timeline().first_down(t_kill, a.name) is not None, timeout=5, what="service down")
    obs.wait(lambda: bool(obs.serving()), timeout=45, what="a service answering after the crash")
    obs.wait_serving(obs.serving(), timeout=10, hold=1.0)
    tl = obs.timeline()
    # the killed service may still have answered a sample taken within a few ms of the kill
    down = tl.first_down(t_kill, a.name)
    first = tl.first_up(down if down is not None else t_kill)
    assert first is not None
    res.add("crash_s", first[0] - t_kill)
    res.add("crash_dual_ms", 1000 * sum(i.length for i in tl.dual_active(t_kill)))
    _client_figures(res, "crash", t_kill, time.monotonic(), next(n for n in impl.bed.nodes if n.name == first[1]))
    res.timelines["crash"] = (tl, t_kill)


def _linkdown(impl: Any, obs: Observer, res: ImplResult, rng: random.Random, a: Node, b: Node) -> None:
    ensure_steady(impl, obs)
    obs.clear()
    time.sleep(rng.uniform(0, 1))
    t_cut = obs.mark("link down")
    a.link_down("switch")
    try:
        obs.wait(lambda: b.name in obs.serving(), timeout=40, what=f"{b.name} serving after link down")
        end = t_cut + LINK_DOWN_SECS
        obs.wait(lambda: time.monotonic() >= end, timeout=LINK_DOWN_SECS + 5, what="link-down duration")
    finally:
        t_heal = obs.mark("link up")
        a.link_up("switch")
    settled = obs.wait_serving({a.name}, timeout=60, hold=1.5)
    tl = obs.timeline()
    first = tl.first_up(t_cut, [b.name])
    assert first is not None
    res.add("linkdown_s", first[0] - t_cut)
    res.add("linkdown_dual_ms", 1000 * sum(i.length for i in tl.dual_active(t_cut, t_heal)))
    _client_figures(res, "linkdown", t_cut, t_heal, b)
    res.add("linkdown_back_s", settled - t_heal if (s := tl.settled(t_heal, a.name)) is None else s - t_heal)
    res.timelines["linkdown"] = (tl, t_cut)


def _partition(impl: Any, obs: Observer, res: ImplResult, rng: random.Random, a: Node, b: Node) -> None:
    """Drop only the heartbeats between the two nodes (both ways) for PARTITION_SECS."""
    ensure_steady(impl, obs)
    obs.clear()
    time.sleep(rng.uniform(0, 1))
    proto = "112" if impl.kind == "keepalived" else "udp"  # VRRP is IP protocol 112
    t_cut = obs.mark("partition")
    try:
        for x, y in ((a, b), (b, a)):
            x.drop_from(y, proto)
            x.drop_to(y, proto)
        end = t_cut + PARTITION_SECS
        obs.wait(lambda: time.monotonic() >= end, timeout=PARTITION_SECS + 5, what="partition duration")
    finally:
        t_heal = obs.mark("heal")
        impl.bed.heal()
    settled = obs.wait_serving({a.name}, timeout=60, hold=1.5)
    tl = obs.timeline()
    res.add("partition_dual_s", sum(i.length for i in tl.dual_active(t_cut, t_heal)))
    res.add("partition_gap_s", sum(i.length for i in tl.no_service(t_cut, t_heal)))
    res.add("partition_back_s", settled - t_heal if (s := tl.settled(t_heal, a.name)) is None else s - t_heal)
    res.timelines["partition"] = (tl, t_cut)


# -- report ---------------------------------------------------------------------------------
ROWS = [
    ("nodeloss_s", "node loss → other node serving (s)", "s"),
    ("nodeloss_dual_ms", "node loss: dual-active (ms)", "ms"),
    ("crash_s", "service crash → serving again (s)", "s"),
    ("crash_dual_ms", "service crash: dual-active (ms)", "ms"),
    ("failback_s", "failback → preferred node sole server (s)", "s"),
    ("failback_dual_ms", "failback: dual-active (ms)", "ms"),
    ("failback_gap_ms", "failback: no-service gap (ms)", "ms"),
    ("linkdown_s", "link down (8 s) → other node serving (s)", "s"),
    ("linkdown_dual_ms", "link down: dual-active (ms)", "ms"),
    ("linkdown_back_s", "link up → preferred node sole server again (s)", "s"),
    ("partition_dual_s", "heartbeats cut 8 s: both nodes serving (s)", "s"),
    ("partition_gap_s", "heartbeats cut 8 s: no node serving (s)", "s"),
    ("partition_back_s", "heal → preferred node sole server again (s)", "s"),
]
for _scenario, _what in (
    ("nodeloss", "node loss"),
    ("crash", "crash"),
    ("failback", "failback"),
    ("linkdown", "link down"),
):
    ROWS += [
        (f"{_scenario}_client_gap_s", f"{_what}: client's longest gap via the VIP (s)", "s"),
        (f"{_scenario}_client_fail", f"{_what}: client requests failed (10 ms apart)", "n"),
        (f"{_scenario}_client_arp_s", f"{_what}: client's ARP entry → new holder (s)", "s"),
        (f"{_scenario}_conn_gap_s", f"{_what}: long-lived connection's longest gap (s)", "s"),
        (f"{_scenario}_conn_hung", f"{_what}: long-lived requests that hung 1 s (timeout)", "n"),
    ]


def fmt_cell(cell: Cell | None, unit: str) -> str:
    if cell is None or not cell.values:
        return "—"
    v = cell.values
    digits = 3 if unit == "s" else 0  # "ms" and "n" (counts) without decimals
    med = statistics.median(v)
    return f"{med:.{digits}f} [{min(v):.{digits}f}\u2013{max(v):.{digits}f}]"


def ratio(num: Cell | None, den: Cell | None) -> str:
    if not num or not den or not num.values or not den.values:
        return "—"
    n, d = statistics.median(num.values), statistics.median(den.values)
    if d == 0:
        return "0 = 0" if n == 0 else "∞"
    return f"{n / d:.2f}"


def report(results: list[ImplResult], args: argparse.Namespace, notes: list[str]) -> str:
    keys = [r.key for r in results]
    by = {r.key: r for r in results}
    ratio_cols = [(h, k) for h, k in RATIOS.items() if h in by and k in by]
    head = ["metric", *(IMPLS[k][0] for k in keys), *(f"{h} / {k}" for h, k in ratio_cols)]
    lines = [
        f"Command: `{' '.join(['python', 'bench/failover.py', *sys.argv[1:]])}`  ",
        f"Runs per cell: {args.runs}; sampler period 10 ms; cells are median [min\u2013max].  ",
        f"Host: {os.uname().release}, {os.cpu_count()} CPUs; keepalived {keepalived_version()}.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for metric, title, unit in ROWS:
        if not any(metric in r.metrics for r in results):
            continue
        row = [title, *(fmt_cell(by[k].metrics.get(metric), unit) for k in keys)]
        row += [ratio(by[h].metrics.get(metric), by[k].metrics.get(metric)) for h, k in ratio_cols]
        lines.append("| " + " | ".join(row) + " |")
    for role, idx in (("preferred", 0), ("other", 1)):
        for field_, title, fmt in (
            ("cpu_pct", f"idle CPU % ({role} node)", "{:.3f}"),
            ("cpu_pct_children", f"idle CPU % +children ({role} node)", "{:.3f}"),
            ("rss_kb", f"RSS MB ({role} node)", "{:.1f}"),
        ):
            vals = {}
            for k in keys:
                idle = by[k].idle
                if idle:
                    name = sorted(idle)[idx]
                    v = idle[name][field_]
                    vals[k] = v / 1024 if field_ == "rss_kb" else v
            if not vals:
                continue
            row = [title, *(fmt.format(vals[k]) if k in vals else "—" for k in keys)]
            for h, k in ratio_cols:
                row.append(f"{vals[h] / vals[k]:.2f}" if h in vals and k in vals and vals[k] else "—")
            lines.append("| " + " | ".join(row) + " |")
    errs = [f"- {IMPLS[r.key][0]}: {e}" for r in results for e in r.errors]
    if notes or errs:
        lines += ["", "Notes:", *(f"- {n}" for n in notes), *errs]
    return "\n".join(lines) + "\n"


def keepalived_version() -> str:
    import subprocess

    out = subprocess.run(["keepalived", "--version"], capture_output=True, text=True, check=False)
    return (out.stderr or out.stdout).split("\n", 1)[0].replace("Keepalived ", "")


# -- timelines ----------------------------------------------------------------------------
COLORS = {"n1": "#2b7bba", "n2": "#f28e2b", "n3": "#59a14f", "n4": "#b07aa1", "n5": "#9c755f"}


def _panel_data(tl: Timeline, t0: float, span: tuple[float, float]) -> dict[str, Any]:
    lo, hi = t0 + span[0], t0 + span[1]
    return {
        "lanes": {n: [(i.start - t0, i.end - t0) for i in tl.intervals(n, lo, hi)] for n in tl.nodes},
        "dual": [(i.start - t0, i.end - t0) for i in tl.dual_active(lo, min(hi, tl.end))],
        "gap": [(i.start - t0, i.end - t0) for i in tl.no_service(max(lo, tl.start), min(hi, tl.end))],
    }


def render_timelines(results: list[ImplResult], outdir: Path, scenarios: Sequence[str]) -> list[Path]:
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    spans = {"nodeloss": (-1.0, 5.0), "crash": (-1.0, 16.0), "failback": (-1.0, 6.0), "linkdown": (-1.0, 14.0)}
    for scenario in scenarios:
        panels = [(IMPLS[r.key][0], *r.timelines[scenario]) for r in results if scenario in r.timelines]
        if not panels:
            continue
        span = spans.get(scenario, (-1.0, 6.0))
        data = [(label, _panel_data(tl, t0, span)) for label, tl, t0 in panels]
        try:
            path = _render_png(scenario, data, span, outdir)
        except ImportError:
            path = _render_svg(scenario, data, span, outdir)
        written.append(path)
    return written


_EVENT = {
    "nodeloss": "kill -9 node",
    "crash": "kill -9 service",
    "failback": "boot preferred node",
    "linkdown": "cable pulled for 8 s",
}


def _render_png(scenario: str, data: list[tuple[str, dict[str, Any]]], span: tuple[float, float], outdir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(data), 1, figsize=(10, 1.3 * len(data) + 0.8), sharex=True, squeeze=False)
    for ax, (label, d) in zip(axes[:, 0], data, strict=True):
        lanes = list(d["lanes"])
        for y, n in enumerate(lanes):
            ax.broken_barh([(s, e - s) for s, e in d["lanes"][n]], (y - 0.35, 0.7), color=COLORS.get(n, "#777"))
        for s, e in d["dual"]:
            ax.axvspan(s, e, color="red", alpha=0.25)
        for s, e in d["gap"]:
            ax.axvspan(s, e, color="grey", alpha=0.2)
        ax.axvline(0, color="black", lw=1)
        ax.set_yticks(range(len(lanes)), lanes)
        ax.set_title(label, fontsize=9, loc="left")
    axes[-1, 0].set_xlim(*span)
    axes[-1, 0].set_xlabel(f"seconds after {_EVENT.get(scenario, scenario)} (red: dual-active, grey: no service)")
    fig.tight_layout()
    path = outdir / f"failover-{scenario}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _render_svg(scenario: str, data: list[tuple[str, dict[str, Any]]], span: tuple[float, float], outdir: Path) -> Path:
    width, left, right, lane_h, title_h = 960, 70, 20, 22, 20
    plot_w = width - left - right

    def x(t: float) -> float:
        t = min(max(t, span[0]), span[1])
        return left + (t - span[0]) / (span[1] - span[0]) * plot_w

    parts: list[str] = []
    y = 10
    for label, d in data:
        lanes = list(d["lanes"])
        top = y + title_h
        height = lane_h * len(lanes)
        parts.append(f'<text x="{left}" y="{y + 14}" font-size="13" font-family="sans-serif">{_esc(label)}</text>')
        parts.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{height}" fill="#fafafa" stroke="#ccc"/>')
        for s, e in d["gap"]:
            parts.append(
                f'<rect x="{x(s):.1f}" y="{top}" width="{max(x(e) - x(s), 0.5):.1f}" height="{height}" '
                'fill="#999" fill-opacity="0.25"/>'
            )
        for i, n in enumerate(lanes):
            ly = top + i * lane_h
            parts.append(
                f'<text x="{left - 8}" y="{ly + 15}" font-size="12" text-anchor="end" '
                f'font-family="sans-serif">{_esc(n)}</text>'
            )
            for s, e in d["lanes"][n]:
                parts.append(
                    f'<rect x="{x(s):.1f}" y="{ly + 4}" width="{max(x(e) - x(s), 0.5):.1f}" '
                    f'height="{lane_h - 8}" fill="{COLORS.get(n, "#777")}"/>'
                )
        for s, e in d["dual"]:
            parts.append(
                f'<rect x="{x(s):.1f}" y="{top}" width="{max(x(e) - x(s), 0.5):.1f}" height="{height}" '
                'fill="red" fill-opacity="0.3"/>'
            )
        parts.append(
            f'<line x1="{x(0):.1f}" y1="{top - 2}" x2="{x(0):.1f}" y2="{top + height + 2}" '
            'stroke="black" stroke-width="1.5"/>'
        )
        y = top + height + 12
    # axis
    step = 1.0 if span[1] - span[0] <= 10 else 2.0
    t = span[0]
    while t <= span[1] + 1e-9:
        parts.append(f'<line x1="{x(t):.1f}" y1="{y - 8}" x2="{x(t):.1f}" y2="{y - 3}" stroke="#333"/>')
        parts.append(
            f'<text x="{x(t):.1f}" y="{y + 9}" font-size="11" text-anchor="middle" '
            f'font-family="sans-serif">{t:g}</text>'
        )
        t += step
    caption = f"seconds after {_EVENT.get(scenario, scenario)} — red: dual-active, grey: no service answering"
    parts.append(f'<text x="{left}" y="{y + 26}" font-size="12" font-family="sans-serif">{_esc(caption)}</text>')
    height = y + 36
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}"><rect width="100%" height="100%" fill="white"/>' + "".join(parts) + "</svg>\n"
    )
    path = outdir / f"failover-{scenario}.svg"
    path.write_text(svg)
    return path


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# -- main ----------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma list of " + ",".join(SCENARIOS))
    p.add_argument("--impls", default=",".join(IMPLS), help="comma list of " + ",".join(IMPLS))
    p.add_argument("--idle-secs", type=float, default=10.0, help="idle CPU window per implementation (0: skip)")
    p.add_argument("--out", type=Path, help="also write the markdown table to this file")
    p.add_argument("--json", type=Path, help="write raw per-run values here")
    p.add_argument("--timelines", type=Path, help="directory for one timeline image per scenario")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--vip",
        action="store_true",
        help="client-visible figures: hasup gets the recipe's VIP, a client in the switch namespace uses it",
    )
    args = p.parse_args(argv)

    scenarios = [s for s in args.scenarios.split(",") if s]
    impls = [i for i in args.impls.split(",") if i]
    for s in scenarios:
        if s not in SCENARIOS:
            p.error(f"unknown scenario {s!r}")
    for i in impls:
        if i not in IMPLS:
            p.error(f"unknown implementation {i!r}")
    if (why := netns_unavailable()) is not None:
        print(f"network namespaces unavailable: {why}", file=sys.stderr)
        return 2
    notes: list[str] = []
    if any(i.startswith("ka-") for i in impls):
        ensure_keepalived()
        if (why := keepalived_unavailable()) is not None:
            notes.append(f"keepalived rows skipped: {why}")
            impls = [i for i in impls if not i.startswith("ka-")]
    if any(i.startswith("hasup") for i in impls) and (why := hasup_runner_unavailable()) is not None:
        notes.append(f"hasup rows skipped: {why}")
        impls = [i for i in impls if not i.startswith("hasup")]
    rng = random.Random(args.seed)
    results: list[ImplResult] = []
    VIP_MODE["on"] = args.vip
    with contextlib.ExitStack() as stack:
        bed = stack.enter_context(Testbed(3 if any("witness" in i for i in impls) else 2))
        obs = stack.enter_context(Observer(bed, interval=0.01, nodes=bed.nodes[:2]))
        if args.vip:
            _client["sampler"] = stack.enter_context(ClientSampler(bed, KA_VIP.split("/")[0], CLIENT_ADDR))
        for key in impls:
            try:
                results.append(run_impl(key, bed, obs, scenarios, args.runs, args.idle_secs, rng))
            except (TimeoutError, RuntimeError) as exc:
                notes.append(f"{IMPLS[key][0]} aborted: {exc}")
                log(f"{key} aborted: {exc}")
    text = report(results, args, notes)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    r.key: {
                        "metrics": {m: c.values for m, c in r.metrics.items()},
                        "idle": r.idle,
                        "errors": r.errors,
                    }
                    for r in results
                },
                indent=1,
            )
        )
    if args.timelines:
        for path in render_timelines(results, args.timelines, scenarios):
            log(f"timeline: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
