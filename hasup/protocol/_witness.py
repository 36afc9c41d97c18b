"""The pair witness: vote requests and replies, the node's vote, the witness's book.

A witness is a third vote for a pair (``docs/witness.md``). It grants a time-limited
*vote lease* to at most one node per group. Everything here is pure (inputs carry
``now``); :mod:`hasup._witness_server` and the node's driver carry the datagrams.

Wire (network byte order, HMAC-SHA256 with the group key's ``"witness v1"`` HKDF key)::

    request: "HSWQ" | version u8 | key_id u8 | group u32 | epoch u64 | seq u64
             | flags u8 (WANT) | lease_ms u32 | name_len u8 | name | tag
    reply:   "HSWR" | version u8 | key_id u8 | group u32 | epoch u64 | seq u64 (echoed)
             | result u8 | lease_ms u32 | name_len u8 | name | holder_len u8 | holder | tag

The node's (epoch, seq) is its nonce: the epoch is persisted and grows with every boot,
the seq with every request. The witness rejects requests at or below a node's mark;
the node accepts a reply only once, for a request it sent in this boot.
"""

from __future__ import annotations

import enum
import hmac
import struct
from collections import Counter, OrderedDict
from collections.abc import Mapping

import attrs

from ._wire import TAG_LEN, Drop, KeyRing

__all__ = [
    "DEFAULT_WITNESS_PORT",
    "WITNESS_LABEL",
    "Vote",
    "VoteReply",
    "VoteRequest",
    "WitnessBook",
    "WitnessVote",
    "decode_reply",
    "decode_request",
    "encode_reply",
    "encode_request",
]

WITNESS_LABEL = b"witness v1"
#: UDP port of ``hasup witness`` unless configured otherwise.
DEFAULT_WITNESS_PORT = 5406
REQUEST_MAGIC = b"HSWQ"
REPLY_MAGIC = b"HSWR"
VERSION = 1
_REQ = struct.Struct("!4sBBIQQBI")
_REP = struct.Struct("!4sBBIQQBI")
_WANT = 1
_MAX_NAME = 64
#: Requests the node remembers, awaiting their reply (older ones are forgotten).
_OUTSTANDING = 16


class Vote(enum.IntEnum):
    """The witness's answer."""

    #: The lease is this node's for ``lease_ms`` from the witness's receipt.
    GRANTED = 1
    #: Another node holds the lease (``holder``).
    DENIED = 2
    #: The witness restarted less than one maximum lease ago: it grants nothing yet.
    QUIET = 3
    #: The node did not ask for the vote (any lease it held is released).
    RELEASED = 4


@attrs.frozen
class VoteRequest:
    group: int
    name: str
    epoch: int
    seq: int
    want: bool
    lease_ms: int
    key_id: int = 0


@attrs.frozen
class VoteReply:
    group: int
    name: str
    epoch: int
    seq: int
    vote: Vote
    lease_ms: int
    holder: str = ""
    key_id: int = 0


def _name(name: str) -> bytes:
    data = name.encode()
    if len(data) > _MAX_NAME:
        raise ValueError(f"name longer than {_MAX_NAME} bytes: {name!r}")
    return bytes([len(data)]) + data


def _sign(body: bytes, keys: KeyRing, key_id: int) -> bytes:
    return body + hmac.digest(keys.keys[key_id], body, "sha256")


def encode_request(req: VoteRequest, keys: KeyRing) -> bytes:
    head = _REQ.pack(
        REQUEST_MAGIC, VERSION, keys.send_id, req.group, req.epoch, req.seq, _WANT if req.want else 0, req.lease_ms
    )
    return _sign(head + _name(req.name), keys, keys.send_id)


def encode_reply(rep: VoteReply, keys: KeyRing) -> bytes:
    """Sign with the key id of the request being answered (``rep.key_id``)."""
    head = _REP.pack(REPLY_MAGIC, VERSION, rep.key_id, rep.group, rep.epoch, rep.seq, int(rep.vote), rep.lease_ms)
    return _sign(head + _name(rep.name) + _name(rep.holder), keys, rep.key_id)


def _open(data: bytes, magic: bytes, size: int, keys: KeyRing) -> bytes | Drop:
    """Check length, magic, version and tag; return the body."""
    if len(data) < size + 1 + TAG_LEN or data[:4] != magic:
        return Drop.MALFORMED
    if data[4] != VERSION:
        return Drop.VERSION
    key = keys.keys.get(data[5])
    if data[5] == 0 and keys.keyed:
        return Drop.UNKEYED
    if key is None:
        return Drop.UNKNOWN_KEY
    body, tag = data[:-TAG_LEN], data[-TAG_LEN:]
    if not hmac.compare_digest(hmac.digest(key, body, "sha256"), tag):
        return Drop.BAD_TAG
    return body


