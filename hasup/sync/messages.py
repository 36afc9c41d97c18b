"""The JSON messages of a pull, encoded and decoded strictly.

A follower's HELLO says which generation it has and how long it will wait for a new
one; the source answers with a SNAPSHOT: the generation, its manifest and the owner
names of the uids/gids it uses, zlib-compressed. Decoding is bounded (HELLO size,
decompressed manifest size) and checks that the manifest is the one the generation
names; anything else is a :class:`~hasup.sync.TransferError` or
:class:`~hasup.sync.UnsafeSnapshot`.
"""

from __future__ import annotations

import json
import zlib

from ._errors import TransferError, UnsafeSnapshot
from .owners import Owners, names_for
from .snapshot import Manifest, SnapshotInfo

__all__ = ["MAX_HELLO", "MAX_MANIFEST", "decode_snapshot", "encode_snapshot", "parse_hello"]

#: Bound of a HELLO message (it carries a hash, a number and a node name).
MAX_HELLO = 4096
#: Bound of a decompressed SNAPSHOT message.
MAX_MANIFEST = 256 << 20
#: The longest long poll a follower may ask for.
MAX_WAIT = 60.0


def parse_hello(hello: object) -> tuple[str, float]:
    """``(have, wait)`` from an authenticated peer's HELLO, strictly typed."""
    if not isinstance(hello, dict):
        raise TransferError("bad hello")
    have, wait = hello.get("have", ""), hello.get("wait", 0)
    if not isinstance(have, str) or isinstance(wait, bool) or not isinstance(wait, int | float):
        raise TransferError("bad hello")
    if not 0 <= wait < float("inf"):
        raise TransferError("bad hello")
    return have, min(float(wait), MAX_WAIT)


def encode_snapshot(info: SnapshotInfo, manifest: Manifest) -> bytes:
    """The SNAPSHOT payload of ``info`` and ``manifest`` (owner names included)."""
    owners = names_for((e.uid for e in manifest.entries), (e.gid for e in manifest.entries))
    payload = json.dumps({"info": info.to_json(), "manifest": manifest.to_json(), "owners": owners.to_json()})
    return zlib.compress(payload.encode(), 6)


def decode_snapshot(data: bytes) -> tuple[SnapshotInfo, Manifest, Owners]:
    """Inverse of :func:`encode_snapshot`, bounded and checked."""
    d = zlib.decompressobj()
    try:
        raw = d.decompress(data, MAX_MANIFEST)
        if d.unconsumed_tail:
            raise UnsafeSnapshot("snapshot manifest too large")
        obj = json.loads(raw)
    except (zlib.error, ValueError):
        raise TransferError("malformed snapshot message") from None
    if not isinstance(obj, dict):
        raise UnsafeSnapshot("malformed snapshot message")
    info = SnapshotInfo.from_json(obj.get("info") or {})
    manifest = Manifest.from_json(obj.get("manifest"))
    if manifest.hash != info.generation.hash:
        raise UnsafeSnapshot("manifest does not match its generation hash")
    return info, manifest, Owners.from_json(obj.get("owners"))
