"""Wire format v1: a fixed header, TLVs, and an HMAC-SHA256 tag over all of it.

Layout (network byte order)::

    magic "HSUP" | version u8 | key_id u8 | group u32 | epoch u64 | seq u64 | term u64
    | state u8 | base_priority u8 | effective_priority u8 | flags u16 | advert_ms u32
    | config_hash u32 | name_len u8 | name (UTF-8, <= 64 bytes)
    | TLVs: type u8, length u16, value   (unknown types are skipped)
    | tag: HMAC-SHA256 over everything before it (32 bytes)

Decoding never raises: it returns a :class:`Heartbeat` or a :class:`Drop` reason.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import struct
from collections.abc import Mapping

import attrs

from ._enums import State

__all__ = [
    "Drop",
    "Flag",
    "Heartbeat",
    "KeyRing",
    "decode",
    "derive_key",
    "encode",
]

MAGIC = b"HSUP"
VERSION = 1
TAG_LEN = 32
MAX_NAME = 64
_HEADER = struct.Struct("!4sBBIQQQBBBHII")
_TLV_HEAD = struct.Struct("!BH")
_ACK_MARK = struct.Struct("!QQ")
_U32 = struct.Struct("!I")
MIN_LEN = _HEADER.size + 1 + TAG_LEN


class Flag(enum.IntFlag):
    """Heartbeat flags."""

    NONE = 0
    #: The sender is a holder: its service is not confirmed stopped.
    ACTIVE = 1
    #: The sender asks the current holder to release to it (preemption).
    TAKEOVER = 2
    #: Please answer at once (loss-before-death query).
    QUERY = 4
    #: The sender is in maintenance: it will not take over.
    MAINTENANCE = 8


class Drop(enum.Enum):
    """Why a datagram was dropped. Counted; never changes state."""

    MALFORMED = "malformed"
    VERSION = "version"
    WRONG_GROUP = "wrong_group"
    UNKEYED = "unkeyed"
    UNKNOWN_KEY = "unknown_key"
    BAD_TAG = "bad_tag"
    REPLAY = "replay"
    UNKNOWN_PEER = "unknown_peer"
    NAME_CLASH = "name_clash"
    #: Our own heartbeat came back to us (same boot epoch, a sequence number we sent).
    REFLECTED = "reflected"


class Tlv(enum.IntEnum):
    ACK = 1  # repeated: name_len u8, name, epoch u64, seq u64
    RELEASE_TARGET = 2  # name
    RELEASE_BUDGET_MS = 3  # u32
    HOLD_MS = 4  # u32: leave-running hold of a STOPPING node
    SYNC_GENERATION = 5  # data sync: 16 bytes per [[sync]] (u64 number + 8 hash bytes)
    GROUP_MAINTENANCE = 6  # u64 generation + u8 on: group-wide maintenance, newest generation wins


@attrs.frozen
class Heartbeat:
    """One decoded (or to-be-encoded) heartbeat."""

    group: int
    name: str
    epoch: int
    seq: int
    term: int
    state: State
    base_priority: int
    effective_priority: int
    flags: Flag
    advert_ms: int
    config_hash: int = 0
    #: peer name → (epoch, seq) last accepted from that peer.
    acks: Mapping[str, tuple[int, int]] = attrs.field(factory=dict)
    release_target: str | None = None
    release_budget_ms: int = 0
    hold_ms: int = 0
    #: Data-sync generations the sender holds (opaque to the core).
    sync_generation: bytes = b""
    key_id: int = 0
    #: (generation, on) of group-wide maintenance as the sender knows it; generation 0: never set
    group_maintenance: tuple[int, bool] = (0, False)

    @property
    def active(self) -> bool:
        return bool(self.flags & Flag.ACTIVE)


def derive_key(group_key: bytes, label: bytes, length: int = 32) -> bytes:
    """HKDF-SHA256 (RFC 5869) with an empty salt: one key per use from the group key."""
    prk = hmac.new(b"\x00" * 32, group_key, hashlib.sha256).digest()
    out = b""
    block = b""
    counter = 1
    while len(out) < length:
        block = hmac.new(prk, block + label + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


@attrs.frozen
class KeyRing:
    """Heartbeat keys by key id. Id 0 is reserved for *unkeyed* (insecure) groups.

    ``send_id`` signs outgoing heartbeats; every key in ``keys`` is accepted, so a new
    key can be rolled out to all nodes before any of them starts sending with it.
    """

    keys: Mapping[int, bytes]
    send_id: int
    #: One keyed HMAC state per key id, copied per datagram: the key schedule is done
    #: once, not on every heartbeat (about half the cost of a one-shot HMAC).
    _macs: Mapping[int, hmac.HMAC] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        macs = {kid: hmac.new(key, digestmod=hashlib.sha256) for kid, key in self.keys.items()}
        object.__setattr__(self, "_macs", macs)

    def tag(self, key_id: int, body: bytes) -> bytes:
        """HMAC-SHA256 of ``body`` with key ``key_id`` (which must exist)."""
        mac = self._macs[key_id].copy()
        mac.update(body)
        return mac.digest()

    @classmethod
    def from_group_keys(cls, group_keys: Mapping[int, bytes], send_id: int, *, label: bytes = b"hb v1") -> KeyRing:
        """Derive one key per id with HKDF ``label`` (heartbeats: ``"hb v1"``)."""
        derived = {kid: derive_key(k, label) for kid, k in group_keys.items()}
        if send_id not in derived:
            raise ValueError(f"send key id {send_id} is not among the configured keys")
        if 0 in derived:
            raise ValueError("key id 0 is reserved for insecure (unkeyed) groups")
        return cls(derived, send_id)

    @classmethod
    def insecure(cls) -> KeyRing:
        """No secret: tags only catch corruption. Needs an explicit ``insecure = true``."""
        return cls({0: b""}, 0)

    @property
    def keyed(self) -> bool:
        return self.send_id != 0


def _name_bytes(name: str) -> bytes:
    data = name.encode()
    if not data or len(data) > MAX_NAME:
        raise ValueError(f"node name must be 1..{MAX_NAME} bytes of UTF-8: {name!r}")
    return data


def encode(hb: Heartbeat, keys: KeyRing) -> bytes:
    """Serialize and sign ``hb`` with the ring's send key."""
    name = _name_bytes(hb.name)
    parts = [
        _HEADER.pack(
            MAGIC,
            VERSION,
            keys.send_id,
            hb.group,
            hb.epoch,
            hb.seq,
            hb.term,
            int(hb.state),
            hb.base_priority,
            hb.effective_priority,
            int(hb.flags),
            hb.advert_ms,
            hb.config_hash & 0xFFFFFFFF,
        ),
        bytes([len(name)]),
        name,
    ]
    if hb.acks:
        value = b"".join(
            bytes([len(n)]) + n + struct.pack("!QQ", e, s)
            for n, (e, s) in ((_name_bytes(k), v) for k, v in sorted(hb.acks.items()))
        )
        parts.append(struct.pack("!BH", Tlv.ACK, len(value)) + value)
    if hb.release_target is not None:
        target = _name_bytes(hb.release_target)
        parts.append(struct.pack("!BH", Tlv.RELEASE_TARGET, len(target)) + target)
    if hb.release_budget_ms:
        parts.append(struct.pack("!BHI", Tlv.RELEASE_BUDGET_MS, 4, hb.release_budget_ms))
    if hb.hold_ms:
        parts.append(struct.pack("!BHI", Tlv.HOLD_MS, 4, hb.hold_ms))
    if hb.sync_generation:
        parts.append(struct.pack("!BH", Tlv.SYNC_GENERATION, len(hb.sync_generation)) + hb.sync_generation)
    if hb.group_maintenance[0]:
        gen, on = hb.group_maintenance
        parts.append(struct.pack("!BHQB", Tlv.GROUP_MAINTENANCE, 9, gen, 1 if on else 0))
    body = b"".join(parts)
    return body + keys.tag(keys.send_id, body)


