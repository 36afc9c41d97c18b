"""Leader election on etcd: a key on a lease, created only if absent.

Leadership is the key ``<prefix>/leader`` (value: the node name) attached to a lease of
``ttl`` seconds, created by a transaction that succeeds only when the key does not exist
(``create_revision == 0``). The leader renews the lease every ``ttl / 3``; followers
watch the key and campaign again when it is deleted (resign, revoke, lease expiry).
The key's ``create_revision`` is the fencing token: it grows with every new tenure.

The safety argument (see docs/coordinator.md): etcd expires the lease no earlier than
``ttl`` after it processed the last renewal, which is after we *sent* it. So the leader
keeps a local deadline, ``time the last successful renewal was sent + ttl - margin`` on
its monotonic clock, and gives up leadership when it passes. A partitioned leader has
therefore stepped down ``margin`` seconds before anyone else can create the key.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import math
import urllib.parse
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import httpx
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._errors import BackendUnavailable
from .._section import Section
from .._strictmodes import secret_problem
from ._etcd_client import EtcdClient, KeyValue, WatchCompacted
from .base import Coordinator, CoordinatorError, LeaderChange

__all__ = ["EtcdCoordinator"]

log = logging.getLogger("hasup.coordinator.etcd")


class _Tenure:
    def __init__(self, token: int, lease: int, deadline: float, renewed: float) -> None:
        self.token = token
        self.lease = lease
        self.deadline = deadline
        self.renewed = renewed  # when the last successful renewal (or the grant) was sent
        self.lost = anyio.Event()
        self.reason = ""
        self.scope = anyio.CancelScope()


class EtcdCoordinator(Coordinator):
    """Leader election for one hasup group on an etcd v3 cluster (3.4+), via its JSON
    gateway. Use as ``async with EtcdCoordinator([...], "/hasup/7", "node-a") as c:``.

    ``ttl`` is the lease TTL (etcd counts whole seconds: it is rounded up for the
    grant, the local deadline uses the exact value). ``request_timeout`` bounds each
    request to one member (default ``min(1 s, ttl/3)``); ``margin`` is how long before
    etcd could expire the lease the leader steps down (default and minimum
    ``max(request_timeout, ttl/4)``): make it cover the service's stop time too if an
    overlap of even a moment matters.
    """

    def __init__(
        self,
        endpoints: list[str] | tuple[str, ...],
        prefix: str,
        name: str,
        *,
        ttl: float = 5.0,
        request_timeout: float | None = None,
        margin: float | None = None,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        username: str | None = None,
        password: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if ttl < 1.0:
            raise ValueError("etcd lease TTL must be at least 1 s")
        self.name = name
        self.prefix = prefix.rstrip("/")
        self.key = f"{self.prefix}/leader".encode()
        self.ttl = ttl
        self.request_timeout = request_timeout if request_timeout is not None else min(1.0, ttl / 3)
        if self.request_timeout > ttl / 3:
            raise ValueError(f"request_timeout must be at most ttl/3 ({ttl / 3:g}s)")
        floor = max(self.request_timeout, ttl / 4)
        self.margin = max(margin, floor) if margin is not None else floor
        if self.margin >= ttl - ttl / 3:
            raise ValueError(f"margin {self.margin:g}s leaves no time between renewals at ttl {ttl:g}s")
        self.keepalive_interval = ttl / 3
        self.client = EtcdClient(
            endpoints,
            timeout=self.request_timeout,
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
            username=username,
            password=password,
            transport=transport,
        )
        self._stack: AsyncExitStack | None = None
        self._tg: TaskGroup | None = None
        self._tenure: _Tenure | None = None
        self._no_tenure = anyio.Event()
        self._no_tenure.set()
        self._last_reason = ""
        self._standby: tuple[int, float] | None = None
        self._holder: KeyValue | None = None
        self._known = False  # the watch has told us the key's state at least once
        self._seen_revision = 0  # store revision of what _holder says
        self._changed = anyio.Event()
        self._subscribers: list[MemoryObjectSendStream[LeaderChange]] = []
        self.statistics: dict[str, int] = {
            "keepalive_failures": 0,
            "watch_restarts": 0,
            "campaign_attempts": 0,
        }

    @classmethod
    def from_section(cls, section: Section, *, group_id: int, name: str) -> EtcdCoordinator:
        """Build from a ``[coordinator]`` table with ``type = "etcd"``."""
        section.get_str("type", choices=("etcd",))
        endpoints = section.get_str_list("endpoints")
        if not endpoints:
            raise section.error("endpoints", "needs at least one etcd endpoint URL")
        for url in endpoints:
            if not url.startswith(("http://", "https://")):
                raise section.error("endpoints", f"{url!r} is not an http:// or https:// URL")
        prefix = section.get_str("prefix", f"/hasup/{group_id}")
        if not prefix.startswith("/") or prefix.rstrip("/") == "":
            raise section.error("prefix", "must be an absolute key path such as /hasup/7")
        ttl = section.get_duration("ttl", 5.0, min=1.0, max=3600.0)
        if ttl != math.floor(ttl):
            raise section.error("ttl", 'etcd leases count whole seconds: use e.g. "2s" or "5s"')
        request_timeout = section.get_duration("request_timeout", None, min=0.01, max=ttl / 3)
        margin = section.get_duration("margin", None, min=0.0, max=ttl / 2)
        ca_file = _file(section, "ca_file")
        cert_file = _file(section, "cert_file")
        key_file = _secret(section, "key_file")
        if (cert_file is None) != (key_file is None):
            missing = "cert_file" if cert_file is None else "key_file"
            raise section.error(missing, "cert_file and key_file go together")
        username = section.get_str("username", None)
        password_file = _secret(section, "password_file")
        password = None
        if password_file is not None:
            if username is None:
                raise section.error("password_file", "needs username")
            clear = [url for url in endpoints if url.startswith("http://") and not _is_loopback_url(url)]
            if clear:
                raise section.error(
                    "password_file",
                    f"the etcd password would cross the network in clear text to {clear[0]}; use https:// endpoints",
                )
            try:
                password = Path(password_file).read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                raise section.error("password_file", f"cannot read: {exc}") from None
        elif username is not None:
            raise section.error("username", "needs password_file")
        section.finish()
        return cls(
            list(endpoints),
            prefix,
            name,
            ttl=ttl,
            request_timeout=request_timeout,
            margin=margin,
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
            username=username,
            password=password,
        )

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> EtcdCoordinator:
        async with AsyncExitStack() as stack:
            stack.push_async_callback(self.client.aclose)
            self._tg = await stack.enter_async_context(anyio.create_task_group())
            self._tg.start_soon(self._watch_loop)
            self._stack = stack.pop_all()
        return self

    async def aclose(self) -> None:
        """Resign (if leading) and stop. A crash instead of aclose() costs the group one TTL."""
        if self._stack is None:
            await self.client.aclose()
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.request_timeout * 2):
            await self.resign()
            if self._standby is not None:
                lease, self._standby = self._standby[0], None
                with contextlib.suppress(BackendUnavailable, CoordinatorError):
                    await self.client.lease_revoke(lease)
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        stack, self._stack = self._stack, None
        for send in self._subscribers:
            send.close()
        # Exited here, not inside the shield: the task group must unwind in the
        # cancel scope it was entered in.
        await stack.aclose()

    # ------------------------------------------------------------------ interface
    @property
    def leader_lost(self) -> anyio.Event:
        return self._tenure.lost if self._tenure is not None else self._no_tenure

    @property
    def lost_reason(self) -> str:
        return self._last_reason

    @property
    def token(self) -> int | None:
        """The fencing token of the current tenure (``None`` when not leader)."""
        return self._tenure.token if self._tenure is not None and not self._tenure.lost.is_set() else None

    def deadline(self) -> float | None:
        tenure = self._tenure
        return tenure.deadline if tenure is not None and not tenure.lost.is_set() else None

    def current_leader(self) -> str | None:
        return self._holder.value.decode("utf-8", "replace") if self._holder is not None else None

    def leader_changes(self) -> MemoryObjectReceiveStream[LeaderChange]:
        """Changes of leader from now on; use as ``with c.leader_changes() as changes:``.
        A reader that falls 64 changes behind misses some, it never blocks the coordinator."""
        send, receive = anyio.create_memory_object_stream[LeaderChange](64)
        self._subscribers.append(send)
        return receive

    async def campaign(self) -> int:
        if self._tg is None:
            raise RuntimeError("use the coordinator as `async with` before campaigning")
        if self._tenure is not None and not self._tenure.lost.is_set():
            return self._tenure.token
        backoff = 0.05
        last_try = -math.inf
        while True:
            try:
                # A standby lease, granted and renewed while we wait, so that taking over
                # after a resign costs one transaction, not a grant plus a transaction.
                lease, sent = await self._standby_lease()
                now = anyio.current_time()
                free = self._known and self._holder is None
                if not free and now - last_try < self.ttl:
                    # Wait for the watch to report the key gone; try anyway every ttl, so
                    # a silently stalled watch can delay a takeover but never prevent one.
                    changed = self._changed
                    wait = min(self.keepalive_interval, last_try + self.ttl - now)
                    with anyio.move_on_after(wait if self._known else self.request_timeout):
                        await changed.wait()
                    if not (self._known and self._holder is None) and anyio.current_time() - last_try < self.ttl:
                        continue
                    lease, sent = await self._standby_lease()
                last_try = anyio.current_time()
                self.statistics["campaign_attempts"] += 1
                token = await self._try_acquire(lease, sent)
            except BackendUnavailable as exc:
                log.warning("etcd unreachable while campaigning: %s", exc)
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, self.keepalive_interval)
                continue
            backoff = 0.05
            if token is not None:
                return token

    async def _standby_lease(self) -> tuple[int, float]:
        """``(lease, when its last grant/renewal was sent)``, renewed every ttl/3."""
        now = anyio.current_time()
        if self._standby is not None:
            lease, sent = self._standby
            if now - sent < self.keepalive_interval:
                return lease, sent
            if await self.client.lease_keepalive(lease) > 0:
                self._standby = (lease, now)
                return lease, now
        lease, _granted = await self.client.lease_grant(math.ceil(self.ttl))
        self._standby = (lease, now)
        return lease, now

    async def _try_acquire(self, lease: int, sent: float) -> int | None:
        try:
            result = await self.client.create_if_absent(self.key, self.name.encode(), lease=lease)
        except BaseException:
            # The put may have been applied although we saw no answer: drop the lease
            # (and with it the key) so that nobody waits a TTL for a leader that never was.
            self._standby = None
            self._revoke_later(lease)
            raise
        if not result.succeeded:
            self._set_holder(result.kv, result.revision, "campaign lost to the current holder")
            return None
        self._standby = None
        deadline = sent + self.ttl - self.margin
        if anyio.current_time() >= deadline:
            self._revoke_later(lease)
            late = anyio.current_time() - sent
            log.warning("etcd answered too late to lead safely (%.3fs); retrying", late)
            return None
        tenure = _Tenure(token=result.revision, lease=lease, deadline=deadline, renewed=sent)
        self._tenure = tenure
        kv = KeyValue(self.key, self.name.encode(), result.revision, result.revision, lease)
        self._set_holder(kv, result.revision, "elected")
        assert self._tg is not None
        self._tg.start_soon(self._hold, tenure)
        log.info("%s leads with fencing token %d", self.name, tenure.token)
        return tenure.token

    async def resign(self) -> None:
        tenure = self._tenure
        if tenure is None:
            return
        if not tenure.lost.is_set():
            self._lose(tenure, "resigned")
        # Revoking the lease deletes the key in the same raft write: followers see the
        # delete at once. Best effort: unreachable, the lease expires within ttl.
        try:
            with anyio.move_on_after(self.request_timeout * 2):
                await self.client.lease_revoke(tenure.lease)
        except (BackendUnavailable, CoordinatorError) as exc:
            log.warning("resign: etcd unreachable (%s); the lease will expire within %gs", exc, self.ttl)

    # ------------------------------------------------------------------ tenure
    def _lose(self, tenure: _Tenure, reason: str) -> None:
        if tenure.lost.is_set():
            return
        tenure.reason = reason
        self._last_reason = reason
        tenure.lost.set()  # first: whoever waits must stop acting as leader now
        tenure.scope.cancel()
        log.warning("%s lost leadership: %s", self.name, reason)
        self._publish(self.current_leader(), reason)

    async def _hold(self, tenure: _Tenure) -> None:
        """Renew the lease every ttl/3 and step down when the local deadline passes."""
        with tenure.scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._deadline_watch, tenure)
                tg.start_soon(self._keepalive_loop, tenure)
        if tenure.reason != "resigned":
            self._revoke_later(tenure.lease)

    async def _deadline_watch(self, tenure: _Tenure) -> None:
        while not tenure.lost.is_set():
            await anyio.sleep_until(tenure.deadline)
            if anyio.current_time() >= tenure.deadline:
                self._lose(tenure, f"no lease renewal confirmed in time (deadline, ttl {self.ttl:g}s)")

    async def _keepalive_loop(self, tenure: _Tenure) -> None:
        next_send = tenure.renewed + self.keepalive_interval  # a standby lease may be due now
        while True:
            await anyio.sleep_until(next_send)
            sent = anyio.current_time()
            try:
                ttl = await self.client.lease_keepalive(tenure.lease)
            except (BackendUnavailable, CoordinatorError) as exc:
                self.statistics["keepalive_failures"] += 1
                log.warning("lease renewal failed: %s", exc)
                next_send = anyio.current_time() + min(0.1, self.keepalive_interval / 4)
                continue
            if ttl <= 0:
                self._lose(tenure, "the lease is gone (expired or revoked in etcd)")
                return
            # etcd's expiry is >= sent + ttl: the renewal was processed after we sent it.
            tenure.deadline = max(tenure.deadline, sent + min(self.ttl, ttl) - self.margin)
            tenure.renewed = sent
            next_send = sent + self.keepalive_interval

    def _revoke_later(self, lease: int) -> None:
        async def revoke() -> None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(self.ttl):
                while True:
                    try:
                        await self.client.lease_revoke(lease)
                        return
                    except (BackendUnavailable, CoordinatorError):
                        await anyio.sleep(self.request_timeout)

        if self._tg is not None and self._stack is not None:
            self._tg.start_soon(revoke)

    # ------------------------------------------------------------------ watch
    def _set_holder(self, kv: KeyValue | None, revision: int, reason: str) -> None:
        """Record the key's state as of store ``revision``; older news is ignored (the
        watch may deliver the delete of our previous tenure after we won the next)."""
        if revision < self._seen_revision:
            return
        self._seen_revision = revision
        before = self._holder
        self._holder = kv
        self._known = True
        tenure = self._tenure
        mine = kv is not None and tenure is not None and kv.create_revision == tenure.token
        if tenure is not None and not tenure.lost.is_set() and not mine and revision >= tenure.token:
            self._lose(tenure, "the leader key was deleted or replaced in etcd")
        if (before is None) != (kv is None) or (
            before is not None and kv is not None and before.create_revision != kv.create_revision
        ):
            self._publish(self.current_leader(), reason)
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    def _publish(self, leader: str | None, reason: str) -> None:
        tenure = self._tenure
        is_self = tenure is not None and not tenure.lost.is_set()
        token = self._holder.create_revision if self._holder is not None else 0
        change = LeaderChange(leader, token, is_self, reason, anyio.current_time())
        for send in list(self._subscribers):
            try:
                send.send_nowait(change)
            except anyio.WouldBlock:
                pass  # a slow reader misses intermediate changes, never blocks us
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._subscribers.remove(send)
                send.close()

    async def _watch_loop(self) -> None:
        """Keep ``_holder`` equal to the key in etcd: read it, then follow its events."""
        while True:
            try:
                kv, revision = await self.client.get(self.key)
            except (BackendUnavailable, CoordinatorError) as exc:
                log.warning("cannot read %s: %s", self.key.decode(), exc)
                await anyio.sleep(self.request_timeout)
                continue
            self._set_holder(kv, revision, "observed")
            try:
                async with self.client.watch(self.key, start_revision=revision + 1) as events:
                    async for event in events:
                        kv = None if event.type == "DELETE" else event.kv
                        self._set_holder(kv, event.revision, event.type.lower())
            except WatchCompacted:
                self.statistics["watch_restarts"] += 1  # re-read the key, watch from there


def _secret(section: Section, key: str) -> str | None:
    path = _file(section, key)
    problem = None if path is None else secret_problem(path)
    if problem:
        raise section.error(key, problem)
    return path


def _is_loopback_url(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _file(section: Section, key: str) -> str | None:
    path = section.get_str(key, None)
    if path is not None and not Path(path).is_file():
        raise section.error(key, f"{path}: no such file")
    return path if path is None else str(path)