def _read_name(body: bytes, pos: int) -> tuple[str, int]:
    n = body[pos]
    raw = body[pos + 1 : pos + 1 + n]
    if len(raw) != n:
        raise ValueError("truncated name")
    return raw.decode(), pos + 1 + n


def decode_request(data: bytes, keys: Mapping[int, KeyRing]) -> VoteRequest | Drop:
    """Check and parse a request; ``keys`` maps group id → that group's witness keys.
    Never raises."""
    if len(data) < _REQ.size:
        return Drop.MALFORMED
    (group,) = struct.unpack_from("!I", data, 6)
    ring = keys.get(group)
    if ring is None:
        return Drop.WRONG_GROUP
    body = _open(data, REQUEST_MAGIC, _REQ.size, ring)
    if isinstance(body, Drop):
        return body
    try:
        _, _, key_id, group, epoch, seq, flags, lease_ms = _REQ.unpack_from(body)
        name, pos = _read_name(body, _REQ.size)
    except (struct.error, UnicodeDecodeError, ValueError, IndexError):
        return Drop.MALFORMED
    if pos != len(body) or not name:
        return Drop.MALFORMED
    return VoteRequest(group, name, epoch, seq, bool(flags & _WANT), lease_ms, key_id)


def decode_reply(data: bytes, keys: KeyRing, group: int) -> VoteReply | Drop:
    """Check and parse a reply for ``group``. Never raises."""
    body = _open(data, REPLY_MAGIC, _REP.size, keys)
    if isinstance(body, Drop):
        return body
    try:
        _, _, key_id, grp, epoch, seq, result, lease_ms = _REP.unpack_from(body)
        name, pos = _read_name(body, _REP.size)
        holder, pos = _read_name(body, pos)
        vote = Vote(result)
    except (struct.error, UnicodeDecodeError, ValueError, IndexError):
        return Drop.MALFORMED
    if pos != len(body):
        return Drop.MALFORMED
    if grp != group:
        return Drop.WRONG_GROUP
    return VoteReply(grp, name, epoch, seq, vote, lease_ms, holder, key_id)


# ---------------------------------------------------------------------- the node's side
class WitnessVote:
    """A node's view of its witness vote (kept by :class:`~hasup.protocol.Node`).

    The lease counts from the moment the *request* was sent, never from the reply: the
    witness received it later, so its lease ends later than ours. The node relies on it
    only until ``sent + lease - margin`` (``margin = lease / 2``): see ``docs/witness.md``.
    A grant shorter than ``min_lease`` (a witness whose ``--max-lease`` is too short for
    this group's advert interval) does not count.
    """

    def __init__(self, keys: KeyRing, group: int, name: str, lease: float, *, min_lease: float = 0.0) -> None:
        self.keys = keys
        self.group = group
        self.name = name
        self.lease = lease
        self.min_lease = min(min_lease, lease)
        #: Grants refused because they were shorter than ``min_lease``.
        self.too_short = 0
        self._sent: OrderedDict[tuple[int, int], float] = OrderedDict()
        #: Until when this node may count the witness's vote (its local deadline).
        self.deadline = float("-inf")
        self._lease_sent = float("-inf")
        self.last_reply_at: float | None = None
        self.last_vote: Vote | None = None
        self.holder = ""
        self.last_sent_at: float | None = None

    def valid(self, now: float) -> bool:
        """Whether the witness's vote counts for this node now."""
        return now < self.deadline

    def request(self, epoch: int, seq: int, want: bool, now: float) -> bytes:
        self._sent[(epoch, seq)] = now
        while len(self._sent) > _OUTSTANDING:
            self._sent.popitem(last=False)
        self.last_sent_at = now
        req = VoteRequest(self.group, self.name, epoch, seq, want, round(self.lease * 1000))
        return encode_request(req, self.keys)

    def reply(self, data: bytes, now: float) -> VoteReply | Drop:
        """Take a reply in: dropped unless it answers a request of ours, once."""
        rep = decode_reply(data, self.keys, self.group)
        if isinstance(rep, Drop):
            return rep
        if rep.name != self.name:
            return Drop.UNKNOWN_PEER
        sent_at = self._sent.pop((rep.epoch, rep.seq), None)
        if sent_at is None:
            return Drop.REPLAY
        self.last_reply_at = now
        self.last_vote = rep.vote
        self.holder = rep.holder
        lease = min(rep.lease_ms / 1000, self.lease)
        if rep.vote is Vote.GRANTED and lease < self.min_lease:
            self.too_short += 1
        elif rep.vote is Vote.GRANTED:
            if sent_at >= self._lease_sent:
                self._lease_sent = sent_at
                self.deadline = sent_at + lease / 2  # lease - margin, margin = lease / 2
        elif rep.vote is not Vote.QUIET and sent_at >= self._lease_sent:
            # A later answer says the lease is not ours (expired, released). QUIET does
            # not: a restarted witness grants nothing before any lease it gave out
            # earlier has run out, so that lease still protects its holder.
            self._lease_sent = sent_at
            self.deadline = float("-inf")
        return rep

    def reachable(self, now: float, within: float) -> bool:
        return self.last_reply_at is not None and now - self.last_reply_at < within


