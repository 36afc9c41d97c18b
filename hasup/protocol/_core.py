"""Node state, heartbeats and timers: the base of :class:`~hasup.protocol.Node`.

Split from ``_node.py`` for size only: ``_core`` holds what a node knows and how it
talks, ``_decisions`` the rules of ARCHITECTURE §2, ``_node`` the public inputs.
"""

from __future__ import annotations

from collections import Counter, deque

from ._actions import (
    Action,
    Alarm,
    Demote,
    Notify,
    Persist,
    PersistentState,
    Promote,
    RemoveVips,
    StartService,
    StopService,
    SyncRole,
)
from ._config import Address, CoreConfig
from ._enums import ServiceStatus, State
from ._handover import HandoverTracker
from ._peers import PeerView, down_interval
from ._probes import ProbeTracker
from ._states import Event, transition
from ._wire import Drop, Flag, Heartbeat, encode
from ._witness import WitnessVote

INF = float("inf")
_RESIGNING = (State.FAULT, State.STOPPING, State.RELEASING)
# Plain ints for the hot path: IntFlag operators build enum members, ints do not.
_QUERY = int(Flag.QUERY)
_TAKEOVER = int(Flag.TAKEOVER)

#: Bounds on what a peer's heartbeat may ask of us (``hasup check`` enforces the same
#: advert range on our own side): a peer with a broken or hostile configuration cannot
#: make us wait for hours before declaring it down or before retrying a takeover.
MIN_ADVERT_MS = 10
MAX_ADVERT_MS = 60_000
MAX_RELEASE_BUDGET_MS = 3_600_000
#: How long the ``name_clash`` alarm stays after the last datagram that raised it:
#: twice the longest advert interval, so that a clashing node's next heartbeat is due.
NAME_CLASH_CLEAR = 2 * MAX_ADVERT_MS / 1000