def decode(data: bytes, keys: KeyRing, group: int) -> Heartbeat | Drop:
    """Check and parse a datagram. Never raises."""
    if len(data) < MIN_LEN or data[:4] != MAGIC:
        return Drop.MALFORMED
    if data[4] != VERSION:
        return Drop.VERSION
    key_id = data[5]
    # Authenticate before trusting anything else in the packet.
    if key_id == 0 and keys.keyed:
        return Drop.UNKEYED
    if key_id not in keys.keys:
        return Drop.UNKNOWN_KEY
    body, tag = data[:-TAG_LEN], data[-TAG_LEN:]
    if not hmac.compare_digest(keys.tag(key_id, body), tag):
        return Drop.BAD_TAG
    try:
        return _parse(body, key_id, group)
    except (struct.error, UnicodeDecodeError, ValueError, IndexError):
        return Drop.MALFORMED


#: Enum look-ups by value (calling the enum class costs microseconds per datagram).
_STATES = {int(s): s for s in State}
_FLAGS: dict[int, Flag] = {}


def _flag(bits: int) -> Flag:
    flag = _FLAGS.get(bits)
    if flag is None:
        flag = Flag(bits)
        if len(_FLAGS) < 256:  # authenticated senders use a handful of combinations
            _FLAGS[bits] = flag
    return flag


