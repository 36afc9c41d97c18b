"""The pair witness on virtual time: wire, the witness's book, and the pair's rules.

Timing (docs/witness.md): with lease ``L`` (default 4 adverts) a holder cut off from
its peer and the witness at ``cut`` issues its stop no later than
``cut + max(2 adverts, L/2) + advert/2``; the witness cannot grant the vote to anyone
else before ``cut - advert/2 + L``.
"""

from __future__ import annotations

import pytest

from hasup.protocol import Drop, KeyRing, State
from hasup.protocol._witness import (
    WITNESS_LABEL,
    Vote,
    VoteRequest,
    WitnessBook,
    WitnessVote,
    decode_request,
    encode_request,
)
from hasup.testing import FakeWitness, NodeCluster

KEYS = KeyRing.from_group_keys({1: b"k" * 32}, 1, label=WITNESS_LABEL)
OTHER = KeyRing.from_group_keys({1: b"x" * 32}, 1, label=WITNESS_LABEL)


def _req(name: str, seq: int, *, want: bool = True, lease_ms: int = 4000, epoch: int = 7) -> bytes:
    return encode_request(VoteRequest(51, name, epoch, seq, want, lease_ms), KEYS)


# ---------------------------------------------------------------------- wire and book
def test_witness_keys_differ_from_heartbeat_keys() -> None:
    assert KEYS.keys[1] != KeyRing.from_group_keys({1: b"k" * 32}, 1).keys[1]


def test_request_round_trip_and_bad_tag() -> None:
    data = _req("a", 1)
    assert decode_request(data, {51: KEYS}) == VoteRequest(51, "a", 7, 1, True, 4000, 1)
    assert decode_request(data, {51: OTHER}) == Drop.BAD_TAG
    assert decode_request(data, {52: KEYS}) == Drop.WRONG_GROUP
    assert decode_request(data[:-1] + bytes([data[-1] ^ 1]), {51: KEYS}) == Drop.BAD_TAG
    assert decode_request(b"HSWQ", {51: KEYS}) == Drop.MALFORMED


def test_book_grants_one_lease_at_a_time() -> None:
    book = WitnessBook({51: KEYS}, max_lease=10.0, now=0.0)
    vote_a = WitnessVote(KEYS, 51, "a", 4.0)
    vote_b = WitnessVote(KEYS, 51, "b", 4.0)
    # quiet for max_lease after its start
    rep = vote_a.reply(book.handle(vote_a.request(7, 1, True, 1.0), 1.0) or b"", 1.0)
    assert not isinstance(rep, Drop) and rep.vote is Vote.QUIET
    rep = vote_a.reply(book.handle(vote_a.request(7, 2, True, 10.0), 10.0) or b"", 10.0)
    assert not isinstance(rep, Drop) and rep.vote is Vote.GRANTED
    assert vote_a.valid(11.9) and not vote_a.valid(12.0)  # sent + L - L/2
    rep = vote_b.reply(book.handle(vote_b.request(8, 1, True, 11.0), 11.0) or b"", 11.0)
    assert not isinstance(rep, Drop) and rep.vote is Vote.DENIED and rep.holder == "a"
    assert not vote_b.valid(11.0)
    # a's lease expires on the witness 4 s after it received the request
    assert book.holder(51, 13.99) == "a"
    rep = vote_b.reply(book.handle(vote_b.request(8, 2, True, 14.0), 14.0) or b"", 14.0)
    assert not isinstance(rep, Drop) and rep.vote is Vote.GRANTED
    # a's next request is denied and ends its own view of the lease at once
    rep = vote_a.reply(book.handle(vote_a.request(7, 3, True, 14.1), 14.1) or b"", 14.1)
    assert not isinstance(rep, Drop) and rep.vote is Vote.DENIED and not vote_a.valid(14.1)
    # b releases: a gets it at once
    vote_b.reply(book.handle(vote_b.request(8, 3, False, 15.0), 15.0) or b"", 15.0)
    assert book.holder(51, 15.0) == ""


