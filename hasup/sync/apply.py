"""Apply a received snapshot atomically on a standby.

Everything is written into a staging directory next to the target
(``<parent>/.<name>.hasup-stage-<id>/tree``, same filesystem), flushed to disk, and then
swapped with the live tree in one ``renameat2(RENAME_EXCHANGE)``. Readers see the old
tree or the new one, never a mix; a crash at any point leaves the old tree in place and
a stale staging directory that the next sync removes. The old tree is deleted after the
swap, or kept beside the target under a timestamped name when the sync resolved a
conflict.

Untrusted input: a manifest is validated before anything is written (:func:`validate`):
relative paths only, no ``.``/``..``/empty components, every parent a directory of the
same manifest (so nothing is ever written *through* a symlink), every symlink must
resolve inside the tree *following the other links* (:func:`~hasup.sync.snapshot.resolve_link`:
a chain such as ``x -> .``, ``y -> x/..`` is refused), only directories, regular files
and symlinks, and an optional size quota. After the staging tree is built (with the
node-local paths carried over), each replicated link is resolved once more on the real
staged files, so a link that leaves the tree through one of this node's own links is
refused too. Set-user-id and set-group-id bits are always stripped; owners are mapped by
name (:mod:`hasup.sync.owners`).
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import logging
import os
import shutil
import stat
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, TypeVar

from ._errors import DiskFull, SyncError, TransferError, UnsafeSnapshot
from .owners import OwnerMap, Owners
from .snapshot import Entry, Manifest, resolve_link

__all__ = ["BlobWriter", "Staging", "clean_stale", "validate"]

log = logging.getLogger("hasup.sync")

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_libc = ctypes.CDLL(None, use_errno=True)
#: Never recreated on a standby: a set-id program planted by a compromised source (or a
#: setgid directory) would run with privileges after the next failover.
SET_ID = stat.S_ISUID | stat.S_ISGID
T = TypeVar("T")


def validate(manifest: Manifest, *, max_bytes: int | None = None) -> None:
    """Refuse anything that could write outside the tree or create special files."""
    entries = manifest.entries
    if not entries or entries[0].path != "." or entries[0].kind != "d":
        raise UnsafeSnapshot("manifest has no root directory entry")
    kinds: dict[str, str] = {}
    links = {e.path: e.target for e in entries if e.kind == "l"}
    for entry in entries:
        path = entry.path
        if path in kinds:
            raise UnsafeSnapshot(f"duplicate path {path!r}")
        if path != ".":
            _check_path(path)
            parent = path.rpartition("/")[0] or "."
            if kinds.get(parent) != "d":
                raise UnsafeSnapshot(f"{path!r}: parent {parent!r} is not a directory of the snapshot")
        if entry.kind == "l" and resolve_link(path, entry.target, links) is None:
            raise UnsafeSnapshot(f"symlink {path!r} -> {entry.target!r} points outside the tree")
        kinds[path] = entry.kind
    total = manifest.total_bytes
    if max_bytes is not None and total > max_bytes:
        raise UnsafeSnapshot(f"snapshot holds {total} bytes, more than max_bytes = {max_bytes}")


def _check_path(path: str) -> None:
    if not path or "\x00" in path or path.startswith("/"):
        raise UnsafeSnapshot(f"path {path!r} is absolute or empty")
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise UnsafeSnapshot(f"path {path!r} has a {part or 'empty'!r} component")


def _no_space(exc: OSError) -> bool:
    return exc.errno in _NO_SPACE


def _staging_prefix(root: Path) -> str:
    return f".{root.name}.hasup-stage-"


def clean_stale(root: Path) -> None:
    """Remove staging directories left by a crash; undo an interrupted fallback swap."""
    parent = root.parent
    if not parent.is_dir():
        return
    for child in parent.iterdir():
        if not child.name.startswith(_staging_prefix(root)):
            continue
        old = child / "old"
        if not root.exists() and old.is_dir():
            os.rename(old, root)
            log.warning("sync: restored %s from an interrupted swap", root)
        shutil.rmtree(child, ignore_errors=True)


class BlobWriter:
    """Receives one file's content; the hash is checked before it can be used."""

    def __init__(self, staging: Staging, digest: str, size: int | None = None) -> None:
        self._staging = staging
        self.digest = digest
        self.expected = size
        self.path = staging.blobs / digest
        self._part = staging.blobs / f"{digest}.part"
        self._hash = hashlib.sha256()
        self._file: IO[bytes] = staging.guard(lambda: open(self._part, "wb"))  # noqa: SIM115
        self.size = 0

    def write(self, data: bytes) -> None:
        if self.expected is not None and self.size + len(data) > self.expected:
            # enforced while receiving: the quota and the space check count on it
            raise TransferError(
                f"content of {self.digest[:12]} is larger than the manifest says ({self.expected} bytes)"
            )
        self._hash.update(data)
        self.size += len(data)
        self._staging.guard(lambda: self._file.write(data))

    def finish(self) -> None:
        self._staging.guard(self._file.close)
        if self._hash.hexdigest() != self.digest:
            os.unlink(self._part)
            raise TransferError(f"content of {self.digest[:12]} does not match its hash (changed at the source?)")
        os.rename(self._part, self.path)

    def abort(self) -> None:
        self._file.close()


