"""Wire format v1: round trip, every drop reason, key rotation, HKDF, fuzzing."""

from __future__ import annotations

import hashlib
import hmac
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hasup.protocol import Drop, Flag, Heartbeat, KeyRing, State, decode, derive_key, encode
from hasup.protocol._wire import _HEADER, MIN_LEN, TAG_LEN

GROUP = 51
KEYS = KeyRing.from_group_keys({1: b"group key one"}, 1)


def heartbeat(**changes: object) -> Heartbeat:
    fields: dict[str, object] = {
        "group": GROUP,
        "name": "node-b",
        "epoch": 1_700_000_000,
        "seq": 42,
        "term": 7,
        "state": State.MASTER,
        "base_priority": 100,
        "effective_priority": 90,
        "flags": Flag.ACTIVE | Flag.TAKEOVER,
        "advert_ms": 20,
        "config_hash": 0xDEADBEEF,
        "acks": {"node-a": (1_700_000_001, 9), "nöde-c": (5, 6)},
        "release_target": "node-a",
        "release_budget_ms": 30_000,
        "hold_ms": 1500,
        "key_id": 1,
    }
    fields.update(changes)
    return Heartbeat(**fields)  # type: ignore[arg-type]


def resign(body: bytes, key: bytes) -> bytes:
    """Re-sign a (tampered) body with a valid key: what a group member could send."""
    return body + hmac.new(key, body, hashlib.sha256).digest()


# ---------------------------------------------------------------------------- round trip
def test_round_trip_every_field() -> None:
    hb = heartbeat()
    assert decode(encode(hb, KEYS), KEYS, GROUP) == hb


def test_round_trip_minimal() -> None:
    hb = heartbeat(acks={}, release_target=None, release_budget_ms=0, hold_ms=0, flags=Flag.NONE)
    data = encode(hb, KEYS)
    assert decode(data, KEYS, GROUP) == hb
    assert len(data) == _HEADER.size + 1 + len(b"node-b") + TAG_LEN


@pytest.mark.parametrize("state", list(State))
def test_round_trip_states(state: State) -> None:
    hb = heartbeat(state=state)
    assert decode(encode(hb, KEYS), KEYS, GROUP) == hb


def test_unknown_tlv_is_skipped() -> None:
    data = encode(heartbeat(), KEYS)
    body = data[:-TAG_LEN] + struct.pack("!BH", 200, 3) + b"xyz"
    result = decode(resign(body, KEYS.keys[1]), KEYS, GROUP)
    assert result == heartbeat()


def test_insecure_round_trip() -> None:
    ring = KeyRing.insecure()
    hb = heartbeat(key_id=0)
    assert decode(encode(hb, ring), ring, GROUP) == hb


@pytest.mark.parametrize("name", ["", "x" * 65])
def test_encode_rejects_bad_names(name: str) -> None:
    with pytest.raises(ValueError, match="node name"):
        encode(heartbeat(name=name), KEYS)


# ---------------------------------------------------------------------------- drop reasons
def test_drop_malformed_short_and_magic() -> None:
    data = encode(heartbeat(), KEYS)
    assert decode(b"", KEYS, GROUP) is Drop.MALFORMED
    assert decode(data[: MIN_LEN - 1], KEYS, GROUP) is Drop.MALFORMED
    assert decode(b"XSUP" + data[4:], KEYS, GROUP) is Drop.MALFORMED


def test_drop_version() -> None:
    data = bytearray(encode(heartbeat(), KEYS))
    data[4] = 2
    assert decode(bytes(data), KEYS, GROUP) is Drop.VERSION


def test_drop_wrong_group() -> None:
    data = encode(heartbeat(group=GROUP + 1), KEYS)
    assert decode(data, KEYS, GROUP) is Drop.WRONG_GROUP


def test_drop_unkeyed_when_keyed() -> None:
    data = encode(heartbeat(key_id=0), KeyRing.insecure())
    assert decode(data, KEYS, GROUP) is Drop.UNKEYED


def test_drop_unknown_key_id() -> None:
    other = KeyRing.from_group_keys({2: b"another key"}, 2)
    assert decode(encode(heartbeat(), other), KEYS, GROUP) is Drop.UNKNOWN_KEY