def test_book_caps_the_lease_and_drops_replays() -> None:
    book = WitnessBook({51: KEYS}, max_lease=5.0, now=-10.0)
    vote = WitnessVote(KEYS, 51, "a", 30.0)
    request = vote.request(7, 1, True, 0.0)
    reply = book.handle(request, 0.0)
    assert reply is not None
    assert book.handle(request, 0.1) is None  # replayed request
    assert book.stats["dropped_replay"] == 1
    rep = vote.reply(reply, 0.2)
    assert not isinstance(rep, Drop) and rep.lease_ms == 5000
    assert vote.deadline == pytest.approx(0.0 + 5.0 / 2)  # the capped lease, minus half of it
    assert vote.reply(reply, 0.3) == Drop.REPLAY  # a reply counts once
    # a grant shorter than the node's minimum does not count at all
    strict = WitnessVote(KEYS, 51, "a", 30.0, min_lease=8.0)
    rep = strict.reply(book.handle(strict.request(8, 1, True, 1.0), 1.0) or b"", 1.0)
    assert not isinstance(rep, Drop) and rep.vote is Vote.GRANTED
    assert not strict.valid(1.0) and strict.too_short == 1


def test_reply_for_another_node_or_another_key_is_dropped() -> None:
    book = WitnessBook({51: KEYS}, max_lease=5.0, now=-10.0)
    a, b = WitnessVote(KEYS, 51, "a", 4.0), WitnessVote(KEYS, 51, "b", 4.0)
    reply = book.handle(a.request(7, 1, True, 0.0), 0.0)
    assert reply is not None
    assert b.reply(reply, 0.0) == Drop.UNKNOWN_PEER
    assert WitnessVote(OTHER, 51, "a", 4.0).reply(reply, 0.0) == Drop.BAD_TAG


def test_book_state_is_bounded() -> None:
    book = WitnessBook({51: KEYS}, max_lease=5.0, now=-10.0, max_nodes=3)
    for i in range(10):
        assert book.handle(_req(f"n{i}", 1), 0.0) is not None
    assert len(book._groups[51].marks) == 3
    assert book.holder(51, 0.0) == "n0"  # the holder is never forgotten
    assert "n0" in book._groups[51].marks
    assert book.handle(b"\x00" * 2000, 0.0) is None
    assert book.handle(_req("a", 1)[:-3] + b"xyz", 0.0) is None


# ---------------------------------------------------------------------- the pair
def _pair(advert: float = 1.0, *, max_lease: float = 10.0, **kw: object) -> tuple[NodeCluster, FakeWitness]:
    w = FakeWitness(max_lease=max_lease)
    c = NodeCluster([("a", 100), ("b", 90)], advert_interval=advert, witness=w, **kw)  # type: ignore[arg-type]
    c.start()
    c.run_until_true(lambda: c.masters() == ["a"], timeout=30 * advert + 5)
    c.advance(max_lease + 2)  # past the witness's quiet start: a holds the vote
    assert w.holder(51, c.now) == "a"
    return c, w


@pytest.mark.parametrize("advert", [1.0, 0.1, 0.02])
def test_partition_between_the_nodes_keeps_the_holder_and_nobody_else_starts(advert: float) -> None:
    c, _w = _pair(advert)
    cut = c.now
    c.partition(["a", "witness"], ["b", "witness"])
    c.advance(100 * advert)
    assert c.overlaps() == []
    assert c.intervals("b") == []
    assert c.masters() == ["a"] and c.states()["b"] == State.BACKUP
    assert c.node("b").witness_snapshot(c.now)["holder"] == "a"  # type: ignore[index]
    # after the heal nothing moves
    c.heal()
    c.advance(20 * advert)
    assert c.masters() == ["a"] and c.intervals("b") == []
    assert c.first("stop", "a", after=cut) is None