class Staging:
    """One staging area next to ``root``. Use from a worker thread: all calls block."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.parent = root.parent
        self.parent.mkdir(parents=True, exist_ok=True)
        self.base = self.parent / f"{_staging_prefix(root)}{uuid.uuid4().hex[:12]}"
        self.tree = self.base / "tree"
        self.blobs = self.base / "blobs"
        self.guard(lambda: self.base.mkdir(mode=0o700))
        self.blobs.mkdir()
        self._used: dict[str, Path] = {}
        self._owners = OwnerMap(Owners(), fallback=(os.geteuid(), os.getegid()))

    # -- errors --------------------------------------------------------------------
    def guard(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except OSError as exc:
            if _no_space(exc):
                raise DiskFull(
                    f"no space left on the filesystem of {self.parent} while staging a snapshot; "
                    f"the current copy at {self.root} is intact"
                ) from exc
            raise

    def check_space(self, needed: int) -> None:
        vfs = os.statvfs(self.parent)
        free = vfs.f_bavail * vfs.f_frsize
        # inodes and directory blocks need room too: ask for 1 MiB + 1 % headroom.
        if needed + (needed // 100) + (1 << 20) > free:
            raise DiskFull(
                f"not enough space on the filesystem of {self.parent}: the snapshot needs "
                f"{needed} bytes of new data, {free} are free; the current copy at {self.root} is intact"
            )

    def open_blob(self, digest: str, size: int | None = None) -> BlobWriter:
        """A writer for one content; ``size`` (from the manifest) is enforced."""
        return BlobWriter(self, digest, size)

    # -- build ---------------------------------------------------------------------
    def build(
        self,
        manifest: Manifest,
        *,
        local_files: Mapping[str, str],
        hardlink_local: bool,
        local_only: Iterable[str] = (),
        owners: Owners | None = None,
    ) -> None:
        """Create the tree. ``local_files`` maps hashes to files of the current tree holding
        that content; ``hardlink_local`` allows linking instead of copying them (only when
        the old tree is deleted afterwards); ``local_only`` paths are carried over;
        ``owners`` names the source's ids (mapped by name when running as root)."""
        self._owners = OwnerMap(owners or Owners(), fallback=self._local_owner())
        self.guard(lambda: self._build(manifest, local_files, hardlink_local, local_only))
        self._check_links(manifest)

    def _local_owner(self) -> tuple[int, int]:
        """Owner of this node's own target (or of its parent): where unknown names go."""
        st = os.lstat(self.root if self.root.is_dir() else self.parent)
        return st.st_uid, st.st_gid

    def _chown(self, dest: Path, entry: Entry, *, follow: bool = True) -> None:
        os.chown(dest, self._owners.uid(entry.uid), self._owners.gid(entry.gid), follow_symlinks=follow)

    def _check_links(self, manifest: Manifest) -> None:
        """Resolve every replicated link on the real staged tree: a link may leave it
        through one of this node's own (carried-over) links, which the manifest
        cannot know about."""
        top = os.path.realpath(self.tree)
        for entry in manifest.entries:
            if entry.kind != "l":
                continue
            real = os.path.realpath(self.tree / entry.path)
            if real != top and not real.startswith(top + "/"):
                raise UnsafeSnapshot(
                    f"symlink {entry.path!r} -> {entry.target!r} leaves the tree through a link of this node"
                )

    def _build(
        self,
        manifest: Manifest,
        local_files: Mapping[str, str],
        hardlink_local: bool,
        local_only: Iterable[str],
    ) -> None:
        as_root = os.geteuid() == 0
        self.tree.mkdir(mode=0o700)
        paths = {e.path for e in manifest.entries}
        for entry in manifest.entries:
            dest = self.tree / entry.path if entry.path != "." else self.tree
            if entry.kind == "d":
                if entry.path != ".":
                    dest.mkdir(mode=0o700)
            elif entry.kind == "l":
                os.symlink(entry.target, dest)
                if as_root:
                    self._chown(dest, entry, follow=False)
                os.utime(dest, ns=(entry.mtime_ns, entry.mtime_ns), follow_symlinks=False)
            else:
                self._place_file(entry, dest, local_files, hardlink_local, as_root)
        for rel in local_only:
            if rel not in paths:
                self._carry_over(rel)
        for entry in reversed(manifest.entries):
            if entry.kind == "d":
                dest = self.tree / entry.path if entry.path != "." else self.tree
                if as_root:
                    self._chown(dest, entry)
                os.chmod(dest, entry.mode & ~SET_ID)
                os.utime(dest, ns=(entry.mtime_ns, entry.mtime_ns))
        self._sync_all()

    def _place_file(
        self, entry: Entry, dest: Path, local_files: Mapping[str, str], hardlink_local: bool, as_root: bool
    ) -> None:
        blob = self.blobs / entry.hash
        first = self._used.get(entry.hash)
        if first is None and blob.exists():
            os.rename(blob, dest)
        elif first is not None:
            shutil.copyfile(first, dest)
        elif entry.hash in local_files:
            source = local_files[entry.hash]
            inside = source.startswith(f"{self.root}/")
            if hardlink_local and inside and self._same_meta(source, entry, self._owners):
                os.link(source, dest)
                self._used.setdefault(entry.hash, dest)
                return  # metadata already right; never chmod a shared inode
            shutil.copyfile(source, dest)
        else:
            raise TransferError(f"content for {entry.path!r} was neither received nor found locally")
        self._used.setdefault(entry.hash, dest)
        if as_root:
            self._chown(dest, entry)
        os.chmod(dest, entry.mode & ~SET_ID)
        os.utime(dest, ns=(entry.mtime_ns, entry.mtime_ns))

    @staticmethod
    def _same_meta(source: str, entry: Entry, owners: OwnerMap) -> bool:
        st = os.lstat(source)
        return (
            stat.S_ISREG(st.st_mode)
            and st.st_size == entry.size
            and (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns)
            == (entry.mode & ~SET_ID, owners.uid(entry.uid), owners.gid(entry.gid), entry.mtime_ns)
        )

    def _carry_over(self, rel: str) -> None:
        """Keep a node-local path (excluded, or a link leaving the tree) across the swap."""
        source = self.root / rel
        dest = self.tree / rel
        parts = rel.split("/")
        for i in range(1, len(parts)):
            sub = "/".join(parts[:i])
            here = self.tree / sub
            if not here.exists():
                st = os.lstat(self.root / sub)
                here.mkdir(mode=stat.S_IMODE(st.st_mode))
            elif here.is_symlink() or not here.is_dir():
                log.warning("sync: local path %s not kept: %s is no longer a directory", rel, sub)
                return
        st = os.lstat(source)
        if stat.S_ISDIR(st.st_mode):
            shutil.copytree(source, dest, symlinks=True, copy_function=_link_or_copy)
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(source), dest)
        elif stat.S_ISREG(st.st_mode):
            _link_or_copy(str(source), str(dest))

    def _sync_all(self) -> None:
        fd = os.open(self.tree, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if _libc.syncfs(fd) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err), str(self.tree))
        finally:
            os.close(fd)

    # -- swap ------------------------------------------------------------------------
    def commit(self, *, keep_old_as: Path | None = None) -> None:
        """Swap the staged tree in. ``keep_old_as``: keep the replaced tree there."""
        if self.root.is_symlink() or (self.root.exists() and not self.root.is_dir()):
            raise SyncError(f"{self.root} is not a directory; refusing to replace it")
        if not self.root.exists():
            os.rename(self.tree, self.root)
        elif _exchange(self.tree, self.root):
            pass  # the old tree is now at self.tree
        else:
            # No RENAME_EXCHANGE (old kernel, some filesystems): two renames. A crash in
            # between leaves root missing and base/old present; clean_stale() restores it.
            os.rename(self.root, self.base / "old")
            os.rename(self.tree, self.root)
            os.rename(self.base / "old", self.tree)
        _fsync_dir(self.parent)
        if keep_old_as is not None and self.tree.exists():
            os.rename(self.tree, keep_old_as)
            _fsync_dir(self.parent)
        self.discard()

    def discard(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    rc = _libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), f"{a} <-> {b}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, dst)
    return dst