def test_drop_bad_tag() -> None:
    data = bytearray(encode(heartbeat(), KEYS))
    data[-1] ^= 1
    assert decode(bytes(data), KEYS, GROUP) is Drop.BAD_TAG
    # Same key id, different secret: a non-member guessing.
    forger = KeyRing.from_group_keys({1: b"not the group key"}, 1)
    assert decode(encode(heartbeat(), forger), KEYS, GROUP) is Drop.BAD_TAG
    # A body change under the old tag.
    good = encode(heartbeat(), KEYS)
    tampered = good[:20] + bytes([good[20] ^ 0x80]) + good[21:]
    assert decode(tampered, KEYS, GROUP) is Drop.BAD_TAG


def test_drop_truncated_tlv() -> None:
    data = encode(heartbeat(), KEYS)
    body = data[:-TAG_LEN]
    # Truncate inside the last TLV, then sign, so only the parser can catch it.
    assert decode(resign(body[:-2], KEYS.keys[1]), KEYS, GROUP) is Drop.MALFORMED
    # A TLV header cut short (2 of its 3 bytes).
    plain = encode(heartbeat(acks={}, release_target=None, release_budget_ms=0, hold_ms=0), KEYS)
    assert decode(resign(plain[:-TAG_LEN] + b"\x01\x00", KEYS.keys[1]), KEYS, GROUP) is Drop.MALFORMED
    # A TLV whose length runs past the end.
    assert (
        decode(resign(plain[:-TAG_LEN] + struct.pack("!BH", 1, 500) + b"ab", KEYS.keys[1]), KEYS, GROUP)
        is Drop.MALFORMED
    )
    # An ACK entry whose name runs past the value.
    bad_ack = struct.pack("!BH", 1, 3) + b"\x09ab"
    assert decode(resign(plain[:-TAG_LEN] + bad_ack, KEYS.keys[1]), KEYS, GROUP) is Drop.MALFORMED


def test_drop_bad_fields_even_when_signed() -> None:
    plain = encode(heartbeat(acks={}, release_target=None, release_budget_ms=0, hold_ms=0), KEYS)
    body = bytearray(plain[:-TAG_LEN])
    state_at = _HEADER.size - 13  # state u8, then base, eff, flags u16, advert u32, hash u32
    assert body[state_at] == State.MASTER
    body[state_at] = 99
    assert decode(resign(bytes(body), KEYS.keys[1]), KEYS, GROUP) is Drop.MALFORMED
    body = bytearray(plain[:-TAG_LEN])
    body[_HEADER.size] = 0  # name length 0
    assert decode(resign(bytes(body), KEYS.keys[1]), KEYS, GROUP) is Drop.MALFORMED
    body = bytearray(plain[:-TAG_LEN])
    body[_HEADER.size + 1] = 0xFF  # invalid UTF-8 in the name
    assert decode(resign(bytes(body), KEYS.keys[1]), KEYS, GROUP) is Drop.MALFORMED


# ---------------------------------------------------------------------------- keys
def test_key_rotation_accepts_both_ids() -> None:
    old = KeyRing.from_group_keys({1: b"old"}, 1)
    new = KeyRing.from_group_keys({2: b"new"}, 2)
    rolling = KeyRing.from_group_keys({1: b"old", 2: b"new"}, 1)
    for sender in (old, new, rolling):
        result = decode(encode(heartbeat(), sender), rolling, GROUP)
        assert isinstance(result, Heartbeat)
        assert result.key_id == sender.send_id
    # After the roll the old key is gone.
    assert decode(encode(heartbeat(), old), new, GROUP) is Drop.UNKNOWN_KEY


def test_keyring_validation() -> None:
    with pytest.raises(ValueError, match="send key id"):
        KeyRing.from_group_keys({1: b"k"}, 2)
    with pytest.raises(ValueError, match="reserved"):
        KeyRing.from_group_keys({0: b"k", 1: b"j"}, 1)
    assert not KeyRing.insecure().keyed
    assert KEYS.keyed


def test_keys_are_derived_not_raw() -> None:
    assert KEYS.keys[1] == derive_key(b"group key one", b"hb v1")
    assert KEYS.keys[1] != b"group key one"
    assert derive_key(b"g", b"hb v1") != derive_key(b"g", b"sync v1")