@pytest.mark.parametrize("advert", [1.0, 0.1, 0.02])
def test_isolated_holder_stops_before_the_witness_can_vote_for_the_peer(advert: float) -> None:
    c, _w = _pair(advert, stop_time=0.1 * advert)
    lease = c.node("a").config.vote_lease
    cut = c.now
    c.partition(["a"], ["b", "witness"])
    c.run_until_true(lambda: c.masters() == ["b"], timeout=20 * advert + 5)
    stop_at = c.first("stop", "a", after=cut)
    start_at = c.first("start", "b", after=cut)
    assert stop_at is not None and start_at is not None
    assert stop_at.time - cut <= max(2 * advert, lease / 2) + advert / 2 + 1e-9
    assert start_at.time - cut >= lease - advert / 2 - 1e-9
    assert c.overlaps() == []


def test_holder_crash_fails_over_within_the_lease() -> None:
    c, w = _pair(1.0)
    cut = c.now
    c.kill("a")
    c.run_until_true(lambda: c.masters() == ["b"], timeout=20)
    start = c.first("start", "b", after=cut)
    assert start is not None
    # the lease ends on the witness at most 4 s after the crash; b asks every advert/2
    assert 4.0 - 0.5 <= start.time - cut <= 4.0 + 0.5 + 0.01
    assert w.holder(51, c.now) == "b"


def test_witness_down_the_pair_runs_as_before() -> None:
    c, w = _pair(1.0)
    w.stop(c.now)
    t0 = c.now
    c.advance(60)
    assert c.masters() == ["a"]
    assert c.first("stop", "a", after=t0) is None
    assert "witness_unreachable" in c.node("a").alarms
    assert "witness_unreachable" in c.node("b").alarms
    snap = c.node("a").witness_snapshot(c.now)
    assert snap is not None and snap["reachable"] is False
    # a planned switchover still works without the witness (the peer is the majority)
    c.switchover("a", "b")
    c.run_until_true(lambda: c.masters() == ["b"], timeout=20)
    assert c.overlaps() == []
    w.start(c.now)
    c.run_until_true(lambda: "witness_unreachable" not in c.node("a").alarms, timeout=5)


def test_witness_down_then_node_loss_is_an_outage_until_the_witness_returns() -> None:
    c, w = _pair(1.0)
    w.stop(c.now)
    c.advance(5)
    t0 = c.now
    c.kill("a")
    c.advance(60)
    assert c.intervals("b") == []  # b cannot tell a dead a from a cut link
    w.start(c.now)
    back = c.now
    c.run_until_true(lambda: c.masters() == ["b"], timeout=30)
    start = c.first("start", "b", after=t0)
    assert start is not None and start.time >= back + w.max_lease  # the quiet period
    assert c.overlaps() == []


def test_witness_down_then_peer_loss_stops_the_holder() -> None:
    c, w = _pair(1.0)
    w.stop(c.now)
    c.advance(5)
    cut = c.now
    c.kill("b")
    c.run_until_true(lambda: c.states()["a"] == State.FAULT, timeout=10)
    stop = c.first("stop", "a", after=cut)
    assert stop is not None and stop.time - cut <= 2.5 + 1e-9
    c.run_until_true(lambda: not c.sims["a"].running, timeout=1)


def test_witness_restart_during_a_partition_never_makes_two_holders() -> None:
    c, w = _pair(1.0)
    c.partition(["a", "witness"], ["b", "witness"])
    c.advance(10)
    w.stop(c.now)
    w.start(c.now + 0.5)
    c.advance(60)
    assert c.overlaps() == []
    assert len(c.masters()) == 1
    c.heal()
    c.advance(30)
    assert c.overlaps() == []
    assert len(c.masters()) == 1


def test_one_way_loss_with_the_witness_reachable_keeps_one_holder() -> None:
    c, _w = _pair(1.0)
    c.block("a", "b")  # b no longer hears a; a still hears b
    c.advance(60)
    assert c.overlaps() == []
    assert c.masters() == ["a"]
    c.heal()
    c.block("b", "a")
    c.advance(60)
    assert c.overlaps() == []
    assert len(c.masters()) == 1