def _parse(body: bytes, key_id: int, group: int) -> Heartbeat | Drop:
    (_, _, _, grp, epoch, seq, term, state, base, eff, flags, advert_ms, chash) = _HEADER.unpack_from(body)
    if grp != group:
        return Drop.WRONG_GROUP
    pos = _HEADER.size
    name_len = body[pos]
    if not 1 <= name_len <= MAX_NAME:
        return Drop.MALFORMED
    name = body[pos + 1 : pos + 1 + name_len].decode()
    if len(name.encode()) != name_len:
        return Drop.MALFORMED
    pos += 1 + name_len
    acks: dict[str, tuple[int, int]] = {}
    target: str | None = None
    budget = hold = 0
    sync_generation = b""
    group_maintenance = (0, False)
    while pos < len(body):
        if pos + 3 > len(body):
            return Drop.MALFORMED
        ttype, tlen = _TLV_HEAD.unpack_from(body, pos)
        pos += 3
        value = body[pos : pos + tlen]
        if len(value) != tlen:
            return Drop.MALFORMED
        pos += tlen
        if ttype == Tlv.ACK:
            i = 0
            while i < len(value):
                n = value[i]
                peer = value[i + 1 : i + 1 + n].decode()
                e, s = _ACK_MARK.unpack_from(value, i + 1 + n)
                acks[peer] = (e, s)
                i += 1 + n + 16
        elif ttype == Tlv.RELEASE_TARGET:
            target = value.decode()
        elif ttype == Tlv.RELEASE_BUDGET_MS:
            (budget,) = _U32.unpack(value)
        elif ttype == Tlv.HOLD_MS:
            (hold,) = _U32.unpack(value)
        elif ttype == Tlv.SYNC_GENERATION:
            sync_generation = bytes(value)
        elif ttype == Tlv.GROUP_MAINTENANCE:
            gen, on = struct.unpack("!QB", value)
            group_maintenance = (gen, bool(on))
        # unknown TLV types are skipped: newer senders stay compatible
    st = _STATES.get(state)
    if st is None:
        return Drop.MALFORMED
    if not (0 <= base <= 255 and 0 <= eff <= 255):
        return Drop.MALFORMED
    return Heartbeat(
        group=grp,
        name=name,
        epoch=epoch,
        seq=seq,
        term=term,
        state=st,
        base_priority=base,
        effective_priority=eff,
        flags=_flag(flags & 0xFFFF),
        advert_ms=advert_ms,
        config_hash=chash,
        acks=acks,
        release_target=target,
        release_budget_ms=budget,
        hold_ms=hold,
        sync_generation=sync_generation,
        key_id=key_id,
        group_maintenance=group_maintenance,
    )
