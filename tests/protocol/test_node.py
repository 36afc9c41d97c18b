"""Driving one ``Node`` directly with literal ``now`` values: what must never change state."""

from __future__ import annotations

from typing import Any

import pytest

from hasup.protocol import (
    CoreConfig,
    Flag,
    Heartbeat,
    KeyRing,
    Node,
    PeerSpec,
    Persist,
    PersistentState,
    ServiceStatus,
    StartService,
    State,
    encode,
)

GROUP = 51
KEYS = KeyRing.from_group_keys({1: b"group secret"}, 1)
A_ADDR = ("10.0.0.1", 5405)
B_ADDR = ("10.0.0.2", 5405)
C_ADDR = ("10.0.0.3", 5405)


def config(**changes: Any) -> CoreConfig:
    options: dict[str, Any] = {
        "name": "a",
        "group": GROUP,
        "priority": 90,
        "peers": (PeerSpec(B_ADDR, "b"),),
        "keys": KEYS,
    }
    options.update(changes)
    return CoreConfig(**options)


def from_b(
    seq: int, *, epoch: int = 5000, state: State = State.MASTER, active: bool = True, **changes: Any
) -> bytes:
    fields: dict[str, Any] = {
        "group": GROUP,
        "name": "b",
        "epoch": epoch,
        "seq": seq,
        "term": 3,
        "state": state,
        "base_priority": 100,
        "effective_priority": 100,
        "flags": Flag.ACTIVE if active else Flag.NONE,
        "advert_ms": 1000,
    }
    fields.update(changes)
    keys = fields.pop("keys", KEYS)
    return encode(Heartbeat(**fields), keys)


def boot(persisted: PersistentState | None = None, **changes: Any) -> Node:
    node = Node(config(**changes), boot_epoch=2000, now=0.0, persisted=persisted)
    node.service_status(ServiceStatus.STOPPED, 0.0)
    drain(node)
    return node


def drain(node: Node) -> list[object]:
    node.datagrams_to_send()
    actions = []
    while (action := node.next_action()) is not None:
        actions.append(action)
    return actions


def observable(node: Node) -> tuple[object, ...]:
    """Everything a dropped datagram must leave alone (drop counters excepted)."""
    stats = {k: v for k, v in node.statistics().items() if not k.startswith(("dropped_", "alarm_name_clash"))}
    peers = [(p.name, p.last, p.last_rx, p.down_at, p.mark) for p in node.peers()]
    return (node.state, node.term, node.holder, node.get_timer(), stats, peers, node.alarms)


def assert_dropped(node: Node, data: bytes, addr: tuple[str, int], reason: str, now: float) -> None:
    before = observable(node)
    count = node.statistics().get(f"dropped_{reason}", 0)
    node.receive_datagram(data, addr, now)
    assert node.statistics().get(f"dropped_{reason}", 0) == count + 1
    assert node.datagrams_to_send() == []
    actions = drain(node)
    assert all(type(a).__name__ == "Alarm" for a in actions)
    after = observable(node)
    if reason == "name_clash":  # the only drop that also raises an alarm
        assert after[:-1] == before[:-1]
        assert "name_clash" in node.alarms
    else:
        assert after == before


# --------------------------------------------------------------------------- replay
def test_accepts_then_rejects_repeated_seq() -> None:
    node = boot()
    node.receive_datagram(from_b(1), B_ADDR, 0.1)
    assert node.state == State.BACKUP  # a serving MASTER ends the listen period
    assert node.statistics()["received"] == 1
    drain(node)
    assert_dropped(node, from_b(1), B_ADDR, "replay", 0.2)


def test_rejects_older_seq_and_older_epoch() -> None:
    node = boot()
    node.receive_datagram(from_b(10), B_ADDR, 0.1)
    drain(node)
    assert_dropped(node, from_b(9), B_ADDR, "replay", 0.2)
    assert_dropped(node, from_b(10_000, epoch=4999), B_ADDR, "replay", 0.3)
    node.receive_datagram(from_b(11), B_ADDR, 0.4)
    assert node.peers()[0].mark == (5000, 11)
    # A new boot epoch of the peer restarts its sequence numbers.
    node.receive_datagram(from_b(1, epoch=5001), B_ADDR, 0.5)
    assert node.peers()[0].mark == (5001, 1)
    drain(node)
    assert_dropped(node, from_b(12), B_ADDR, "replay", 0.6)


def test_replayed_resignation_does_not_move_the_service() -> None:
    """b announced FAULT (a claims), then served again; a replay of the FAULT must be ignored."""
    node = boot()
    node.receive_datagram(from_b(1), B_ADDR, 0.1)
    fault = from_b(2, state=State.FAULT, active=False, effective_priority=0)
    node.receive_datagram(from_b(3), B_ADDR, 0.2)  # b is MASTER again (seq 3 > 2)
    drain(node)
    assert node.state == State.BACKUP
    assert_dropped(node, fault, B_ADDR, "replay", 0.3)
    assert node.state == State.BACKUP
    assert node.peers()[0].state == State.MASTER


def test_replay_does_not_extend_a_dead_masters_life() -> None:
    node = boot()
    node.receive_datagram(from_b(1), B_ADDR, 0.1)
    node.receive_datagram(from_b(2), B_ADDR, 1.1)
    drain(node)
    for t in (2.0, 3.0, 4.0):
        assert_dropped(node, from_b(2), B_ADDR, "replay", t)
    down_at = 1.1 + 3 + (256 - 90) / 256
    node.handle_timer(down_at)
    assert node.state == State.CLAIMING
    assert any(isinstance(a, StartService) for a in drain(node))


