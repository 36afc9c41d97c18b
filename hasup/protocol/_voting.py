"""The witness vote inside the node: when to ask for it, and what it counts for.

A pair with ``[group] witness`` counts three votes: itself, its peer, the witness. A
node claims or keeps the service only with two of them (see ``docs/witness.md``). The
vote is a lease granted by the witness (:class:`~hasup.protocol._witness.WitnessBook`);
this node relies on it only until its local deadline (``WitnessVote.deadline``).
"""

from __future__ import annotations

from ._core import _NodeBase
from ._enums import State
from ._peers import PeerView
from ._wire import Drop, Flag
from ._witness import REPLY_MAGIC

#: A witness that has not answered for this many adverts is reported unreachable.
_UNREACHABLE_ADVERTS = 3


class _Voting(_NodeBase):
    """Asking the witness for its vote, and counting it."""

    def _witness_votes(self, now: float) -> int:
        """1 while the witness's vote counts for this node, else 0."""
        return 1 if self._vote is not None and self._vote.valid(now) else 0

    def _voting_peers(self, live: list[PeerView], now: float) -> list[PeerView]:
        """The live peers whose vote counts. With a witness, a peer counts only while the
        link works both ways: it must have acknowledged a heartbeat we sent within two
        adverts. Otherwise a one-way loss would let one node count the peer (it hears
        it) while the peer counts the witness (it does not hear us): two majorities."""
        if self.config.witness is None:
            return live
        return [p for p in live if self._acks_us(p, now)]

    def _acks_us(self, peer: PeerView, now: float) -> bool:
        hb = peer.last
        ack = hb.acks.get(self.config.name) if hb is not None else None
        if ack is None or ack[0] != self._epoch:
            return False
        for seq, sent_at in reversed(self._sent_log):
            if seq <= ack[1]:
                return now - sent_at < 2 * self.config.advert_interval
        return False

    def _claim_confirmed(self, live: list[PeerView], now: float) -> bool:
        """Whether a claimer may start: with the witness's vote, or once a live peer has
        acknowledged one of its CLAIMING heartbeats. A peer's vote is not exclusive by
        itself: two nodes that each still count the other (one of them with a stale view
        of the other, its heartbeats lost) could both claim. A peer that has seen our
        claim does not claim itself (a live claimer blocks it), and its heartbeat that
        acknowledges the claim carries its own state, so a rival claim is seen (and the
        lower rank aborts) no later than the acknowledgement. Until then the claimer
        queries the peers every advert/4 for an answer at once."""
        if self._witness_votes(now):
            return True
        for peer in live:
            hb = peer.last
            ack = hb.acks.get(self.config.name) if hb is not None else None
            if ack is not None and ack[0] == self._epoch and ack[1] >= self._claim_seq:
                return True
        if now >= self._next_claim_query:
            for peer in live:
                self._send_to(peer.address, now, Flag.QUERY)
            self._next_claim_query = now + self.config.advert_interval / 4
        return False

    def _wants_vote(self, now: float) -> bool:
        """A holder keeps its lease; a node that may claim asks for it when the peers
        alone are no majority (so that the witness breaks the tie)."""
        if self.holder or self._state in (State.CLAIMING, State.MASTER):
            return True
        if self._state not in (State.INIT, State.BACKUP) or self._maintenance or self.effective_priority == 0:
            return False
        live = [p for p in self._peers.values() if p.live(now)]
        return (1 + len(self._voting_peers(live, now))) * 2 <= self.config.group_size + 1

    def _emit_vote(self, now: float) -> None:
        vote = self._vote
        if vote is None or self.config.witness is None:
            return
        finishing = self._finished and self._state == State.STOPPING
        want = self._wants_vote(now)
        # A resigning node still sends its release (want turning false), so that its peer
        # need not wait for the lease to run out; then it stops asking.
        if want != self._wanted_vote or (not finishing and now >= self._next_vote_request):
            self._seq += 1
            self._out.append((vote.request(self._epoch, self._seq, want, now), self.config.witness))
            self._stats["witness_requests"] += 1
            # A node that needs the vote renews twice per advert: the witness's lease
            # then ends at most advert/2 after our last request (docs/witness.md).
            self._next_vote_request = now + self.config.advert_interval / (2 if want else 1)
        self._wanted_vote = want
        within = _UNREACHABLE_ADVERTS * self.config.advert_interval
        if not finishing and now - self._started_at >= within and not vote.reachable(now, within):
            w = self.config.witness
            self._alarm("witness_unreachable", f"no answer from the witness {w[0]}:{w[1]} for {within:g} s")

    def _vote_timers(self) -> list[float]:
        if self._vote is None or (self._finished and self._state == State.STOPPING):
            return []
        timers = [self._next_vote_request, self._vote.deadline]
        if self._state == State.CLAIMING:
            timers.append(self._next_claim_query)
        # When each peer's vote lapses (its ack of us gets older than two adverts).
        for peer in self._peers.values():
            hb = peer.last
            ack = hb.acks.get(self.config.name) if hb is not None else None
            if ack is not None and ack[0] == self._epoch:
                for seq, sent_at in reversed(self._sent_log):
                    if seq <= ack[1]:
                        timers.append(sent_at + 2 * self.config.advert_interval)
                        break
        return timers

    def _vote_reply(self, data: bytes, now: float) -> None:
        """A datagram that looks like a witness reply."""
        if self._vote is None:
            self._drop(Drop.UNKNOWN_PEER)
            return
        result = self._vote.reply(data, now)
        if isinstance(result, Drop):
            self._stats[f"dropped_witness_{result.value}"] += 1
            return
        self._stats["witness_replies"] += 1
        self._clear_alarm("witness_unreachable")
        if self._vote.too_short:
            self._alarm(
                "witness_lease_too_short", "the witness grants shorter leases than 4 adverts: raise its --max-lease"
            )
        self._update(now)

    @staticmethod
    def _is_vote_reply(data: bytes) -> bool:
        return data[:4] == REPLY_MAGIC

    def witness_snapshot(self, now: float) -> dict[str, object] | None:
        """The witness as ``/status`` shows it (``None``: no witness configured)."""
        vote, address = self._vote, self.config.witness
        if vote is None or address is None:
            return None
        within = _UNREACHABLE_ADVERTS * self.config.advert_interval
        return {
            "address": f"{address[0]}:{address[1]}",
            "reachable": vote.reachable(now, within),
            "vote": "held" if vote.valid(now) else "not held",
            "last_answer": vote.last_vote.name if vote.last_vote is not None else None,
            "holder": vote.holder or None,
            "lease": vote.lease,
            "valid_for": round(vote.deadline - now, 3) if vote.deadline > now else 0.0,
            "last_answer_ago": None if vote.last_reply_at is None else round(now - vote.last_reply_at, 3),
            "wanted": self._wanted_vote,
        }
