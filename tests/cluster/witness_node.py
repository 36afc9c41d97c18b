"""A hasup pair with ``hasup witness`` on a third testbed node, and the witness scenarios.

:class:`WitnessPair` is a :class:`~tests.cluster.hasup_node.HasupCluster` over the first
two nodes of a three-node testbed whose ``[group] witness`` is ``hasup witness``
running on the third (behind the same bridge). The scenario functions inject one fault,
wait for the pair to settle and return the figures the chaos test asserts and
``bench/witness.py`` reports: dual-active, outage, and time to recover after the heal.
All times are ``time.monotonic()``, the clock of the observer's samples.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .hasup_node import HasupCluster, _env

if TYPE_CHECKING:
    from .observer import Observer
    from .testbed import Node, Testbed

__all__ = ["SCENARIOS", "WitnessPair", "run_scenario"]

WITNESS_PORT = 5406
#: How long each fault is held before the heal.
FAULT_SECS = 8.0


class WitnessPair(HasupCluster):
    """hasup on nodes 0 and 1 with the witness on node 2."""

    def __init__(self, bed: Testbed, *, advert_interval: str = "1s", max_lease: str = "10s", **kw: Any) -> None:
        self.witness_node = bed.nodes[2]
        self.max_lease = max_lease
        extra = {"group": {"witness": f"{bed.nodes[2].addr}:{WITNESS_PORT}"}}
        super().__init__(
            bed,
            advert_interval=advert_interval,
            nodes=bed.nodes[:2],
            extra=extra,
            tag=kw.pop("tag", f"hasup-witness-{advert_interval}"),
            **kw,
        )

    @property
    def label(self) -> str:
        return f"hasup {self.advert_interval} + witness"

    def start_witness(self) -> None:
        w = self.witness_node
        w.spawn(
            "witness",
            [
                self.python,
                "-m",
                "hasup",
                "witness",
                "--listen",
                f"{w.addr}:{WITNESS_PORT}",
                "--group",
                f"51:{self.key_file}",
                "--max-lease",
                self.max_lease,
                "--status",
                "127.0.0.1:9106",
            ],
            env=_env(),
            cwd=self.root,
        )

    def witness_status(self) -> dict[str, Any] | None:
        import json

        proc = self.witness_node.run(["curl", "-s", "-m", "1", "http://127.0.0.1:9106/status"], check=False)
        with contextlib.suppress(ValueError):
            data = json.loads(proc.stdout)
            return data if isinstance(data, dict) else None
        return None

    def kill_witness(self) -> None:
        w = self.witness_node
        proc = w.procs.get("witness")
        if proc is not None and proc.alive():
            w.kill("witness")
            with contextlib.suppress(Exception):
                w.wait_exit("witness", 5)

    def start(self) -> None:
        if not (p := self.witness_node.procs.get("witness")) or not p.alive():
            self.start_witness()
        super().start()

    def stop(self) -> None:
        super().stop()
        self.kill_witness()

    def vote_holder(self) -> str | None:
        """The vote holder as the current MASTER's /status reports it."""
        for node in self.nodes:
            st = self.status(node)
            if st and st.get("state") == "MASTER" and st.get("witness"):
                holder = st["witness"].get("holder")
                return str(holder) if holder else None
        return None

    def steady(self) -> bool:
        """Preferred node MASTER holding the witness's vote, the other BACKUP."""
        return super().steady() and self.vote_holder() == self.master.name


def _hold(obs: Observer, until: float) -> None:
    obs.wait(lambda: time.monotonic() >= until, timeout=until - time.monotonic() + 5, what="fault duration")


def _figures(obs: Observer, t0: float, t_heal: float, nodes: list[Node], end_state: set[str]) -> dict[str, float]:
    """Wait until ``end_state`` serves alone (held 1.5 s); dual-active and outage since
    ``t0`` and the time from ``t_heal`` to that settled state."""
    settled = obs.wait_serving(end_state, timeout=90, hold=1.5)
    tl = obs.timeline()
    (name,) = end_state
    back = tl.settled(t_heal, name)
    return {
        "dual_s": sum(i.length for i in tl.dual_active(t0)),
        "outage_s": sum(i.length for i in tl.no_service(t0)),
        "recover_s": (back if back is not None else settled) - t_heal,
    }


def split(pair: WitnessPair, obs: Observer) -> dict[str, float]:
    """The link between the nodes is cut; both still reach the witness."""
    a, b = pair.master, pair.backup
    t0 = obs.mark("partition a|b")
    pair.bed.partition([a], [b])
    _hold(obs, t0 + FAULT_SECS)
    t_heal = obs.mark("heal")
    pair.bed.heal()
    return _figures(obs, t0, t_heal, [a, b], {a.name})


def isolate(pair: WitnessPair, obs: Observer) -> dict[str, float]:
    """The holder is cut from its peer and from the witness."""
    a, b, w = pair.master, pair.backup, pair.witness_node
    t0 = obs.mark("isolate a")
    pair.bed.partition([a], [b, w])
    _hold(obs, t0 + FAULT_SECS)
    t_heal = obs.mark("heal")
    pair.bed.heal()
    return _figures(obs, t0, t_heal, [a, b], {a.name})  # a preempts back after the heal


def witness_down_nodeloss(pair: WitnessPair, obs: Observer) -> dict[str, float]:
    """The witness is down, then the holder's node dies: the survivor cannot tell a dead
    peer from a cut link and does not serve until the witness is back (the documented
    price); "heal" is the witness's restart, the recovery ends when the peer serves."""
    a, b = pair.master, pair.backup
    pair.kill_witness()
    t_w = time.monotonic()
    _hold(obs, t_w + 2.0)
    t0 = obs.mark("kill a")
    pair.kill_node(a)
    _hold(obs, t0 + FAULT_SECS)
    t_heal = obs.mark("witness back")
    pair.start_witness()
    figures = _figures(obs, t0, t_heal, [a, b], {b.name})
    pair.boot(a)  # back to the steady state for the next run
    return figures


def witness_restart(pair: WitnessPair, obs: Observer) -> dict[str, float]:
    """The nodes are partitioned (both reach the witness) and the witness restarts in the
    middle of it (it forgets every lease and stays quiet for --max-lease)."""
    a, b = pair.master, pair.backup
    t0 = obs.mark("partition a|b")
    pair.bed.partition([a], [b])
    _hold(obs, t0 + 2.0)
    obs.mark("witness restart")
    pair.witness_node.restart("witness")
    _hold(obs, t0 + FAULT_SECS)
    t_heal = obs.mark("heal")
    pair.bed.heal()
    return _figures(obs, t0, t_heal, [a, b], {a.name})


SCENARIOS: dict[str, Callable[[WitnessPair, Observer], dict[str, float]]] = {
    "split": split,
    "isolate": isolate,
    "witness-down-nodeloss": witness_down_nodeloss,
    "witness-restart": witness_restart,
}


def run_scenario(name: str, pair: WitnessPair, obs: Observer, *, steady_timeout: float = 60.0) -> dict[str, float]:
    """Wait for the steady state (preferred node serving with the vote), then run ``name``."""
    obs.wait(pair.steady, timeout=steady_timeout, what=f"{pair.label} steady with the witness's vote")
    obs.wait_serving({pair.master.name}, timeout=steady_timeout, hold=0.5)
    obs.clear()
    return SCENARIOS[name](pair, obs)