# ---------------------------------------------------------------------- the witness's side
@attrs.define
class _Group:
    holder: str = ""
    expires: float = float("-inf")
    marks: OrderedDict[str, tuple[int, int]] = attrs.field(factory=OrderedDict)


class WitnessBook:
    """The witness's decisions: at most one vote lease per group at a time.

    ``keys`` maps group id → witness keys (``KeyRing.from_group_keys(..., label=
    WITNESS_LABEL)``). Nothing is persisted: after a (re)start the book grants nothing
    for ``max_lease`` (a lease granted before can no longer be running), see
    ``docs/witness.md``. State is bounded: configured groups only, ``max_nodes`` names
    per group (the least recently heard non-holder is forgotten).
    """

    def __init__(self, keys: Mapping[int, KeyRing], *, max_lease: float, now: float, max_nodes: int = 16) -> None:
        self.keys = dict(keys)
        self.max_lease = max_lease
        self.quiet_until = now + max_lease
        self.max_nodes = max_nodes
        self._groups: dict[int, _Group] = {}
        self.stats: Counter[str] = Counter()

    def handle(self, data: bytes, now: float) -> bytes | None:
        """One datagram in; the signed reply to send back, or ``None`` (dropped, counted)."""
        req = decode_request(data, self.keys)
        if isinstance(req, Drop):
            self.stats[f"dropped_{req.value}"] += 1
            return None
        g = self._groups.setdefault(req.group, _Group())
        mark = g.marks.get(req.name)
        if mark is not None and (req.epoch, req.seq) <= mark:
            self.stats["dropped_replay"] += 1
            return None
        if mark is None and len(g.marks) >= self.max_nodes:
            victim = next((n for n in g.marks if n != g.holder), None)
            if victim is None:
                self.stats["dropped_too_many_nodes"] += 1
                return None
            del g.marks[victim]
        g.marks[req.name] = (req.epoch, req.seq)
        g.marks.move_to_end(req.name)
        self.stats["requests"] += 1
        if g.holder and now >= g.expires:
            g.holder = ""
        lease_ms = min(req.lease_ms, round(self.max_lease * 1000))
        if not req.want:
            if g.holder == req.name:
                g.holder = ""
            vote = Vote.RELEASED
        elif now < self.quiet_until:
            vote = Vote.QUIET
        elif g.holder in ("", req.name) and lease_ms > 0:
            g.holder = req.name
            g.expires = now + lease_ms / 1000
            vote = Vote.GRANTED
        else:
            vote = Vote.DENIED
        self.stats[f"vote_{vote.name.lower()}"] += 1
        rep = VoteReply(req.group, req.name, req.epoch, req.seq, vote, lease_ms, g.holder, req.key_id)
        return encode_reply(rep, self.keys[req.group])

    def holder(self, group: int, now: float) -> str:
        """Who holds ``group``'s vote now (``""``: nobody)."""
        g = self._groups.get(group)
        return g.holder if g is not None and now < g.expires else ""

    def snapshot(self, now: float) -> dict[str, object]:
        return {
            "quiet_for": max(0.0, round(self.quiet_until - now, 3)),
            "groups": {
                str(gid): {"holder": self.holder(gid, now), "expires_in": max(0.0, round(g.expires - now, 3))}
                for gid, g in self._groups.items()
            },
            "counters": dict(self.stats),
        }