def test_status_shows_the_witness() -> None:
    c, _w = _pair(1.0)
    snap = c.node("a").snapshot(c.now)["witness"]
    assert isinstance(snap, dict)
    assert snap["reachable"] is True and snap["vote"] == "held" and snap["holder"] == "a"
    snap_b = c.node("b").snapshot(c.now)["witness"]
    assert isinstance(snap_b, dict) and snap_b["vote"] == "not held" and snap_b["wanted"] is False
    assert c.node("a").statistics()["witness_replies"] > 0


def test_without_a_witness_nothing_is_sent_to_one() -> None:
    c = NodeCluster([("a", 100), ("b", 90)])
    c.start()
    c.advance(10)
    assert c.node("a").snapshot(c.now)["witness"] is None
    assert "witness_requests" not in c.node("a").statistics()


@pytest.mark.parametrize("witness_up", [True, False])
def test_restarting_hasup_on_the_holder_keeps_the_service(witness_up: bool) -> None:
    c, w = _pair(1.0)
    if not witness_up:
        w.stop(c.now)
        c.advance(5)
    t0 = c.now
    c.crash_supervisor("a")
    c.advance(0.5)
    c.restart("a")
    c.advance(20)
    assert c.masters() == ["a"]
    assert c.first("stop", "a", after=t0) is None and c.first("start", "a", after=t0) is None
    assert c.intervals("b") == [] and c.overlaps() == []


def test_a_witness_granting_too_short_leases_is_not_counted() -> None:
    w = FakeWitness(max_lease=2.0)  # below the pair's 4 s lease minimum
    c = NodeCluster([("a", 100), ("b", 90)], witness=w)
    c.start()
    c.run_until_true(lambda: c.masters() == ["a"], timeout=30)
    c.advance(10)
    assert "witness_lease_too_short" in c.node("a").alarms
    assert c.node("a").witness_snapshot(c.now)["vote"] == "not held"  # type: ignore[index]
    c.partition(["a", "witness"], ["b", "witness"])
    c.advance(30)
    assert c.overlaps() == []  # without a usable vote neither node serves alone
    assert c.masters() == []


def test_a_resigning_holder_releases_the_vote() -> None:
    """SIGTERM on the holder: it releases its lease once its service is stopped, so the
    peer claims at once instead of waiting for the lease to run out."""
    c, w = _pair(1.0)
    t0 = c.now
    c.shutdown("a")
    c.run_until_true(lambda: c.masters() == ["b"], timeout=10)
    stopped = c.first("stopped", "a", after=t0)
    start = c.first("start", "b", after=t0)
    assert stopped is not None and start is not None
    assert start.time - stopped.time <= 0.5 + 0.01  # at most one of b's vote requests later
    assert w.holder(51, c.now) == "b" and c.overlaps() == []


@pytest.mark.parametrize("witness", [False, True])
def test_planned_moves_are_as_fast_with_a_witness(witness: bool) -> None:
    """Switchover and failback go through the release handshake; with a witness the new
    holder counts its peer's vote (acknowledged claim: one round trip more)."""
    w = FakeWitness() if witness else None
    c = NodeCluster([("a", 100), ("b", 90)], witness=w, stop_time=0.05)
    c.start()
    c.run_until_true(lambda: c.masters() == ["a"], timeout=30)
    c.advance(15)
    t0 = c.now
    c.switchover("a", "b")
    c.run_until_true(lambda: c.masters() == ["b"], timeout=5)
    start = c.first("start", "b", after=t0)
    assert start is not None and start.time - t0 < 0.06  # the stop (0.05 s) and round trips
    c.advance(5)
    # the switchover put a in maintenance (or it would preempt at once); lift it: failback
    c._input(c.sims["a"], lambda n: n.set_maintenance(False, c.now))
    t1 = c.now
    c.run_until_true(lambda: c.masters() == ["a"], timeout=5)
    failback = c.first("start", "a", after=t1)
    assert failback is not None and failback.time - t1 < 0.06
    assert c.overlaps() == []