class _NodeBase:
    """State and mechanics shared by the decision rules and the public inputs."""

    def __init__(
        self,
        config: CoreConfig,
        *,
        boot_epoch: int,
        now: float,
        persisted: PersistentState | None = None,
    ) -> None:
        self.config = config
        self._config_hash = config.config_hash  # computed once: it is in every heartbeat
        saved = persisted or PersistentState()
        if boot_epoch <= saved.epoch:
            raise ValueError("boot_epoch must be larger than the persisted epoch")
        self._epoch = boot_epoch
        self._seq = 0
        self._term = saved.term
        self._max_term_seen = saved.term
        self._resume_candidate = saved.role == State.MASTER
        self._fault_level = saved.fault_level
        self._state = State.INIT
        self._since = now
        self._started_at = now
        self._service = ServiceStatus.UNKNOWN
        self._service_since = now
        self._pending: StartService | StopService | None = None
        self._stop_unconfirmed = False
        self._peers: dict[Address, PeerView] = {p.address: PeerView(p.address, p.name, p.name) for p in config.peers}
        self._marks = dict(saved.peer_marks)
        for peer in self._peers.values():
            if peer.name and peer.name in self._marks:
                peer.mark = self._marks[peer.name]
        self._probes = ProbeTracker(config.probes)
        self._actions: deque[Action] = deque()
        self._out: list[tuple[bytes, Address]] = []
        self._stats: Counter[str] = Counter()
        self._sent_log: deque[tuple[int, float]] = deque()
        # timers and conditions
        self._next_advert = now
        self._bursts: list[float] = []
        self._vacant_since: float | None = None
        self._preempt_since: float | None = None
        self._takeover_requested_at: float | None = None
        self._takeover_not_before = -INF
        self._takeover_backoff = 0.0
        self._release_target: str | None = None
        self._release_deadline = INF
        self._holddown_until = -INF
        # A restart does not forgive a flapping node: with a persisted fault level the
        # decay window (see _fault) starts at boot, as if it had just recovered.
        self._recovered_at = now if saved.fault_level else -INF
        self._link_up = True
        self._link_down_since: float | None = None
        self._link_bad_at = -INF
        self._no_quorum_since: float | None = None
        self._renotify = False
        self._hold = 0.0
        self._node_maintenance = saved.maintenance
        self._group_maintenance = saved.group_maintenance
        self._maintenance = saved.maintenance or saved.group_maintenance[1]  # what the decisions use
        self._finished = False
        self._marks_dirty = False
        self._marks_saved_at = now
        self._alarms: dict[str, str] = {}
        #: Last datagram carrying our name from another node (``name_clash`` alarm).
        self._name_clash_at: float | None = None
        self._timer: float | None = None
        self._granted = False
        # external leadership: a campaign in flight, and since when nobody leads
        self._campaigning = False
        self._leader_vacant_since: float | None = now
        #: Opaque data-sync generations carried in heartbeats (``Node.sync_generation``).
        self._sync_wire = b""
        self._sync_role = SyncRole("idle")
        #: Whether this node's virtual IPs are in place (``None``: unknown at start-up,
        #: a left-over copy may exist); only with ``config.vips``.
        self._vips_held: bool | None = None
        self._pull_in_flight = False
        self._warned_preempt = False
        self._needs_sync = False
        self._sync_ready_until = -INF
        self._grant_token = 0
        self._released_at = -INF
        self._last_reason = "starting"
        #: The witness's vote (``[group] witness``), asked for every advert.
        self._vote = (
            WitnessVote(
                config.witness_keys, config.group, config.name, config.vote_lease, min_lease=4 * config.advert_interval
            )
            if config.witness is not None and config.witness_keys is not None
            else None
        )
        self._next_vote_request = now
        self._wanted_vote = False
        self._has_quorum = False  # as of the last decision round
        self._claim_seq = 0
        self._next_claim_query = INF
        self._query_all = False  # next heartbeat to all peers asks for an answer at once
        #: Warm standby readiness (``Node.standby_ready``): unknown until first reported.
        self._standby_ready: bool | None = None
        self._standby_detail = ""
        self._handover = HandoverTracker(now)
        self._persist(now)
        self._update(now)

    # ------------------------------------------------------------------ properties
    @property
    def state(self) -> State:
        return self._state

    @property
    def term(self) -> int:
        return self._term

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def since(self) -> float:
        """``now`` of the last state change."""
        return self._since

    @property
    def service(self) -> ServiceStatus:
        return self._service

    @property
    def holder(self) -> bool:
        """True while the service is not confirmed stopped (heartbeat flag ACTIVE)."""
        return self._service is not ServiceStatus.STOPPED or self._pending is not None

    @property
    def finished(self) -> bool:
        """After :meth:`shutdown`: the node has resigned and may exit."""
        return self._finished

    @property
    def maintenance(self) -> bool:
        return self._maintenance

    @property
    def group_maintenance(self) -> bool:
        return self._group_maintenance[1]

    @property
    def effective_priority(self) -> int:
        if self._state in (State.FAULT, State.STOPPING) or self._maintenance:
            return 0
        if self.config.warm and self._standby_ready is not True:
            return 0  # a warm standby that cannot take over is not eligible
        return max(1, min(254, self.config.priority + self._probes.weight_adjustment()))

    @property
    def alarms(self) -> dict[str, str]:
        return dict(self._alarms)

    def peers(self) -> list[PeerView]:
        return list(self._peers.values())

    def statistics(self) -> dict[str, int]:
        """Counters: ``sent``, ``received``, ``dropped_<reason>``, ``transitions`` ..."""
        return dict(self._stats)

    def master_down_interval(self, peer_advert: float | None = None) -> float:
        advert = self.config.advert_interval if peer_advert is None else peer_advert
        return down_interval(self.effective_priority, advert)

    # ------------------------------------------------------------------ outputs
    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must next be called (``None``: no timer)."""
        return self._timer

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        out, self._out = self._out, []
        return out

    def next_action(self) -> Action | None:
        return self._actions.popleft() if self._actions else None

    # ------------------------------------------------------------------ internals
    def _drop(self, reason: Drop) -> None:
        self._stats[f"dropped_{reason.value}"] += 1

    def _accept(self, peer: PeerView, hb: Heartbeat, now: float) -> None:
        self._stats["received"] += 1
        was_live = peer.live(now)
        peer.mark = (hb.epoch, hb.seq)
        peer.last = hb
        peer.last_rx = now
        peer.next_query = None
        self._marks[hb.name] = peer.mark
        self._marks_dirty = True
        if hb.term > self._max_term_seen:
            self._max_term_seen = hb.term
        if hb.group_maintenance > self._group_maintenance:  # a newer generation; at a tie "on" wins
            self._set_group_maintenance(hb.group_maintenance, now)
        down = down_interval(self.effective_priority, hb.advert_ms / 1000)
        peer.down_at = now + down
        if hb.state == State.STOPPING:
            if hb.active and hb.hold_ms:
                peer.down_at = max(peer.down_at, now + hb.hold_ms / 1000)
            elif not hb.active:
                peer.down_at = now  # resigned: gone at once, no need to wait
        mismatch = hb.config_hash != self._config_hash
        if mismatch and not peer.config_mismatch:
            self._alarm("config_mismatch", f"peer {hb.name} has different group settings (advert, quorum, size)")
        peer.config_mismatch = mismatch
        if (
            not mismatch
            and "config_mismatch" in self._alarms
            and not any(p.config_mismatch for p in self._peers.values())
        ):
            self._clear_alarm("config_mismatch")
        if not was_live:
            peer.alive_since = now
            peer.conflict_since = None
        if int(hb.flags) & _QUERY or not was_live:
            self._send_to(peer.address, now)  # answer at once; a returning peer learns us fast

    def _set_service(self, status: ServiceStatus, now: float) -> None:
        was_holder = self.holder
        if status is not self._service:
            self._service = status
            self._service_since = now
        if self.holder != was_holder:
            self._changed(now)

    def _serving(self) -> bool:
        return self._state in (State.MASTER, State.CLAIMING) and self._service is ServiceStatus.RUNNING

    def _service_failed(self, status: ServiceStatus, now: float) -> None:
        """A pushed non-RUNNING status while no action of ours is in flight."""
        if self._state is State.CLAIMING and status is ServiceStatus.FAILED:
            # No start of this claim is in flight (it would be pending): a failed copy
            # from before the claim (waiting for peers to see it) is stopped, not a fault.
            self._stop(now, f"service {status.value} before the claim started it")
        elif self._state in (State.MASTER, State.CLAIMING):
            self._fault(now, f"service {status.value}")
        elif status is ServiceStatus.FAILED and self._state in (State.BACKUP, State.FAULT, State.RELEASING):
            # A holder that is not MASTER (failed, unknown, started behind our back):
            # make sure it is stopped, but it is never a fault.
            self._stop(now, f"service {status.value} while {self._state.name}")

    def _set_state(self, event: Event, now: float, reason: str) -> None:
        previous = self._state
        self._state = transition(previous, event)
        self._since = now
        self._last_reason = reason
        self._stats["transitions"] += 1
        self._actions.append(Notify(self._state, previous, self._term, reason))
        if self._state == State.MASTER or previous == State.MASTER:
            self._persist(now)
        if self._state != State.BACKUP:
            self._clear_takeover()
        self._changed(now)

    def _changed(self, now: float) -> None:
        """Something peers must know: send now and twice more at advert/8."""
        a8 = self.config.advert_interval / 8
        self._bursts = [now, now + a8, now + 2 * a8]

    def _set_group_maintenance(self, value: tuple[int, bool], now: float) -> None:
        self._group_maintenance = value
        self._maintenance = self._node_maintenance or value[1]
        self._persist(now)
        self._changed(now)

    def _persist(self, now: float, role: State | None = None) -> None:
        if role is None:
            role = State.MASTER if self._state == State.MASTER else State.BACKUP
            if self._state in (State.INIT,) and self._resume_candidate:
                role = State.MASTER
        self._actions.append(
            Persist(
                PersistentState(
                    epoch=self._epoch,
                    term=self._term,
                    role=role,
                    peer_marks=dict(self._marks),
                    fault_level=self._fault_level,
                    maintenance=self._node_maintenance,
                    group_maintenance=self._group_maintenance,
                )
            )
        )
        self._marks_dirty = False
        self._marks_saved_at = now

    def _alarm(self, kind: str, detail: str) -> None:
        if self._alarms.get(kind) != detail:
            self._alarms[kind] = detail
            self._stats[f"alarm_{kind}"] += 1
            self._actions.append(Alarm(kind, detail, True))

    def _clear_alarm(self, kind: str) -> None:
        if self._alarms.pop(kind, None) is not None:
            self._actions.append(Alarm(kind, "", False))

    def _start(self, now: float, reason: str) -> None:
        if self._sync_role.role == "follow":
            # the follower must have stopped writing before the service starts
            self._sync_role = SyncRole("idle")
            self._actions.append(self._sync_role)
        action = Promote(self._term, reason) if self.config.warm else StartService(self._term, reason)
        self._pending = action
        self._actions.append(action)
        self._changed(now)  # we are a holder from now on

    def _stop(self, now: float, reason: str) -> None:
        if isinstance(self._pending, StopService):
            return
        self._remove_vips(reason)  # clients must not reach a service that is stopping
        action = Demote(reason) if self.config.warm else StopService(reason)
        self._pending = action
        self._actions.append(action)

    def _remove_vips(self, reason: str) -> None:
        if self.config.vips and self._vips_held is not False:
            self._vips_held = False
            self._actions.append(RemoveVips(reason))

    def _fault(self, now: float, reason: str) -> None:
        if self._state in (State.FAULT, State.STOPPING):
            if self.holder and self._pending is None and not self._stop_unconfirmed:
                self._stop(now, reason)
            return
        if now - self._recovered_at > max(60.0, 10 * self.config.fault_holddown):
            self._fault_level = 0
        self._fault_level += 1
        hold = min(self.config.fault_holddown * 2 ** (self._fault_level - 1), self.config.fault_backoff_max)
        self._holddown_until = now + hold
        self._set_state(Event.FAULT, now, reason)
        self._persist(now)
        self._remove_vips(reason)
        if self.holder and not self._stop_unconfirmed:
            self._stop(now, reason)

    def _release(self, now: float, target: str | None, reason: str) -> None:
        self._release_target = target
        self._release_deadline = INF
        self._set_state(Event.RELEASE, now, reason)
        self._stop(now, reason)

    def _claim(self, now: float, reason: str) -> None:
        if self.config.external_leader:
            self._term = self._grant_token  # the coordinator's fencing token, as it is
        else:
            self._term = max(self._term, self._max_term_seen) + 1
        self._max_term_seen = self._term
        self._set_state(Event.CLAIM, now, reason)
        self._persist(now)
        self._claim_seq = self._seq + 1  # with a witness, a peer's ack of it confirms the claim
        self._next_claim_query = now

    def _clear_takeover(self) -> None:
        self._takeover_requested_at = None
        self._preempt_since = None

    def _release_budget(self) -> float:
        return self.config.stop_timeout + 2 * self.config.advert_interval

    # ---------------------------------------------------------------- heartbeats
    def _flags(self) -> Flag:
        flags = 0
        if self.holder:
            flags |= Flag.ACTIVE.value
        if self._takeover_requested_at is not None:
            flags |= Flag.TAKEOVER.value
        if self._maintenance:
            flags |= Flag.MAINTENANCE.value
        return Flag(flags)

    def _heartbeat(self, now: float, extra: Flag = Flag.NONE) -> Heartbeat:
        self._seq += 1
        self._sent_log.append((self._seq, now))
        horizon = now - 2 * max([self.config.advert_interval * 4, *(p.advert * 4 + 1 for p in self._peers.values())])
        while self._sent_log and self._sent_log[0][1] < horizon:
            self._sent_log.popleft()
        return Heartbeat(
            group=self.config.group,
            name=self.config.name,
            epoch=self._epoch,
            seq=self._seq,
            term=self._term,
            state=self._state,
            base_priority=self.config.priority,
            effective_priority=self.effective_priority,
            flags=self._flags() | extra if extra else self._flags(),
            advert_ms=self.config.advert_ms,
            config_hash=self._config_hash,
            acks={p.name: p.mark for p in self._peers.values() if p.name and p.last is not None},
            release_target=self._release_target if self._state == State.RELEASING else None,
            release_budget_ms=round(self._release_budget() * 1000),
            hold_ms=round(self._hold * 1000) if self._state == State.STOPPING and self.holder else 0,
            sync_generation=self._sync_wire,
            group_maintenance=self._group_maintenance,
        )

    def _send_to(self, address: Address, now: float, extra: Flag = Flag.NONE) -> None:
        self._out.append((encode(self._heartbeat(now, extra), self.config.keys), address))
        self._stats["sent"] += 1

    def _send_all(self, now: float, extra: Flag = Flag.NONE) -> None:
        data = encode(self._heartbeat(now, extra), self.config.keys)
        for address in self._peers:
            self._out.append((data, address))
            self._stats["sent"] += 1

    def _acked_recently(self, peer: PeerView, now: float) -> bool:
        """Whether ``peer`` has heard us within its down interval (one-way loss check)."""
        hb = peer.last
        if hb is None:
            return False
        ack = hb.acks.get(self.config.name)
        if ack is None or ack[0] != self._epoch:
            return False
        limit = down_interval(peer.effective_priority or 1, self.config.advert_interval)
        for seq, sent_at in self._sent_log:
            if seq == ack[1]:
                return now - sent_at <= limit
        return ack[1] >= (self._sent_log[0][0] if self._sent_log else 0)

    # ---------------------------------------------------------------- sending and timers
    def _emit(self, now: float) -> None:
        if self._marks_dirty and now - self._marks_saved_at >= 10.0:
            self._persist(now)
        if self._finished and self._state == State.STOPPING and not self._bursts:
            return
        due = False
        if now >= self._next_advert:
            due = True
        while self._bursts and self._bursts[0] <= now:
            self._bursts.pop(0)
            due = True
        if due or self._query_all:
            self._send_all(now, Flag.QUERY if self._query_all else Flag.NONE)
            self._query_all = False
        if due:
            self._next_advert = now + self.config.advert_interval
        # Loss before death: query a silent holder every advert/4 after 2 adverts. A
        # holder that needs a majority queries its silent peers after 1 advert.
        quorum_holder = self.config.quorum_required and self.holder
        for peer in self._peers.values():
            if not (peer.live(now) and (peer.active or quorum_holder) and peer.last_rx is not None):
                peer.next_query = None
                continue
            silence = 2 * peer.advert if peer.active else peer.advert
            if now - peer.last_rx >= silence and (peer.next_query is None or now >= peer.next_query):
                self._send_to(peer.address, now, Flag.QUERY)
                self._stats["queries"] += 1
                peer.next_query = now + peer.advert / 4

    def _compute_timer(self, now: float) -> float | None:
        cfg = self.config
        candidates: list[float] = [self._next_advert, *self._bursts]
        for peer in self._peers.values():
            if peer.live(now):
                candidates.append(peer.down_at)
                if peer.last_rx is not None and (peer.active or (cfg.quorum_required and self.holder)):
                    silence = 2 * peer.advert if peer.active else peer.advert
                    candidates.append(peer.next_query or peer.last_rx + silence)
                if peer.conflict_since is not None:
                    candidates.append(peer.conflict_since + 2 * max(cfg.advert_interval, peer.advert))
        if self._state == State.INIT:
            candidates.append(max(self._started_at, self._link_bad_at) + self.master_down_interval())
            candidates.append(self._started_at + 1.5 * cfg.advert_interval)
        if self._state == State.CLAIMING:
            candidates.append(self._next_claim_query)  # re-ask peers that have not seen the claim
        if self._state == State.BACKUP and self._vacant_since is not None:
            mdi = self.master_down_interval()
            candidates.extend(self._vacant_since + k * mdi for k in range(len(self._peers) + 1))
        if self._link_bad_at > -INF:
            candidates.append(self._link_bad_at + self.master_down_interval())
        if self._preempt_since is not None:
            candidates.append(self._preempt_since + cfg.preempt_delay)
        if self._takeover_requested_at is not None:
            candidates.append(
                self._takeover_requested_at
                + self._release_budget()
                + 4 * max([cfg.advert_interval, *(p.advert for p in self._peers.values())])
            )
        candidates.append(self._takeover_not_before)
        candidates.append(self._holddown_until)
        candidates.append(self._release_deadline)
        if self._no_quorum_since is not None:
            candidates.append(self._no_quorum_since + cfg.advert_interval / 2)
        if cfg.quorum_required and self.holder:
            candidates.extend(p.last_rx + 2 * p.advert for p in self._peers.values() if p.last_rx is not None)
        if self._marks_dirty:
            candidates.append(self._marks_saved_at + 10.0)
        if cfg.external_leader:
            candidates.extend(self._leadership_timers(now))
        future = [t for t in candidates if now < t < INF]
        if self._state == State.STOPPING and self._finished and not self._bursts:
            return None
        return min(future) if future else None

    # ---------------------------------------------------------------- introspection
    def snapshot(self, now: float) -> dict[str, object]:
        """A JSON-ready view for ``/status``."""
        return {
            "node": self.config.name,
            "group": self.config.group,
            "state": self._state.name,
            "since": self._since,
            "reason": self._last_reason,
            "term": self._term,
            "epoch": self._epoch,
            "priority": self.config.priority,
            "effective_priority": self.effective_priority,
            "service": self._service.value,
            "holder": self.holder,
            "maintenance": self._maintenance,
            "node_maintenance": self._node_maintenance,
            "group_maintenance": self._group_maintenance[1],
            "alarms": dict(self._alarms),
            "probes": self._probes.snapshot(),
            "peers": [
                {
                    "name": p.name,
                    "address": f"{p.address[0]}:{p.address[1]}",
                    "live": p.live(now),
                    "state": p.state.name if p.state is not None else None,
                    "active": p.active,
                    "term": p.last.term if p.last else None,
                    "priority": p.last.base_priority if p.last else None,
                    "effective_priority": p.effective_priority if p.last else None,
                    "last_seen_ago": None if p.last_rx is None else round(now - p.last_rx, 3),
                    "config_mismatch": p.config_mismatch,
                    "maintenance": bool(p.last is not None and int(p.last.flags) & Flag.MAINTENANCE.value),
                    "rejected_as_stale": p.replays,
                }
                for p in self._peers.values()
            ],
            "counters": self.statistics(),
            "witness": self.witness_snapshot(now),
        }

    def _update(self, now: float) -> None:  # implemented by _Decisions
        raise NotImplementedError

    def _leadership_timers(self, now: float) -> list[float]:  # implemented by _Assignments
        raise NotImplementedError

    def witness_snapshot(self, now: float) -> dict[str, object] | None:  # implemented by _Voting
        raise NotImplementedError
