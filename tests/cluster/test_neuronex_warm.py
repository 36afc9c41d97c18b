"""Warm standby for NeuronEX on real components (issue 14).

Three testbed namespaces: n1 (priority 100) and n2 (90) run ``python -m hasup run``
with the ``neuronex`` backend, each beside a NeuronEX stand-in on its own loopback
(:mod:`tests.neuronex.standin`); n3 is the plant: a real pymodbus TCP device whose
register counts poll periods, Debian's mosquitto listening on n3's address only, and a
recorder subscribed to it. The counter makes every lost and duplicated sample exact.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests._support import missing_component, wait_until

from ..neuronex.plant import NeuronexCluster, Plant, continuity, plant_unavailable
from .hasup_node import REPO_ROOT, hasup_runner_unavailable
from .testbed import Node, Testbed, netns_unavailable

pytestmark = pytest.mark.netns

PERIOD = 1.0  # the driver's poll period (a typical NeuronEX group interval)


@pytest.fixture
def warm() -> Iterator[NeuronexCluster]:
    for what, why in (
        ("network namespaces", netns_unavailable()),
        ("hasup runner", hasup_runner_unavailable()),
        ("mosquitto / pymodbus / paho-mqtt", plant_unavailable()),
    ):
        if why is not None:
            missing_component(what, why)
    with Testbed(3) as bed:
        plant = Plant(bed.nodes[2], bed.workdir, period=PERIOD)
        plant.start()
        hs = NeuronexCluster(bed, plant, mode="warm", startup_delay=1.0, advert_interval="100ms")
        hs.start()
        try:
            wait_until(hs.steady, timeout=30, interval=0.1, what="n1 MASTER, n2 BACKUP")
            yield hs
        finally:
            hs.stop()
    assert bed.leftovers() == {"namespaces": [], "links": [], "processes": []}


def _samples_from(plant: Plant, source: str, after: float) -> int:
    return sum(1 for s in plant.samples() if s["source"] == source and float(s["rx"]) > after)


def test_neuronex_crash_on_the_holder_promotes_the_warm_standby(warm: NeuronexCluster) -> None:
    plant, n1, n2 = warm.plant, warm.nodes[0], warm.nodes[1]
    steady = time.time()
    wait_until(lambda: _samples_from(plant, "n1", steady) >= 3, timeout=15, interval=0.1, what="n1 publishing")
    before = time.time() - 2.5 * PERIOD

    crashed = time.time()
    assert warm.kill_neuronex(n1), "the NeuronEX stand-in on n1 was not running"
    wait_until(lambda: warm.states()["n2"] == "MASTER", timeout=10, interval=0.05, what="n2 promoted")
    wait_until(lambda: _samples_from(plant, "n2", crashed) >= 3, timeout=15, interval=0.1, what="n2 publishing")
    after = time.time()

    result = continuity(plant.samples(), before, after, PERIOD)
    assert result.sources.get("n1", 0) >= 1 and result.sources.get("n2", 0) >= 2, result
    assert result.lost <= 1, result
    assert result.duplicated == 0, result
    assert result.two_publishers == 0.0, result

    status = warm.status(n1)
    assert status is not None and status["state"] == "FAULT"
    assert "standby not ready" in status["reason"] or "service" in status["reason"], status

    # the handover ledger of the new holder shows the move and the window it saw
    move = _ledger(warm, n2)[-1]
    assert (move["previous"], move["holder"]) == ("n1", "n2"), move
    assert move["term"] == (warm.status(n2) or {}).get("term"), move
    assert 0 < float(move["no_holder"]) < 2.0, move
    assert move["two_holders"] == 0.0, move


def _ledger(warm: NeuronexCluster, node: Node) -> list[dict[str, Any]]:
    """``hasup ledger --json`` on ``node``."""
    proc = node.run(
        [
            "env",
            f"PYTHONPATH={REPO_ROOT}",
            sys.executable,
            "-m",
            "hasup",
            "ledger",
            "--json",
            "-c",
            str(warm.config_path(node)),
        ],
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    entries = json.loads(proc.stdout)
    assert isinstance(entries, list) and entries, proc.stdout
    return entries
