"""The sync engine of one ``[[sync]]`` directory: source while this node holds the service,
follower while it is a standby.

* :meth:`SyncEngine.serve` (holder): scan, publish a generation, watch the tree
  (``watchfiles``; a full scan every ``interval`` as backstop), serve pulls over TCP.
* :meth:`SyncEngine.follow` (standby, service stopped): long-poll the holder and apply each
  new generation atomically.
* :meth:`SyncEngine.pull` (one-shot): what a preempting node awaits before it takes over.

Generations: a counter and the manifest hash, plus the hashes of the generations they
descend from. A pulled snapshot is applied as a fast-forward when it descends from the
last generation this node held *and* the local tree has not changed since; otherwise the
two copies diverged: the pulled copy wins (it is the one the active service runs on) and
the local tree is kept beside the target as ``<name>.conflict-<UTC time>-<node>``, with
an alert (logged, counted, ``on_event("conflict", …)``). Nothing is deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import attrs
import watchfiles
from anyio.abc import SocketAttribute, SocketStream, TaskStatus

from .._accept import serve_bounded
from ._address_filter import AddressFilter, resolve_hosts
from ._errors import AuthenticationFailed, SyncError, TransferError, UnsafeSnapshot
from .apply import Staging, clean_stale, validate
from .config import SyncSettings
from .messages import MAX_HELLO, decode_snapshot, encode_snapshot, parse_hello
from .owners import Owners
from .snapshot import CacheRecord, Generation, Manifest, Scanner, ScanResult, SnapshotInfo, is_excluded
from .transfer import (
    DONE,
    ERROR,
    HELLO,
    NO_CHANGE,
    SNAPSHOT,
    WANT,
    SecureChannel,
    channel_contexts,
    client_handshake,
    receive_blobs,
    send_blobs,
    server_handshake,
    sync_key,
)

__all__ = ["Published", "SyncEngine", "SyncStatus"]

log = logging.getLogger("hasup.sync")

#: How long a follower's pull waits at the source for a new generation (long poll).
LONG_POLL = 25.0
#: Connections one transfer server handles at once (pre-authentication included).
MAX_CONNECTIONS = 16
#: Bound of the TLS handshake: a silent client is dropped after this.
AUTH_TIMEOUT = 5.0
EventCallback = Callable[[str, Mapping[str, Any]], None]


@attrs.frozen
class Published:
    """A generation as served by the source."""

    info: SnapshotInfo
    manifest: Manifest
    sources: Mapping[str, str]
    encoded: bytes


@attrs.frozen
class SyncStatus:
    """What ``/status`` and metrics show for one ``[[sync]]`` directory."""

    path: str
    role: str  # "idle" | "source" | "follower"
    generation: Generation
    peer_generation: Generation | None
    last_sync: float | None  # unix time of the last completed pull or publication
    last_error: str | None
    conflicts: int
    pulls: int
    auth_failures: int
    bytes_received: int
    bytes_sent: int
    skipped: tuple[str, ...]
    #: connections closed unread: foreign address, over the limit, out of descriptors
    refused: int = 0

    @property
    def in_sync(self) -> bool:
        # heartbeats carry a 16-hex-digit prefix of the hash (Generation.to_wire)
        peer = self.peer_generation
        return peer is None or (
            peer.number == self.generation.number and bool(peer.hash) and self.generation.hash.startswith(peer.hash)
        )


class SyncEngine:
    """Replicates one directory between group members. See the module docstring."""

    def __init__(
        self,
        settings: SyncSettings,
        *,
        group_keys: Sequence[bytes],
        node_name: str,
        state_dir: str | os.PathLike[str],
        on_event: EventCallback | None = None,
        io_timeout: float = 30.0,
        allowed_peers: Sequence[str] | None = None,
    ) -> None:
        if not group_keys:
            raise ValueError("data sync needs a group key (it carries device and broker credentials)")
        self.settings = settings
        self.root = Path(settings.path)
        self.node_name = node_name
        self._contexts = channel_contexts([sync_key(k) for k in group_keys], settings.sync_id)
        self._on_event = on_event
        self._io_timeout = io_timeout
        self._auth_timeout = min(io_timeout, AUTH_TIMEOUT)
        self._allowed_peers = None if allowed_peers is None else tuple(allowed_peers)
        slug = hashlib.sha256(settings.path.encode()).hexdigest()[:8]
        self._state_dir = Path(state_dir) / "sync" / f"{self.root.name or 'root'}-{slug}"
        self._state_file = self._state_dir / "state.json"
        self._info = SnapshotInfo()
        self._local_hash = ""
        cache: dict[str, CacheRecord] = {}
        self._load_state(cache)
        self._scanner = Scanner(self.root, exclude=settings.exclude, image_dir=self._state_dir / "images", cache=cache)
        self._lock = anyio.Lock()
        self._published: Published | None = None
        self._changed = anyio.Event()
        self._wake = anyio.Event()
        self._role = "idle"
        self._peer_generation: Generation | None = None
        self._last_sync: float | None = None
        self._last_error: str | None = None
        self._skipped: tuple[str, ...] = ()
        self._counters = {
            "conflicts": 0,
            "pulls": 0,
            "auth_failures": 0,
            "bytes_received": 0,
            "bytes_sent": 0,
            "refused": 0,
        }

    # -- state -----------------------------------------------------------------------
    def current_generation(self) -> Generation:
        """The generation this node holds (produced as source or applied as follower)."""
        return self._info.generation

    def note_peer_generation(self, generation: Generation) -> None:
        """Record the generation a peer advertises (heartbeat TLV), for status/lag."""
        self._peer_generation = generation

    def status(self) -> SyncStatus:
        c = self._counters
        return SyncStatus(
            path=str(self.root),
            role=self._role,
            generation=self._info.generation,
            peer_generation=self._peer_generation,
            last_sync=self._last_sync,
            last_error=self._last_error,
            conflicts=c["conflicts"],
            pulls=c["pulls"],
            auth_failures=c["auth_failures"],
            bytes_received=c["bytes_received"],
            bytes_sent=c["bytes_sent"],
            skipped=self._skipped,
            refused=c["refused"],
        )

    def _event(self, name: str, **fields: Any) -> None:
        if self._on_event is not None:
            self._on_event(name, fields)

    def _load_state(self, cache: dict[str, CacheRecord]) -> None:
        try:
            data = json.loads(self._state_file.read_text())
            self._info = SnapshotInfo.from_json(data["info"])
            self._local_hash = str(data.get("local_hash", ""))
            cache.update(Scanner.cache_from_json(data.get("cache")))
        except FileNotFoundError:
            return
        except (ValueError, KeyError, TypeError, UnsafeSnapshot) as exc:
            log.error("sync: state file %s unreadable (%s); starting without history", self._state_file, exc)

    def _save_state(self) -> None:
        self._state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = {
            "info": self._info.to_json(),
            "local_hash": self._local_hash,
            "cache": self._scanner.cache_to_json(),
        }
        tmp = self._state_file.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(data, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._state_file)
        fd = os.open(self._state_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- source ------------------------------------------------------------------------
    async def snapshot_now(self) -> Generation:
        """Scan the tree now; publish a new generation if anything changed."""
        async with self._lock:
            result = await anyio.to_thread.run_sync(self._scanner.scan)
            if result is None:
                self._published = None
                raise SyncError(f"{self.root} does not exist; nothing to serve")
            if await anyio.to_thread.run_sync(self._publish, result):
                self._changed.set()
                self._changed = anyio.Event()
                self._event("published", generation=self._info.generation.short())
            return self._info.generation

    def _publish(self, result: ScanResult) -> bool:
        manifest = result.manifest
        self._skipped = result.skipped
        if manifest.hash != self._info.generation.hash:
            self._info = self._info.successor(manifest.hash, origin=self.node_name, created=time.time())
            self._local_hash = manifest.hash
            self._save_state()
            self._last_sync = time.time()
            log.info("sync: %s generation %s", self.root, self._info.generation.short())
        elif self._local_hash != manifest.hash:
            self._local_hash = manifest.hash
            self._save_state()
        previous = self._published
        encoded = encode_snapshot(self._info, manifest)
        self._published = Published(self._info, manifest, result.sources, encoded)
        return previous is None or previous.info != self._info

    async def serve(self, *, task_status: TaskStatus[tuple[str, int]] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run as source until cancelled: publish, watch, serve pulls. ``task_status``
        receives the bound ``(host, port)`` once the first generation is published."""
        self._role = "source"
        try:
            try:
                await self.snapshot_now()
            except SyncError as exc:
                self._last_error = str(exc)
                log.error("sync: %s", exc)
            host, port = self.settings.listen
            allow = await self._client_filter()
            listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
            async with listener, anyio.create_task_group() as tg:
                tg.start_soon(self._watch)
                tg.start_soon(self._rescan_loop)
                sockname = listener.extra(SocketAttribute.local_address)
                task_status.started((str(sockname[0]), int(sockname[1])))
                await serve_bounded(
                    listener,
                    self._handle,
                    name=f"sync server {host}:{port}",
                    limit=MAX_CONNECTIONS,
                    allow=allow,
                    on_refused=self._refused,
                )
        finally:
            self._role = "idle"

    async def _rescan_loop(self) -> None:
        while True:
            with anyio.move_on_after(self.settings.interval):
                await self._wake.wait()
            self._wake = anyio.Event()
            try:
                await self.snapshot_now()
                self._last_error = None
            except (SyncError, OSError) as exc:
                self._last_error = str(exc)
                log.error("sync: scan of %s failed: %s", self.root, exc)

    async def _watch(self) -> None:
        # watchfiles' thread only notices cancellation through its stop event; set it as
        # soon as we are cancelled so that serve() returns promptly.
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch_loop, stop)
            try:
                await anyio.sleep_forever()
            finally:
                stop.set()

    async def _watch_loop(self, stop: anyio.Event) -> None:
        root = str(self.root)
        excludes = self.settings.exclude

        def relevant(_change: watchfiles.Change, path: str) -> bool:
            rel = os.path.relpath(path, root)
            return not rel.startswith("..") and not is_excluded(rel.replace(os.sep, "/"), excludes)

        while not stop.is_set():
            try:
                async for _changes in watchfiles.awatch(
                    root, watch_filter=relevant, debounce=100, step=100, stop_event=stop, yield_on_timeout=False
                ):
                    self._wake.set()
            except (OSError, RuntimeError) as exc:
                # No tree yet, or the watcher failed: the periodic scan is the backstop.
                log.debug("sync: watching %s: %s", root, exc)
            with anyio.move_on_after(self.settings.interval):
                await stop.wait()

    def _refused(self, reason: str) -> None:
        self._counters["refused"] += 1
        self._event("refused", reason=reason)

    async def _client_filter(self) -> Callable[[str], bool] | None:
        """Accept only the peers' addresses and ``allow_from``; None = anyone (the
        engine was built without a peer list: tests, benchmarks)."""
        if self._allowed_peers is None:
            return None
        return AddressFilter(await resolve_hosts(self._allowed_peers), self.settings.allow_from)

    async def _handle(self, stream: SocketStream) -> None:
        async with stream:
            try:
                channel = await server_handshake(stream, self._contexts, auth_timeout=self._auth_timeout)
            except AuthenticationFailed as exc:
                self._counters["auth_failures"] += 1
                peer = stream.extra(SocketAttribute.remote_address, None)
                log.warning("sync: refused %s: %s", peer, exc)
                self._event("auth_failed", peer=peer, reason=str(exc))
                return
            try:
                await self._serve_pull(channel)
            except (TransferError, UnsafeSnapshot) as exc:
                log.info("sync: transfer to peer ended: %s", exc)
            except Exception as exc:  # an authenticated peer's bad input ends its connection only
                log.warning("sync: transfer to peer aborted: %r", exc)

    async def _serve_pull(self, channel: SecureChannel) -> None:
        hello = await channel.receive_json(HELLO, idle=self._io_timeout, limit=MAX_HELLO)
        have, wait = parse_hello(hello)
        changed = self._changed
        pub = self._published
        if wait > 0 and pub is not None and pub.info.generation.hash == have:
            with anyio.move_on_after(wait):
                await changed.wait()
            pub = self._published
        if pub is None:
            await channel.send_json(ERROR, {"error": f"the source has no data at {self.root}"})
            return
        if pub.info.generation.hash == have:
            await channel.send_json(NO_CHANGE, pub.info.to_json())
            return
        await channel.send_big(SNAPSHOT, pub.encoded)
        want = await channel.receive_json(WANT, idle=self._io_timeout)
        if not isinstance(want, list) or not all(isinstance(h, str) and h in pub.sources for h in want):
            await channel.send_json(ERROR, {"error": "asked for content not in this snapshot"})
            return

        def sent(n: int) -> None:
            self._counters["bytes_sent"] += n
            self._event("sent", bytes=n)

        broken = await send_blobs(channel, want, pub.sources, on_progress=sent)
        if broken is not None:
            # the file changed after the scan (or an image was damaged): rescan at once
            self._scanner.cache = {r: c for r, c in self._scanner.cache.items() if c.hash != broken}
            self._wake.set()
            return
        with contextlib.suppress(TransferError):
            done = await channel.receive_json(DONE, idle=self._io_timeout)
            if isinstance(done, dict) and isinstance(done.get("generation"), int):
                self._peer_generation = Generation(done["generation"], str(done.get("hash", "")))

    # -- follower ------------------------------------------------------------------------
    async def pull(self, peer: tuple[str, int], *, attempts: int = 3) -> Generation:
        """Fetch the peer's current generation and apply it; return the generation held.

        Bound it with ``anyio.fail_after`` (``settings.pull_timeout``); cancelling it
        leaves the current copy intact. Raises :class:`SyncError` subclasses."""
        for attempt in range(attempts):
            try:
                return await self._pull_once(peer, wait=0.0)
            except TransferError as exc:
                if attempt == attempts - 1 or "changed" not in str(exc):
                    raise
        raise AssertionError("unreachable")

    async def follow(self, peer: tuple[str, int], *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Mirror ``peer`` until cancelled (only while this node's service is stopped)."""
        self._role = "follower"
        task_status.started()
        backoff = 0.1
        try:
            while True:
                try:
                    await self._pull_once(peer, wait=min(LONG_POLL, self.settings.interval))
                    backoff = 0.1
                    self._last_error = None
                except SyncError as exc:
                    self._last_error = str(exc)
                    log.warning("sync: pull from %s:%d failed: %s", peer[0], peer[1], exc)
                    self._event("pull_failed", error=str(exc), peer=peer)
                    await anyio.sleep(backoff)
                    backoff = min(backoff * 2, max(self.settings.interval, 0.1))
        finally:
            self._role = "idle"

    async def _pull_once(self, peer: tuple[str, int], *, wait: float) -> Generation:
        try:
            with anyio.fail_after(self._io_timeout):
                # from our own listen address when it is a specific one: the source
                # accepts only the peers' addresses (a multi-homed node would else pick
                # whatever source address the route gives)
                own = self.settings.listen[0]
                local = None if own in ("", "0.0.0.0", "::") else own
                stream = await anyio.connect_tcp(peer[0], peer[1], local_host=local)
        except (OSError, TimeoutError) as exc:
            raise TransferError(f"cannot connect to {peer[0]}:{peer[1]}: {exc}") from exc
        async with stream:
            channel = await client_handshake(stream, self._contexts, auth_timeout=self._io_timeout)
            have = self._info.generation.hash
            await channel.send_json(HELLO, {"have": have, "wait": wait, "node": self.node_name})
            kind, data = await channel.receive_message(idle=wait + self._io_timeout)
            if kind == NO_CHANGE:
                info = SnapshotInfo.from_json(json.loads(data))
                self._peer_generation = info.generation
                self._last_sync = time.time()
                return self._info.generation
            if kind != SNAPSHOT:
                raise TransferError(f"unexpected reply {kind!r}")
            info, manifest, owners = decode_snapshot(data)
            self._peer_generation = info.generation
            validate(manifest, max_bytes=self.settings.max_bytes)
            async with self._lock:
                generation = await self._apply(channel, info, manifest, owners)
            with contextlib.suppress(TransferError):
                await channel.send_json(DONE, {"generation": generation.number, "hash": generation.hash})
            return generation

    async def _apply(
        self, channel: SecureChannel, info: SnapshotInfo, manifest: Manifest, owners: Owners
    ) -> Generation:
        await anyio.to_thread.run_sync(clean_stale, self.root)
        local = await anyio.to_thread.run_sync(self._scanner.scan)
        ours = self._info.generation.hash
        local_hash = local.manifest.hash if local is not None else ""
        local_empty = local is None or len(local.manifest.entries) <= 1
        if local is not None and local_hash == manifest.hash:
            await channel.send_json(WANT, [])
            await anyio.to_thread.run_sync(self._adopt, info, local_hash)
            self._event("applied", generation=info.generation.short())
            return info.generation
        dirty = not local_empty and local_hash != self._local_hash
        if not dirty and ours and ours != info.generation.hash and self._info.descends_from(info.generation.hash):
            await channel.send_json(WANT, [])
            log.warning(
                "sync: peer offers generation %s, older than ours %s: kept ours",
                info.generation.short(),
                self._info.generation.short(),
            )
            return self._info.generation
        reason = None
        if dirty and not ours:
            reason = "first sync onto an existing tree"
        elif dirty:
            reason = "local changes not known to the source"
        elif ours and not info.descends_from(ours):
            reason = "both sides changed since the last common generation"
        elif len(manifest.entries) <= 1 and not local_empty:
            # an empty source is more often an unmounted volume than a deliberate wipe
            reason = "the source's tree is empty"
        keep_old = reason is not None
        local_files = dict(local.sources) if local is not None else {}
        want = sorted({e.hash for e in manifest.files() if e.hash not in local_files})
        sizes = {e.hash: e.size for e in manifest.files()}
        needed = sum(sizes[h] for h in want)
        if keep_old:
            needed = manifest.total_bytes
        staging = await anyio.to_thread.run_sync(Staging, self.root)
        try:
            await anyio.to_thread.run_sync(staging.check_space, needed)
            await channel.send_json(WANT, want)

            def received(n: int) -> None:
                self._counters["bytes_received"] += n
                self._event("received", bytes=n)

            await receive_blobs(
                channel,
                want,
                lambda digest: staging.open_blob(digest, sizes[digest]),
                idle=self._io_timeout,
                on_progress=received,
            )
            local_only = local.local_only if local is not None else ()
            await anyio.to_thread.run_sync(
                lambda: staging.build(
                    manifest,
                    local_files=local_files,
                    hardlink_local=not keep_old,
                    local_only=local_only,
                    owners=owners,
                )
            )
            keep_as = None
            if keep_old:
                stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
                keep_as = self.root.with_name(f"{self.root.name}.conflict-{stamp}-{self.node_name}")
                n = 1
                while keep_as.exists():
                    n += 1
                    keep_as = keep_as.with_name(f"{keep_as.name}.{n}")
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(lambda: staging.commit(keep_old_as=keep_as))
                await anyio.to_thread.run_sync(self._rescan_applied, manifest, info)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(staging.discard)
            raise
        self._counters["pulls"] += 1
        if keep_old:
            assert keep_as is not None
            alert = reason != "first sync onto an existing tree"
            if alert:
                self._counters["conflicts"] += 1
            (log.error if alert else log.warning)(
                "sync: %s: %s; applied %s from the source, kept this node's copy at %s",
                "CONFLICT" if alert else "sync",
                reason,
                info.generation.short(),
                keep_as,
            )
            self._event(
                "conflict" if alert else "kept_local_copy",
                reason=reason,
                kept=str(keep_as),
                generation=info.generation.short(),
            )
        log.info("sync: %s now at generation %s", self.root, info.generation.short())
        self._event("applied", generation=info.generation.short())
        return info.generation

    def _rescan_applied(self, manifest: Manifest, info: SnapshotInfo) -> None:
        """Seed the stat cache with the applied files (their hashes were verified), then
        scan: the local hash that later says whether this node changed the tree."""
        cache = self._scanner.cache
        for entry in manifest.files():
            try:
                st = os.lstat(self.root / entry.path)
            except FileNotFoundError:
                continue
            cache[entry.path] = CacheRecord(
                st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, entry.hash, entry.sqlite, None, None
            )
        result = self._scanner.scan()
        self._adopt(info, result.manifest.hash if result is not None else "")

    def _adopt(self, info: SnapshotInfo, local_hash: str) -> None:
        self._info = info
        self._local_hash = local_hash
        self._last_sync = time.time()
        self._save_state()
