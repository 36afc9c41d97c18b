"""The sans-I/O election core: one node's view of the group, driven by inputs with ``now``.

Shaped like aioquic's ``QuicConnection``: every input carries ``now`` (monotonic
seconds), the node never reads a clock, opens a socket or logs; it says when it next
needs attention (:meth:`Node.get_timer`), what to send (:meth:`Node.datagrams_to_send`)
and what to do (:meth:`Node.next_action`). The semantics are ARCHITECTURE §2; the
formulas and rules are explained in ``docs/protocol.md``.
"""

from __future__ import annotations

import attrs

from ._actions import (
    Action,
    AddVips,
    Resign,
    StartService,
    StopService,
)
from ._assign import _Assignments
from ._config import Address
from ._core import _QUERY, _TAKEOVER, MAX_ADVERT_MS, MAX_RELEASE_BUDGET_MS, MIN_ADVERT_MS
from ._enums import ServiceStatus, State
from ._peers import PeerView
from ._states import Event
from ._wire import Drop, Heartbeat, decode

__all__ = ["Node"]


class Node(_Assignments):
    """One member of a hasup group (see the module docstring for the I/O contract)."""

    # ------------------------------------------------------------------ inputs
    def handle_timer(self, now: float) -> None:
        self._update(now)

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """A datagram from the network. Bad ones are dropped and counted, never raised."""
        if self._is_vote_reply(data):
            self._vote_reply(data, now)
            return
        peer = self._peers.get((addr[0], addr[1]))
        result = decode(data, self.config.keys, self.config.group)
        if isinstance(result, Drop):
            self._drop(result)
            return
        hb = result
        if hb.name == self.config.name:
            if hb.epoch == self._epoch and hb.seq <= self._seq:
                # One of our own heartbeats came back (a switch loop, a mirror port, a
                # replay): it cannot come from another node with our name.
                self._drop(Drop.REFLECTED)
                return
            self._drop(Drop.NAME_CLASH)
            self._name_clash_at = now
            self._alarm("name_clash", f"a datagram from {addr[0]}:{addr[1]} uses our own name")
            return
        if peer is None or (peer.name is not None and hb.name != peer.name):
            self._drop(Drop.UNKNOWN_PEER)
            return
        if peer.name is None:
            if any(p.name == hb.name for p in self._peers.values()):
                self._drop(Drop.UNKNOWN_PEER)
                return
            # Check the persisted mark before binding the name: a replay must not
            # teach us which name lives at this address.
            if (hb.epoch, hb.seq) <= self._marks.get(hb.name, (0, 0)):
                self._drop(Drop.REPLAY)
                peer.replays += 1
                return
            peer.name = hb.name
            peer.mark = max(peer.mark, self._marks.get(hb.name, (0, 0)))
        if (hb.epoch, hb.seq) <= peer.mark:
            self._drop(Drop.REPLAY)
            peer.replays += 1
            return
        if (
            not MIN_ADVERT_MS <= hb.advert_ms <= MAX_ADVERT_MS
            or hb.hold_ms > self.config.max_hold * 1000
            or hb.release_budget_ms > MAX_RELEASE_BUDGET_MS
        ):
            hb = self._clamped(hb)
        if self._steady(peer, hb, now):
            # Nothing a decision depends on changed: refresh the peer, keep the timer
            # (down timers only move later, so the current timer is at worst early).
            self._accept(peer, hb, now)
            return
        self._accept(peer, hb, now)
        self._update(now)

    def _clamped(self, hb: Heartbeat) -> Heartbeat:
        """``hb`` with its timing fields brought into range (counted as ``clamped``)."""
        self._stats["clamped"] += 1
        return attrs.evolve(
            hb,
            advert_ms=min(max(hb.advert_ms, MIN_ADVERT_MS), MAX_ADVERT_MS),
            hold_ms=min(hb.hold_ms, round(self.config.max_hold * 1000)),
            release_budget_ms=min(hb.release_budget_ms, MAX_RELEASE_BUDGET_MS),
        )

    def _steady(self, peer: PeerView, hb: Heartbeat, now: float) -> bool:
        """The hot path: a live peer repeating itself while we are BACKUP or MASTER."""
        prev = peer.last
        return (
            prev is not None
            and self._state in (State.BACKUP, State.MASTER)
            and self._pending is None
            and not self._actions
            and peer.conflict_since is None
            and int(hb.flags) & (_QUERY | _TAKEOVER) == 0
            and hb.flags == prev.flags
            and hb.state == prev.state
            and hb.state != State.STOPPING
            and hb.term == prev.term
            and hb.effective_priority == prev.effective_priority
            and hb.release_target == prev.release_target
            and hb.config_hash == prev.config_hash
            and peer.live(now)
        )

    def probe_result(self, name: str, ok: bool, now: float) -> None:
        """The outcome of one run of the probe ``name``."""
        self._probes.record(name, ok)
        self._update(now)

    def wants_probe(self, name: str, now: float) -> bool:
        """Whether the supervisor should run ``name`` now (``when="active"`` probes run
        only while this node holds the service and after ``start_period``)."""
        spec = self._probes.spec(name)
        if spec.when == "always":
            return True
        return self._serving() and now >= self._service_since + spec.start_period

    def standby_ready(self, ready: bool, now: float, detail: str = "") -> None:
        """Warm standby (``CoreConfig.warm``): whether this node's service process is up
        and able to take over (its readiness check passes). A node is eligible only
        while ready (effective priority 0 and the ``standby_not_ready`` alarm
        otherwise); a MASTER that stops being ready faults and is demoted, so the best
        ready standby is promoted."""
        if ready == self._standby_ready and (ready or detail == self._standby_detail):
            return
        self._standby_ready = ready
        self._standby_detail = "" if ready else detail
        if ready:
            self._clear_alarm("standby_not_ready")
        else:
            self._alarm("standby_not_ready", detail or "the standby cannot take over")
        self._changed(now)  # the effective priority changed
        self._update(now)

    def service_status(self, status: ServiceStatus, now: float) -> None:
        """What the backend observed (initial status, or a pushed change)."""
        if status is self._service:
            return
        if self._pending is not None and status in (ServiceStatus.STARTING, ServiceStatus.STOPPING):
            return  # expected while our own action runs
        self._set_service(status, now)
        if status is ServiceStatus.STOPPED and self._stop_unconfirmed:
            self._stop_unconfirmed = False
            self._clear_alarm("stop_unconfirmed")
        if self._pending is None and status is not ServiceStatus.RUNNING:
            self._service_failed(status, now)
        self._update(now)

    def action_result(self, action: Action, ok: bool, now: float, detail: str = "") -> None:
        """The outcome of a :class:`StartService`, :class:`StopService` or
        :class:`AddVips` action (a virtual IP that cannot be added faults the node)."""
        if isinstance(action, AddVips):
            if not ok and self._vips_held:
                self._fault(now, f"virtual IP not added: {detail}" if detail else "virtual IP not added")
                self._update(now)
            return
        if action is not self._pending:
            return
        self._pending = None
        if isinstance(action, StartService):
            if ok:
                self._set_service(ServiceStatus.RUNNING, now)
                self._probes.reset_active()
            else:
                self._set_service(ServiceStatus.FAILED, now)
                self._fault(now, f"start failed: {detail}" if detail else "start failed")
        elif isinstance(action, StopService):
            if ok:
                self._set_service(ServiceStatus.STOPPED, now)
            else:
                self._set_service(ServiceStatus.UNKNOWN, now)
                self._stop_unconfirmed = True
                self._alarm("stop_unconfirmed", f"could not confirm the service stopped: {detail}")
                if self._state not in (State.FAULT, State.STOPPING):
                    self._fault(now, "stop not confirmed")
        self._update(now)

    def link_status(self, up: bool, now: float) -> None:
        """Carrier of a tracked interface, or local network errors on send."""
        if up == self._link_up:
            return
        self._link_up = up
        if not up:
            self._link_down_since = now
            self._link_bad_at = now
        else:
            self._link_down_since = None
            self._link_bad_at = now
        self._update(now)

    def confirm_stopped(self, now: float) -> None:
        """The operator vouches that the service is stopped (``hasup confirm-stopped``)."""
        self._pending = None
        self._stop_unconfirmed = False
        self._clear_alarm("stop_unconfirmed")
        self._set_service(ServiceStatus.STOPPED, now)
        self._update(now)

    def set_group_maintenance(self, on: bool, now: float) -> None:
        """Group-wide maintenance (``hasup maintenance on --group``): every node acts as in
        maintenance (no claims, no preemption, what is held is kept). A new generation
        travels in every heartbeat; the newest wins (at a tie, "on"), so it reaches nodes
        that were down, and it is persisted on each node."""
        self._set_group_maintenance((self._group_maintenance[0] + 1, on), now)
        self._update(now)

    def set_maintenance(self, on: bool, now: float) -> None:
        """In maintenance a node never claims or preempts (it keeps what it holds).
        Persisted: it lasts across restarts of hasup until turned off."""
        if on != self._node_maintenance:
            self._node_maintenance = on
            self._maintenance = on or self._group_maintenance[1]
            self._persist(now)
        self._changed(now)
        self._update(now)

    def request_switchover(self, now: float, target: str | None = None) -> str:
        """Hand the service to ``target`` (or the best BACKUP) through the release handshake.

        Returns the target's name; raises ``ValueError`` when it cannot be done.
        """
        if self._state != State.MASTER:
            raise ValueError(f"only the MASTER can switch over (this node is {self._state.name})")
        candidates = [p for p in self._peers.values() if p.live(now) and p.eligible()]
        if target is not None:
            candidates = [p for p in candidates if p.name == target]
            if not candidates:
                raise ValueError(f"{target!r} is not a live, eligible BACKUP")
        if not candidates:
            raise ValueError("no live, eligible BACKUP to switch over to")
        best = max(candidates, key=lambda p: p.rank)
        assert best.name is not None
        if self.config.preempt and best.effective_priority < self.effective_priority and not self._maintenance:
            # Otherwise preemption would take the service straight back (persisted).
            self._node_maintenance = self._maintenance = True
            self._persist(now)
        self._release(now, best.name, "switchover requested")
        self._update(now)
        return best.name

    def leadership(self, granted: bool, token: int, now: float) -> None:
        """External coordinator input: leadership granted (with its fencing token), or
        lost / the campaign ended without it (``granted`` false)."""
        if granted and not self._campaigning:
            # The campaign was withdrawn (Resign) but won meanwhile: give it back.
            self._actions.append(Resign(True, "granted after the campaign was withdrawn"))
            self._update(now)
            return
        self._campaigning = False
        self._granted = granted
        if granted:
            self._grant_token = token
            self._leader_vacant_since = None  # the vacancy ended with this node's own win
        self._update(now)

    def leader_change(self, leader: str | None, now: float) -> None:
        """External coordinator input: who leads now (``None``: nobody), as last seen.

        The key naming this node itself (the watch can report a node's own new key
        before the answer to its request) does not end the vacancy: the campaign that
        won it must not be withdrawn before its grant arrives."""
        if leader is None:
            if self._leader_vacant_since is None:
                self._leader_vacant_since = now
        elif leader != self.config.name:
            self._leader_vacant_since = None
        self._update(now)

    @property
    def needs_sync(self) -> bool:
        """A preemption waits for the holder's data (a :class:`PullData` is in flight)."""
        return self._needs_sync

    def sync_result(self, ok: bool, now: float) -> None:
        """Outcome of a :class:`~hasup.protocol.PullData`: go ahead, or back off and retry."""
        self._sync_done(ok, now)
        self._update(now)

    def sync_generation(self, wire: bytes, now: float) -> None:
        """The data-sync generations this node holds (opaque, carried in heartbeats).

        Nothing is decided on them, so no decision round runs; the next heartbeat
        carries them."""
        self._sync_wire = bytes(wire)

    def peer_sync_generations(self, now: float) -> list[bytes]:
        """The generations to compare ours with: a standby's holder, or (on the holder)
        every live peer."""
        peers = [p for p in self._peers.values() if p.live(now) and p.last is not None and p.last.sync_generation]
        if not self.holder:
            peers = [p for p in peers if p.active]
        return [p.last.sync_generation for p in peers if p.last is not None]

    def forget_peer(self, name: str, now: float) -> None:
        """Clear a peer's replay high-water mark (``hasup forget-peer``), e.g. after its
        state directory was wiped and it restarted with a lower epoch."""
        for peer in self._peers.values():
            if peer.name == name:
                peer.mark = (0, 0)
                peer.replays = 0
                if peer.configured_name is None:
                    peer.name = None
        self._marks.pop(name, None)
        self._persist(now)
        self._update(now)

    def shutdown(self, now: float, *, leave_running: bool = False, hold: float = 0.0) -> None:
        """Resign: stop the service (or leave it running for ``hold`` seconds of grace)."""
        if self._state == State.STOPPING:
            return
        if leave_running:
            self._hold = min(max(hold, self.config.advert_interval), self.config.max_hold)
            self._persist(now, role=State.MASTER if self._state == State.MASTER else State.BACKUP)
        else:
            self._hold = 0.0
            self._persist(now, role=State.BACKUP)
        self._set_state(Event.SHUTDOWN, now, "shutdown" + (" (leaving the service running)" if leave_running else ""))
        if not leave_running and self.holder and not isinstance(self._pending, StopService):
            self._stop(now, "shutdown")
        self._update(now)
