"""The pair witness with real processes in network namespaces (issue 16).

Two hasup nodes and ``hasup witness`` on a third node behind the same bridge; the
observer samples each node's stand-in service every 10 ms. One run of each scenario
(the 10-run measurement is ``bench/witness.py``): a partition between the nodes while
both reach the witness, the holder isolated from both, the witness down then a node
loss, a witness restart during a partition. The invariant in every one: never two
services answering at once. Adverts are 500 ms here to keep the test short.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests._support import missing_component

from .hasup_node import hasup_runner_unavailable
from .observer import Observer
from .testbed import Testbed, netns_unavailable
from .witness_node import FAULT_SECS, WitnessPair, run_scenario

pytestmark = pytest.mark.netns

ADVERT = 0.5
LEASE = 4 * ADVERT
MAX_LEASE = 3.0


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[WitnessPair, Observer]]:
    why = netns_unavailable()
    if why is not None:
        missing_component("network namespaces", why)
    why = hasup_runner_unavailable()
    if why is not None:
        missing_component("hasup runner", why)
    with Testbed(3) as bed:
        wp = WitnessPair(bed, advert_interval="500ms", max_lease=f"{MAX_LEASE}s")
        with Observer(bed, status_port=9105, status_interval=0.05, nodes=bed.nodes[:2]) as obs:
            wp.start()
            try:
                yield wp, obs
            finally:
                wp.stop()
    assert bed.leftovers() == {"namespaces": [], "links": [], "processes": []}


def test_partition_between_the_nodes_keeps_the_holder(pair: tuple[WitnessPair, Observer]) -> None:
    wp, obs = pair
    f = run_scenario("split", wp, obs)
    print(f"witness split: {f}")
    assert f["dual_s"] == 0.0
    assert f["outage_s"] < 0.1  # nothing moves: the holder keeps its vote
    st = wp.status(wp.backup)
    assert st is not None and st["witness"]["reachable"] is True


def test_isolated_holder_stops_before_the_peer_starts(pair: tuple[WitnessPair, Observer]) -> None:
    wp, obs = pair
    f = run_scenario("isolate", wp, obs)
    print(f"witness isolate: {f}")
    assert f["dual_s"] == 0.0
    # the peer serves once the holder's lease ran out on the witness (plus its start)
    assert f["outage_s"] < LEASE + 2 * ADVERT + 2.0
    assert f["recover_s"] < 10.0


def test_witness_down_then_node_loss(pair: tuple[WitnessPair, Observer]) -> None:
    wp, obs = pair
    f = run_scenario("witness-down-nodeloss", wp, obs)
    print(f"witness down + node loss: {f}")
    assert f["dual_s"] == 0.0
    # no service while the witness is down (the documented price), then the peer
    # claims after the restarted witness's quiet time
    assert f["outage_s"] >= FAULT_SECS
    assert MAX_LEASE <= f["recover_s"] < MAX_LEASE + 5.0


def test_witness_restart_during_a_partition(pair: tuple[WitnessPair, Observer]) -> None:
    wp, obs = pair
    f = run_scenario("witness-restart", wp, obs)
    print(f"witness restart in a partition: {f}")
    assert f["dual_s"] == 0.0
    assert f["recover_s"] < 10.0


def test_witness_status_and_alarm(pair: tuple[WitnessPair, Observer]) -> None:
    wp, obs = pair
    obs.wait(wp.steady, timeout=60, what="steady")
    doc = wp.witness_status()
    assert doc is not None and doc["witness"]["groups"]["51"]["holder"] == wp.master.name
    wp.kill_witness()
    try:

        def alarmed() -> bool:
            st = wp.status(wp.master)
            return st is not None and "witness_unreachable" in st.get("alarms", {})

        obs.wait(alarmed, timeout=10, what="witness_unreachable alarm")
        st = wp.status(wp.master)
        assert st is not None and st["state"] == "MASTER"  # the peer is the majority
        assert obs.serving() == {wp.master.name}
    finally:
        wp.start_witness()
