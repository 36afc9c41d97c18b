"""Quorum in groups of three: an isolated holder stops before the majority can start."""

from __future__ import annotations

import pytest

from hasup.protocol import State
from hasup.testing import NodeCluster


@pytest.mark.parametrize("advert", [1.0, 0.1, 0.02])
def test_isolated_holder_stops_before_the_majority_starts(advert: float) -> None:
    c = NodeCluster([("a", 100), ("b", 90), ("c", 80)], advert_interval=advert, stop_time=0.1 * advert)
    c.start()
    c.run_until_true(lambda: c.masters() == ["a"], timeout=20 * advert + 5)
    c.advance(5 * advert)
    cut = c.now
    c.partition(["a"], ["b", "c"])
    c.run_until_true(lambda: c.masters() == ["b"] and c.states()["a"] == State.FAULT, timeout=20 * advert + 5)
    a_stopped = max(b for _, b in c.intervals("a"))
    b_started = min(a for a, _ in c.intervals("b"))
    assert a_stopped <= b_started, "the isolated holder must stop before the majority starts"
    assert a_stopped - cut < 3 * advert
    assert c.overlaps() == []


def test_loss_does_not_make_a_three_node_holder_flap() -> None:
    c = NodeCluster([("a", 100), ("b", 90), ("c", 80)], advert_interval=0.1, loss=0.2, seed=3)
    c.start()
    c.run_until_true(lambda: c.masters() == ["a"], timeout=10)
    t0 = c.now
    c.advance(300)
    faults = [e for e in c.notifications("a") if e.time > t0 and e.state == State.FAULT]
    assert faults == []
    assert c.masters() == ["a"]
