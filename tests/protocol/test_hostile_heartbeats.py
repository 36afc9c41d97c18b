"""Authenticated but hostile or broken heartbeats (issue 15, item 6).

A peer that holds the group key can still be misconfigured, buggy or compromised; what
it asks of us is bounded: its advert interval is clamped to the range ``hasup check``
accepts, a leave-running hold to our own ``max_hold`` and a release budget to an hour.
Our own heartbeat coming back (a switch loop, a mirror port, a replay) is counted and
ignored; a real name clash raises an alarm that clears once the clashing node is gone.
"""

from __future__ import annotations

import pytest

from hasup.protocol import Heartbeat, KeyRing, StartService, State, decode
from hasup.protocol._core import MAX_ADVERT_MS, MIN_ADVERT_MS, NAME_CLASH_CLEAR

from .test_node import B_ADDR, C_ADDR, GROUP, KEYS, assert_dropped, boot, drain, from_b


@pytest.mark.parametrize("addr", [B_ADDR, C_ADDR])
def test_our_own_heartbeat_reflected_is_counted_not_an_alarm(addr: tuple[str, int]) -> None:
    node = boot()
    node.receive_datagram(from_b(1), B_ADDR, 0.1)
    drain(node)
    node.handle_timer(1.0)
    sent = node.datagrams_to_send()
    assert sent, "the node sends its advert"
    data = sent[-1][0]
    hb = decode(data, KEYS, GROUP)
    assert isinstance(hb, Heartbeat) and hb.name == "a" and hb.epoch == node.epoch
    assert_dropped(node, data, addr, "reflected", 1.1)
    assert "name_clash" not in node.alarms
    assert node.state == State.BACKUP


def test_a_heartbeat_with_our_name_from_another_boot_is_a_clash_that_clears() -> None:
    node = boot()
    clash = from_b(1, name="a", epoch=node.epoch + 7)
    assert_dropped(node, clash, C_ADDR, "name_clash", 0.5)
    assert "name_clash" in node.alarms
    # still clashing: the alarm stays
    node.receive_datagram(from_b(2, name="a", epoch=node.epoch + 7), C_ADDR, NAME_CLASH_CLEAR - 1)
    node.handle_timer(NAME_CLASH_CLEAR + 0.5)
    assert "name_clash" in node.alarms
    # the other node is gone: the alarm clears at the first advert after the hold
    t = NAME_CLASH_CLEAR - 1
    while node.get_timer() is not None and t < 2 * NAME_CLASH_CLEAR + 2:
        t = node.get_timer() or t
        node.handle_timer(t)
        if "name_clash" not in node.alarms:
            break
    assert "name_clash" not in node.alarms
    assert NAME_CLASH_CLEAR * 2 - 1 <= t <= NAME_CLASH_CLEAR * 2 - 1 + 1.0 + 1e-9
    assert node.statistics()["alarm_name_clash"] == 1


def test_a_same_epoch_heartbeat_ahead_of_our_sequence_is_a_clash() -> None:
    """Only sequence numbers we have sent can be reflections."""
    node = boot()
    ahead = from_b(10_000, name="a", epoch=node.epoch)
    assert_dropped(node, ahead, B_ADDR, "name_clash", 0.5)


@pytest.mark.parametrize(
    ("advert_ms", "clamped_s"),
    [(4_000_000_000, MAX_ADVERT_MS / 1000), (1, MIN_ADVERT_MS / 1000)],
)
def test_peer_advert_interval_is_clamped(advert_ms: int, clamped_s: float) -> None:
    node = boot()
    node.receive_datagram(from_b(1, advert_ms=advert_ms), B_ADDR, 0.1)
    drain(node)
    assert node.state == State.BACKUP
    assert node.statistics()["clamped"] == 1
    down_at = 0.1 + 3 * clamped_s + (256 - 90) / 256 * clamped_s
    node.handle_timer(down_at - 1e-6)
    assert node.state == State.BACKUP
    node.handle_timer(down_at)
    assert node.state == State.CLAIMING
    assert any(isinstance(a, StartService) for a in drain(node))


def test_peer_hold_is_clamped_to_our_max_hold() -> None:
    node = boot(max_hold=20.0)
    node.receive_datagram(from_b(1), B_ADDR, 0.1)
    node.receive_datagram(from_b(2, state=State.STOPPING, hold_ms=4_000_000_000), B_ADDR, 1.0)
    drain(node)
    assert node.statistics()["clamped"] == 1
    node.handle_timer(21.0 - 1e-6)
    assert node.state == State.BACKUP  # the hold is honoured up to max_hold ...
    node.handle_timer(21.0)
    assert node.state == State.CLAIMING  # ... and not a second longer


def test_in_range_heartbeats_are_not_clamped() -> None:
    node = boot()
    node.receive_datagram(from_b(1, advert_ms=MAX_ADVERT_MS, release_budget_ms=3_600_000), B_ADDR, 0.1)
    node.receive_datagram(from_b(2, advert_ms=MIN_ADVERT_MS, hold_ms=30_000), B_ADDR, 0.2)
    assert node.statistics().get("clamped", 0) == 0


def test_a_wrong_key_cannot_even_reach_the_clamp() -> None:
    node = boot()
    forged = from_b(1, advert_ms=4_000_000_000, keys=KeyRing.from_group_keys({1: b"guessed"}, 1))
    assert_dropped(node, forged, B_ADDR, "bad_tag", 0.1)
    assert node.statistics().get("clamped", 0) == 0