def test_hkdf_rfc5869_case_3() -> None:
    """RFC 5869 A.3: SHA-256, zero-length salt and info.

    An absent salt is defined (RFC 5869 §2.2) as HashLen zero bytes, which is what
    ``derive_key`` uses, so this vector applies unchanged.
    """
    ikm = bytes([0x0B] * 22)
    okm = bytes.fromhex(
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
    )
    assert derive_key(ikm, b"", 42) == okm


def test_hkdf_with_info_matches_rfc_definition() -> None:
    """With an info label: the RFC 5869 §2.2/§2.3 definition, computed independently."""
    ikm, info = b"\x42" * 40, b"hb v1"
    prk = hmac.new(bytes(32), ikm, hashlib.sha256).digest()
    t1 = hmac.new(prk, info + b"\x01", hashlib.sha256).digest()
    t2 = hmac.new(prk, t1 + info + b"\x02", hashlib.sha256).digest()
    t3 = hmac.new(prk, t2 + info + b"\x03", hashlib.sha256).digest()
    assert derive_key(ikm, info, 80) == (t1 + t2 + t3)[:80]
    assert derive_key(ikm, info) == t1


# ---------------------------------------------------------------------------- fuzzing
FUZZ = settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
VALID = encode(heartbeat(), KEYS)
RINGS = [KEYS, KeyRing.insecure(), KeyRing.from_group_keys({1: b"group key one", 7: b"x"}, 7)]


@FUZZ
@given(st.binary(max_size=400), st.sampled_from(RINGS))
def test_fuzz_random_bytes(data: bytes, ring: KeyRing) -> None:
    result = decode(data, ring, GROUP)
    assert isinstance(result, Heartbeat | Drop)
    if ring.keyed:
        assert isinstance(result, Drop)  # 2^-256: a random tag never verifies


@FUZZ
@given(st.binary(min_size=0, max_size=200), st.sampled_from(RINGS))
def test_fuzz_random_bytes_with_valid_header(tail: bytes, ring: KeyRing) -> None:
    data = VALID[:6] + tail
    assert isinstance(decode(data, ring, GROUP), Heartbeat | Drop)


def _mutate(data: bytes, ops: list[tuple[int, int, int]]) -> bytes:
    buf = bytearray(data)
    for kind, pos, value in ops:
        if not buf:
            buf.append(value)
            continue
        i = pos % len(buf)
        if kind == 0:
            buf[i] ^= value or 1  # flip bits
        elif kind == 1:
            del buf[i]
        elif kind == 2:
            buf.insert(i, value)
        else:
            del buf[i:]  # truncate
    return bytes(buf)


MUTATIONS = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=6
)


@FUZZ
@given(MUTATIONS)
def test_fuzz_mutated_authenticated_datagrams_never_decode(ops: list[tuple[int, int, int]]) -> None:
    mutated = _mutate(VALID, ops)
    result = decode(mutated, KEYS, GROUP)
    if mutated == VALID:
        assert result == heartbeat()
    else:
        assert isinstance(result, Drop)


@FUZZ
@given(MUTATIONS)
def test_fuzz_mutated_then_resigned_never_raises(ops: list[tuple[int, int, int]]) -> None:
    """A member signing garbage: the parser itself must still never raise."""
    body = _mutate(VALID[:-TAG_LEN], ops)
    result = decode(resign(body, KEYS.keys[1]), KEYS, GROUP)
    assert isinstance(result, Heartbeat | Drop)


@settings(FUZZ, max_examples=300)
@given(
    st.builds(
        heartbeat,
        epoch=st.integers(0, 2**64 - 1),
        seq=st.integers(0, 2**64 - 1),
        term=st.integers(0, 2**64 - 1),
        state=st.sampled_from(State),
        base_priority=st.integers(0, 255),
        effective_priority=st.integers(0, 255),
        flags=st.builds(Flag, st.integers(0, 15)),
        advert_ms=st.integers(0, 2**32 - 1),
        name=st.text(min_size=1, max_size=16),
        acks=st.dictionaries(
            st.text(min_size=1, max_size=10), st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
        ),
        release_target=st.none() | st.text(min_size=1, max_size=10),
        release_budget_ms=st.integers(0, 2**32 - 1),
        hold_ms=st.integers(0, 2**32 - 1),
    )
)
def test_fuzz_round_trip(hb: Heartbeat) -> None:
    assert decode(encode(hb, KEYS), KEYS, GROUP) == hb