# --------------------------------------------------------------------------- forged, foreign, unknown
@pytest.mark.parametrize(
    ("data", "addr", "reason"),
    [
        (from_b(1, keys=KeyRing.from_group_keys({1: b"guessed secret"}, 1)), B_ADDR, "bad_tag"),
        (from_b(1, group=GROUP + 1), B_ADDR, "wrong_group"),
        (from_b(1, keys=KeyRing.insecure()), B_ADDR, "unkeyed"),
        (from_b(1, keys=KeyRing.from_group_keys({9: b"group secret"}, 9)), B_ADDR, "unknown_key"),
        (from_b(1)[:-1], B_ADDR, "bad_tag"),
        (b"garbage" * 20, B_ADDR, "malformed"),
        (from_b(1), C_ADDR, "unknown_peer"),  # a member's datagram from an unconfigured address
        (from_b(1, name="c"), B_ADDR, "unknown_peer"),  # wrong name for b's address
        (from_b(1, name="a"), B_ADDR, "name_clash"),  # our own name
    ],
)
@pytest.mark.parametrize("phase", ["init", "backup"])
def test_bad_datagrams_never_change_state(
    data: bytes, addr: tuple[str, int], reason: str, phase: str
) -> None:
    node = boot()
    if phase == "backup":
        node.receive_datagram(from_b(1, epoch=100), B_ADDR, 0.1)
        drain(node)
        assert node.state == State.BACKUP
    assert_dropped(node, data, addr, reason, 0.5)
    # The same again later: still nothing.
    assert_dropped(node, data, addr, reason, 0.7)


def test_learned_name_cannot_be_taken_by_a_second_address() -> None:
    cfg = {"peers": (PeerSpec(B_ADDR), PeerSpec(C_ADDR))}  # names learned from heartbeats
    node = boot(**cfg)
    node.receive_datagram(from_b(1), B_ADDR, 0.1)
    drain(node)
    assert [p.name for p in node.peers()] == ["b", None]
    assert_dropped(node, from_b(2), C_ADDR, "unknown_peer", 0.2)


def test_bad_datagrams_keep_a_master_serving() -> None:
    """A forged FAULT/RELEASING heartbeat to a MASTER's peer changes nothing."""
    node = boot()
    node.handle_timer(0.0 + 3 + (256 - 90) / 256)  # listen done, nobody there
    node.handle_timer(10.0)
    actions = drain(node)
    start = next(a for a in actions if isinstance(a, StartService))
    node.action_result(start, True, 10.05)
    drain(node)
    assert node.state == State.MASTER
    forged = KeyRing.from_group_keys({1: b"not it"}, 1)
    for i, state in enumerate([State.MASTER, State.CLAIMING, State.RELEASING]):
        bad = from_b(100 + i, state=state, term=99, keys=forged, release_target="b")
        assert_dropped(node, bad, B_ADDR, "bad_tag", 11.0 + i)
    assert node.state == State.MASTER
    assert node.term == 1


# --------------------------------------------------------------------------- persisted marks
def test_persisted_marks_reject_replays_after_restart() -> None:
    node = boot()
    captured = [from_b(seq) for seq in range(1, 40)]
    persisted: PersistentState | None = None
    t = 0.1
    for data in captured:
        node.receive_datagram(data, B_ADDR, t)
        node.handle_timer(t)
        for action in drain(node):
            if isinstance(action, Persist):
                persisted = action.state
        t += 0.5
    assert persisted is not None
    saved_mark = persisted.peer_marks["b"]
    assert saved_mark[1] >= 20  # persisted at least every 10 s
    # hasup restarts: everything up to the persisted mark is a replay.
    again = Node(config(), boot_epoch=persisted.epoch + 1, now=100.0, persisted=persisted)
    again.service_status(ServiceStatus.STOPPED, 100.0)
    drain(again)
    for data in captured[: saved_mark[1]]:
        assert_dropped(again, data, B_ADDR, "replay", 100.5)
    assert again.state == State.INIT
    fresh = from_b(saved_mark[1] + 1)
    again.receive_datagram(fresh, B_ADDR, 101.0)
    assert again.statistics()["received"] == 1
    assert again.state == State.BACKUP


def test_persisted_marks_for_learned_names() -> None:
    persisted = PersistentState(epoch=1000, peer_marks={"b": (5000, 50)})
    node = Node(config(peers=(PeerSpec(B_ADDR),)), boot_epoch=2000, now=0.0, persisted=persisted)
    node.service_status(ServiceStatus.STOPPED, 0.0)
    drain(node)
    assert_dropped(node, from_b(50), B_ADDR, "replay", 0.1)
    node.receive_datagram(from_b(51), B_ADDR, 0.2)
    assert node.statistics()["received"] == 1


def test_boot_epoch_must_grow() -> None:
    with pytest.raises(ValueError, match="boot_epoch"):
        Node(config(), boot_epoch=10, now=0.0, persisted=PersistentState(epoch=10))


def test_own_heartbeats_carry_acks() -> None:
    node = boot()
    node.receive_datagram(from_b(7), B_ADDR, 0.1)
    node.handle_timer(1.0)
    from hasup.protocol import decode

    sent = [decode(d, KEYS, GROUP) for d, _ in node.datagrams_to_send()]
    assert sent
    last = sent[-1]
    assert isinstance(last, Heartbeat)
    assert last.acks == {"b": (5000, 7)}
    assert last.epoch == 2000
