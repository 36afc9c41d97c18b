"""Consistent snapshots of a directory tree: a manifest of entries with content hashes.

A snapshot is a :class:`Manifest` (one :class:`Entry` per directory, regular file and
symlink, sorted by path) plus a :class:`Generation` (counter + manifest hash) and the
hashes of earlier generations it descends from (:class:`SnapshotInfo`).

* SQLite databases are detected by their 16-byte header, whatever their name, and are
  copied with the SQLite online backup API into an *image*: a consistent copy even while
  the service writes (WAL mode included). Their ``-wal``/``-shm``/``-journal`` companions
  are never copied — the image is self-contained.
* Other regular files are hashed (SHA-256) from the live tree; a stat cache
  (inode, size, mtime, ctime) avoids re-reading unchanged files. A file that changes after
  the scan is caught by the receiver, which re-hashes everything it receives.
* Symlinks are kept as links. Links whose target leaves the tree are not data of this tree:
  they are skipped here and each node keeps its own (see :mod:`hasup.sync.apply`).
* FIFOs, sockets and devices are skipped (listed in :attr:`ScanResult.skipped`).
* The manifest hash covers path, kind, permissions, owner, size, content hash and link
  target — not mtimes, so touching a file is not an edit.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import hashlib
import json
import logging
import os
import posixpath
import sqlite3
import stat
import urllib.parse
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from ._errors import SyncError, UnsafeSnapshot

__all__ = [
    "CacheRecord",
    "Entry",
    "Generation",
    "Manifest",
    "ScanResult",
    "Scanner",
    "SnapshotInfo",
    "file_hash",
    "is_excluded",
    "link_escapes",
    "resolve_link",
]

log = logging.getLogger("hasup.sync")

SQLITE_MAGIC = b"SQLite format 3\x00"
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")
CHUNK = 1 << 20
KINDS = ("d", "f", "l")
_HEX = frozenset("0123456789abcdef")


@attrs.frozen
class Generation:
    """Which snapshot a node holds: a counter and the manifest hash (hex SHA-256)."""

    number: int = 0
    hash: str = ""

    def short(self) -> str:
        return f"{self.number}:{self.hash[:12]}" if self.hash else "none"

    def to_wire(self) -> bytes:
        """The value of heartbeat TLV ``SYNC_GENERATION`` (5): u64 number + 8 hash bytes."""
        return self.number.to_bytes(8, "big") + bytes.fromhex(self.hash[:16].ljust(16, "0"))

    @staticmethod
    def prefix_from_wire(value: bytes) -> tuple[int, str]:
        """Decode :meth:`to_wire`: ``(number, 16-hex-digit hash prefix)``."""
        if len(value) != 16:
            raise ValueError("SYNC_GENERATION value must be 16 bytes")
        return int.from_bytes(value[:8], "big"), value[8:].hex()


@attrs.frozen
class Entry:
    """One directory (``d``), regular file (``f``) or symlink (``l``). ``path`` is relative,
    POSIX, without ``.``/``..`` components; the root directory itself is ``"."``."""

    path: str
    kind: str
    mode: int
    uid: int
    gid: int
    mtime_ns: int = 0
    size: int = 0
    hash: str = ""
    target: str = ""
    sqlite: bool = False

    def identity(self) -> list[Any]:
        return [self.path, self.kind, self.mode, self.uid, self.gid, self.size, self.hash, self.target]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"p": self.path, "t": self.kind, "m": self.mode, "u": self.uid, "g": self.gid}
        out["mt"] = self.mtime_ns
        if self.kind == "f":
            out["s"] = self.size
            out["h"] = self.hash
            if self.sqlite:
                out["q"] = 1
        elif self.kind == "l":
            out["l"] = self.target
        return out

    @classmethod
    def from_json(cls, obj: object) -> Entry:
        """Strictly typed decoding of untrusted input; raises :class:`UnsafeSnapshot`."""
        if not isinstance(obj, dict):
            raise UnsafeSnapshot("manifest entry is not an object")
        path, kind = obj.get("p"), obj.get("t")
        if not isinstance(path, str) or kind not in KINDS:
            raise UnsafeSnapshot(f"manifest entry {path!r}: unsupported kind {kind!r} (special files refused)")
        ints = {k: obj.get(k, 0) for k in ("m", "u", "g", "mt", "s")}
        for key, value in ints.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise UnsafeSnapshot(f"manifest entry {path!r}: bad {key!r}")
        digest, target = obj.get("h", ""), obj.get("l", "")
        if not isinstance(digest, str) or not isinstance(target, str):
            raise UnsafeSnapshot(f"manifest entry {path!r}: bad hash or link")
        if kind == "f" and (len(digest) != 64 or not set(digest) <= _HEX):
            raise UnsafeSnapshot(f"manifest entry {path!r}: bad content hash")
        return cls(
            path=path,
            kind=str(kind),
            mode=ints["m"] & 0o7777,
            uid=ints["u"],
            gid=ints["g"],
            mtime_ns=ints["mt"],
            size=ints["s"] if kind == "f" else 0,
            hash=digest if kind == "f" else "",
            target=target if kind == "l" else "",
            sqlite=kind == "f" and obj.get("q") == 1,
        )


def _manifest_hash(entries: Iterable[Entry]) -> str:
    text = json.dumps([e.identity() for e in entries], separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


@attrs.frozen
class Manifest:
    """The entries of one snapshot, sorted by path."""

    entries: tuple[Entry, ...]
    hash: str = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "hash", _manifest_hash(self.entries))

    @classmethod
    def build(cls, entries: Iterable[Entry]) -> Manifest:
        return cls(tuple(sorted(entries, key=lambda e: e.path)))

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.entries if e.kind == "f")

    def files(self) -> list[Entry]:
        return [e for e in self.entries if e.kind == "f"]

    def to_json(self) -> list[dict[str, Any]]:
        return [e.to_json() for e in self.entries]

    @classmethod
    def from_json(cls, obj: object) -> Manifest:
        if not isinstance(obj, list):
            raise UnsafeSnapshot("manifest is not a list")
        return cls.build(Entry.from_json(item) for item in obj)


@attrs.frozen
class SnapshotInfo:
    """A generation with its lineage (hashes of the generations it descends from, oldest
    first, bounded) and the node that produced it."""

    generation: Generation = Generation()
    history: tuple[str, ...] = ()
    origin: str = ""
    created: float = 0.0

    HISTORY = 256

    def descends_from(self, hash_: str) -> bool:
        return not hash_ or hash_ == self.generation.hash or hash_ in self.history

    def successor(self, hash_: str, *, origin: str, created: float) -> SnapshotInfo:
        history = self.history + ((self.generation.hash,) if self.generation.hash else ())
        return SnapshotInfo(
            generation=Generation(self.generation.number + 1, hash_),
            history=history[-self.HISTORY :],
            origin=origin,
            created=created,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "generation": self.generation.number,
            "hash": self.generation.hash,
            "history": list(self.history),
            "origin": self.origin,
            "created": self.created,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> SnapshotInfo:
        try:
            number, hash_, history = obj["generation"], obj["hash"], obj.get("history", [])
            if not isinstance(number, int) or not isinstance(hash_, str) or not isinstance(history, list):
                raise TypeError
            return cls(
                generation=Generation(number, hash_),
                history=tuple(str(h) for h in history)[-cls.HISTORY :],
                origin=str(obj.get("origin", "")),
                created=float(obj.get("created", 0.0)),
            )
        except (KeyError, TypeError, ValueError):
            raise UnsafeSnapshot("bad snapshot metadata") from None


@attrs.define
class CacheRecord:
    """What a path looked like when its hash was computed (stat cache)."""

    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int
    hash: str
    sqlite: bool = False
    wal: tuple[int, int] | None = None
    #: Path of the SQLite backup image holding ``hash``; None = the live file is the image
    #: (a database applied from a peer and not modified since).
    image: str | None = None

    def to_json(self) -> list[Any]:
        return [
            self.ino,
            self.size,
            self.mtime_ns,
            self.ctime_ns,
            self.hash,
            self.sqlite,
            self.wal,
            self.image,
        ]

    @classmethod
    def from_json(cls, obj: list[Any]) -> CacheRecord:
        ino, size, mtime_ns, ctime_ns, hash_, sqlite_, wal, image = obj
        return cls(ino, size, mtime_ns, ctime_ns, hash_, bool(sqlite_), tuple(wal) if wal else None, image)

    def matches(self, st: os.stat_result) -> bool:
        return (self.ino, self.size, self.mtime_ns, self.ctime_ns) == (
            st.st_ino,
            st.st_size,
            st.st_mtime_ns,
            st.st_ctime_ns,
        )


@attrs.frozen
class ScanResult:
    manifest: Manifest
    #: content hash -> file to read it from (live file or SQLite image)
    sources: Mapping[str, str]
    #: paths of this tree that belong to this node only (excluded, or links leaving the tree)
    local_only: tuple[str, ...] = ()
    #: special files skipped, with the reason
    skipped: tuple[str, ...] = ()


def is_excluded(rel: str, patterns: Sequence[str]) -> bool:
    """True if ``rel`` or one of its parents matches a pattern. A pattern with a ``/`` is
    matched against the relative path, one without against each path component."""
    if not patterns or rel == ".":
        return False
    parts = rel.split("/")
    for i in range(len(parts)):
        prefix = "/".join(parts[: i + 1])
        for pattern in patterns:
            pat = pattern.rstrip("/")
            if "/" in pat:
                if fnmatch.fnmatchcase(prefix, pat):
                    return True
            elif fnmatch.fnmatchcase(parts[i], pat):
                return True
    return False


def link_escapes(rel: str, target: str) -> bool:
    """True if the symlink at ``rel`` (relative path) resolves lexically outside the tree."""
    if not target or target.startswith("/") or "\x00" in target:
        return True
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
    return joined == ".." or joined.startswith("../") or joined.startswith("/")


#: Symlinks followed while resolving one path before giving up (the kernel's MAXSYMLINKS).
MAX_LINK_HOPS = 40


def resolve_link(rel: str, target: str, links: Mapping[str, str]) -> str | None:
    """Where the symlink at ``rel`` really points, following the other links of the tree
    (``links``: relative path -> target) as the kernel would: the resolved relative path
    (``"."`` for the root), or None when it leaves the tree, is absolute, or loops.

    A lexical check of each link on its own is not enough: with ``x -> .`` and
    ``y -> x/..``, ``y`` normalises to ``.`` but really resolves to the tree's parent.
    Components that are not links of the tree (files, missing names) are taken as plain
    directories: the kernel fails such a lookup, so it cannot leave the tree either."""
    if not target or target.startswith("/") or "\x00" in target:
        return None
    stack = rel.split("/")[:-1]
    pending = target.split("/")[::-1]
    hops = 0
    while pending:
        part = pending.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if not stack:
                return None
            stack.pop()
            continue
        followed = links.get("/".join([*stack, part]))
        if followed is None:
            stack.append(part)
            continue
        hops += 1
        if hops > MAX_LINK_HOPS or not followed or followed.startswith("/"):
            return None
        pending.extend(followed.split("/")[::-1])
    return "/".join(stack) or "."


def file_hash(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _is_sqlite(path: str, st: os.stat_result) -> bool:
    if st.st_size < 512:
        return False
    try:
        with open(path, "rb") as f:
            return f.read(16) == SQLITE_MAGIC
    except OSError:
        return False


def _wal_key(path: str) -> tuple[int, int] | None:
    try:
        st = os.lstat(path + "-wal")
    except FileNotFoundError:
        return None
    return (st.st_size, st.st_mtime_ns)


class Scanner:
    """Scans one tree; keeps the stat cache and the SQLite images between scans."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        exclude: Sequence[str] = (),
        image_dir: str | os.PathLike[str],
        cache: dict[str, CacheRecord] | None = None,
    ) -> None:
        self.root = os.fspath(root)
        self.exclude = tuple(exclude)
        self.image_dir = os.fspath(image_dir)
        self.cache: dict[str, CacheRecord] = cache if cache is not None else {}

    def scan(self) -> ScanResult | None:
        """Scan the tree; None if the root directory does not exist."""
        try:
            root_st = os.lstat(self.root)
        except FileNotFoundError:
            return None
        if not stat.S_ISDIR(root_st.st_mode):
            raise SyncError(f"{self.root} is not a directory")
        os.makedirs(self.image_dir, mode=0o700, exist_ok=True)
        entries = [_dir_entry(".", root_st)]
        sources: dict[str, str] = {}
        local_only: list[str] = []
        skipped: list[str] = []
        seen: set[str] = set()
        links: dict[str, str] = {}
        self._walk(".", entries, sources, local_only, skipped, seen, links)
        entries = self._drop_escaping_links(entries, links, local_only)
        for rel in [r for r in self.cache if r not in seen]:
            del self.cache[rel]
        self._prune_images(sources)
        return ScanResult(Manifest.build(entries), sources, tuple(local_only), tuple(skipped))

    def _walk(
        self,
        rel_dir: str,
        entries: list[Entry],
        sources: dict[str, str],
        local_only: list[str],
        skipped: list[str],
        seen: set[str],
        links: dict[str, str],
    ) -> None:
        abs_dir = self.root if rel_dir == "." else os.path.join(self.root, rel_dir)
        try:
            names = sorted(os.listdir(abs_dir))
        except FileNotFoundError:
            return  # removed while we scan: the next scan sees the new state
        name_set = set(names)
        for name in names:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if is_excluded(rel, self.exclude):
                local_only.append(rel)
                continue
            path = os.path.join(abs_dir, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode):
                entries.append(_dir_entry(rel, st))
                self._walk(rel, entries, sources, local_only, skipped, seen, links)
            elif stat.S_ISLNK(st.st_mode):
                try:
                    target = os.readlink(path)
                except FileNotFoundError:
                    continue
                links[rel] = target
                if link_escapes(rel, target):
                    log.warning(
                        "sync: %s -> %s leaves the tree; not replicated (each node keeps its own)",
                        rel,
                        target,
                    )
                    local_only.append(rel)
                    continue
                entries.append(
                    Entry(
                        rel,
                        "l",
                        stat.S_IMODE(st.st_mode),
                        st.st_uid,
                        st.st_gid,
                        st.st_mtime_ns,
                        target=target,
                    )
                )
            elif stat.S_ISREG(st.st_mode):
                if self._is_companion(abs_dir, name, name_set):
                    continue
                seen.add(rel)
                hashed = self._hash_file(rel, path, st)
                if hashed is None:
                    continue
                digest, source, is_db, size = hashed
                sources.setdefault(digest, source)
                entries.append(
                    Entry(
                        rel,
                        "f",
                        stat.S_IMODE(st.st_mode),
                        st.st_uid,
                        st.st_gid,
                        st.st_mtime_ns,
                        size=size,
                        hash=digest,
                        sqlite=is_db,
                    )
                )
            else:
                skipped.append(f"{rel}: special file (mode {stat.filemode(st.st_mode)})")

    @staticmethod
    def _drop_escaping_links(entries: list[Entry], links: Mapping[str, str], local_only: list[str]) -> list[Entry]:
        """Links that leave the tree only through other links (``y -> x/..`` with
        ``x -> .``) are node-local too: the standby would refuse them."""
        kept: list[Entry] = []
        for entry in entries:
            if entry.kind == "l" and resolve_link(entry.path, entry.target, links) is None:
                log.warning(
                    "sync: %s -> %s leaves the tree through other links; not replicated", entry.path, entry.target
                )
                local_only.append(entry.path)
                continue
            kept.append(entry)
        return kept

    def _is_companion(self, abs_dir: str, name: str, names: set[str]) -> bool:
        for suffix in SQLITE_COMPANIONS:
            if name.endswith(suffix) and name[: -len(suffix)] in names:
                base = os.path.join(abs_dir, name[: -len(suffix)])
                try:
                    return _is_sqlite(base, os.lstat(base))
                except OSError:
                    return False
        return False

    def _hash_file(self, rel: str, path: str, st: os.stat_result) -> tuple[str, str, bool, int] | None:
        record = self.cache.get(rel)
        if record is not None and record.matches(st):
            if not record.sqlite:
                return record.hash, path, False, st.st_size
            if record.wal == _wal_key(path):
                if record.image is None:
                    return record.hash, path, True, st.st_size
                if os.path.exists(record.image):
                    return record.hash, record.image, True, os.path.getsize(record.image)
        try:
            if _is_sqlite(path, st):
                wal = _wal_key(path)
                digest, image = self._image_sqlite(path)
                self.cache[rel] = CacheRecord(
                    st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, digest, True, wal, image
                )
                return digest, image, True, os.path.getsize(image)
            digest = file_hash(path)
        except FileNotFoundError:
            return None
        after = os.lstat(path)
        if (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns):
            self.cache[rel] = CacheRecord(st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, digest)
        else:
            self.cache.pop(rel, None)  # changed while hashed: the receiver's check decides
        return digest, path, False, st.st_size

    def _image_sqlite(self, path: str) -> tuple[str, str]:
        """A consistent copy through the SQLite online backup API (one read transaction)."""
        tmp = os.path.join(self.image_dir, f".tmp-{uuid.uuid4().hex}")
        uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
        try:
            src = sqlite3.connect(uri, uri=True, timeout=30.0)
            try:
                dst = sqlite3.connect(tmp)
                try:
                    src.backup(dst)
                finally:
                    dst.close()
            finally:
                src.close()
            digest = file_hash(tmp)
            image = os.path.join(self.image_dir, f"{digest}.db")
            os.replace(tmp, image)
            return digest, image
        except sqlite3.Error as exc:
            raise SyncError(f"cannot take a consistent copy of SQLite database {path}: {exc}") from exc
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise SyncError(f"no room for a SQLite image in {self.image_dir}: {exc}") from exc
            raise
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def _prune_images(self, sources: Mapping[str, str]) -> None:
        """Keep the images of this scan and of the previous one (transfers in flight)."""
        keep = {os.path.basename(s) for s in sources.values()} | getattr(self, "_previous_images", set())
        self._previous_images = {os.path.basename(s) for s in sources.values()}
        for name in os.listdir(self.image_dir):
            if name not in keep:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.image_dir, name))

    def cache_to_json(self) -> dict[str, list[Any]]:
        return {rel: rec.to_json() for rel, rec in self.cache.items()}

    @staticmethod
    def cache_from_json(obj: object) -> dict[str, CacheRecord]:
        if not isinstance(obj, dict):
            return {}
        out = {}
        for rel, rec in obj.items():
            try:
                out[str(rel)] = CacheRecord.from_json(rec)
            except (TypeError, ValueError):
                continue
        return out


def _dir_entry(rel: str, st: os.stat_result) -> Entry:
    return Entry(rel, "d", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns)
