"""The sans-I/O election core: one node's view of the group, driven by inputs with ``now``.

Shaped like aioquic's ``QuicConnection``: every input carries ``now`` (monotonic
seconds), the node never reads a clock, opens a socket or logs; it says when it next
needs attention (:meth:`Node.get_timer`), what to send (:meth:`Node.datagrams_to_send`)
and what to do (:meth:`Node.next_action`). The semantics are ARCHITECTURE §2; the
formulas and rules are explained in ``docs/protocol.md``.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable

from ._actions import (
    Action,
    Alarm,
    Notify,
    Persist,
    PersistentState,
    StartService,
    StopService,
)
from ._config import Address, CoreConfig
from ._enums import ServiceStatus, State
from ._peers import PeerView, down_interval
from ._probes import ProbeTracker
from ._states import Event, transition
from ._wire import Drop, Flag, Heartbeat, decode, encode

__all__ = ["Node"]

INF = float("inf")
_RESIGNING = (State.FAULT, State.STOPPING, State.RELEASING)
# Plain ints for the hot path: IntFlag operators build enum members, ints do not.
_QUERY = int(Flag.QUERY)
_TAKEOVER = int(Flag.TAKEOVER)


class Node:
    """One member of a hasup group (see the module docstring for the I/O contract)."""

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
        self._maintenance = False
        self._finished = False
        self._marks_dirty = False
        self._marks_saved_at = now
        self._alarms: dict[str, str] = {}
        self._timer: float | None = None
        self._granted = False
        self._grant_token = 0
        self._released_at = -INF
        self._last_reason = "starting"
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
    def effective_priority(self) -> int:
        if self._state in (State.FAULT, State.STOPPING) or self._maintenance:
            return 0
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

    # ------------------------------------------------------------------ inputs
    def handle_timer(self, now: float) -> None:
        self._update(now)

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """A datagram from the network. Bad ones are dropped and counted, never raised."""
        peer = self._peers.get((addr[0], addr[1]))
        result = decode(data, self.config.keys, self.config.group)
        if isinstance(result, Drop):
            self._drop(result)
            return
        hb = result
        if hb.name == self.config.name:
            self._drop(Drop.NAME_CLASH)
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
        if self._steady(peer, hb, now):
            # Nothing a decision depends on changed: refresh the peer, keep the timer
            # (down timers only move later, so the current timer is at worst early).
            self._accept(peer, hb, now)
            return
        self._accept(peer, hb, now)
        self._update(now)

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
        """The outcome of a :class:`StartService` or :class:`StopService` action."""
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

    def set_maintenance(self, on: bool, now: float) -> None:
        """In maintenance a node never claims or preempts (it keeps what it holds)."""
        self._maintenance = on
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
        if self.config.preempt and best.effective_priority < self.effective_priority:
            # Otherwise preemption would take the service straight back.
            self._maintenance = True
        self._release(now, best.name, "switchover requested")
        self._update(now)
        return best.name

    def leadership(self, granted: bool, token: int, now: float) -> None:
        """External coordinator input: leadership granted (with its fencing token) or lost."""
        self._granted = granted
        if granted:
            self._grant_token = token
        self._update(now)

    def wants_leadership(self, now: float) -> bool:
        """With an external coordinator: whether to campaign now (or keep leadership).

        Only the best-ranked eligible node campaigns, so failback and preference work
        as with heartbeats; the named target of a release campaigns regardless.
        """
        if not self.config.external_leader:
            return False
        if self._state in (State.CLAIMING, State.MASTER):
            return True
        if (
            self._state != State.BACKUP
            or self._maintenance
            or self.effective_priority == 0
            or not self._link_up
            or not self._probes.always_ok()
        ):
            return False
        live = [p for p in self._peers.values() if p.live(now)]
        if any(
            p.state == State.RELEASING and p.last is not None and p.last.release_target == self.config.name
            for p in live
        ):
            return True
        if now - self._released_at < self.master_down_interval():
            return False  # we just handed over: let the target take it
        me = (self.effective_priority, self.config.name)
        return not any(p.candidate() and p.rank > me for p in live)

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
        if self._state in (State.MASTER, State.CLAIMING):
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
        action = StartService(self._term, reason)
        self._pending = action
        self._actions.append(action)
        self._changed(now)  # we are a holder from now on

    def _stop(self, now: float, reason: str) -> None:
        if isinstance(self._pending, StopService):
            return
        action = StopService(reason)
        self._pending = action
        self._actions.append(action)

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
        if self.holder and not self._stop_unconfirmed:
            self._stop(now, reason)

    def _release(self, now: float, target: str | None, reason: str) -> None:
        self._release_target = target
        self._release_deadline = INF
        self._set_state(Event.RELEASE, now, reason)
        self._stop(now, reason)

    def _claim(self, now: float, reason: str) -> None:
        if self.config.external_leader:
            self._term = max(self._term, self._grant_token)  # the coordinator's fencing token
        else:
            self._term = max(self._term, self._max_term_seen) + 1
        self._max_term_seen = self._term
        self._set_state(Event.CLAIM, now, reason)
        self._persist(now)

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
        )

    def _send_to(self, address: Address, now: float, extra: Flag = Flag.NONE) -> None:
        self._out.append((encode(self._heartbeat(now, extra), self.config.keys), address))
        self._stats["sent"] += 1

    def _send_all(self, now: float) -> None:
        data = encode(self._heartbeat(now), self.config.keys)
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

    # ---------------------------------------------------------------- the decision loop
    def _update(self, now: float) -> None:
        # Repeat until stable: a transition can enable another at the same instant.
        for _ in range(8):
            before = (self._state, self._pending, self.holder)
            self._decide(now)
            if (self._state, self._pending, self.holder) == before:
                break
        self._emit(now)
        self._timer = self._compute_timer(now)

    def _decide(self, now: float) -> None:
        cfg = self.config
        live = [p for p in self._peers.values() if p.live(now)]
        if self._link_up and self._link_bad_at > -INF and now - self._link_bad_at > self.master_down_interval():
            self._link_bad_at = -INF
        quorum = not cfg.quorum_required or (1 + len(live)) * 2 > cfg.group_size
        held = quorum
        if cfg.quorum_required and self.holder:
            # A holder counts only peers heard within 2 adverts, and stops half an advert
            # after losing its majority: at ~2.5 adverts, before the majority side can
            # declare it down (3 adverts + skew) and claim.
            heard = sum(1 for p in live if p.last_rx is not None and now - p.last_rx < 2 * p.advert)
            held = (1 + heard) * 2 > cfg.group_size
        if held:
            self._no_quorum_since = None
        elif self._no_quorum_since is None:
            self._no_quorum_since = now
        healthy = self._probes.always_ok() and self._link_up
        state = self._state

        if state == State.STOPPING:
            if not self.holder or self._hold:
                self._finished = True
            return

        # --- faults (rules 8 and 9) ------------------------------------------------
        if state in (State.MASTER, State.CLAIMING) and self.holder and self._pending is None:
            failing = self._probes.active_failing()
            if failing:
                self._fault(now, f"probe {failing} failed")
                return
        if state not in (State.FAULT,):
            if not self._link_up:
                self._fault(now, "tracked link down")
                return
            failing_always = self._probes.always_failing()
            if failing_always:
                self._fault(now, f"probe {failing_always} failed")
                return
            if (
                self.holder
                and state != State.INIT
                and self._no_quorum_since is not None
                and now - self._no_quorum_since >= cfg.advert_interval / 2
            ):
                self._fault(now, f"no majority: hear {1 + len(live)} of {cfg.group_size}")
                return
            if self.holder and state == State.MASTER and self._probes.witness_failing():
                silent = all(p.last_rx is None or now - p.last_rx >= 2 * p.advert for p in self._peers.values())
                if silent:
                    self._fault(now, "isolated: no peer heard and the witness fails")
                    return

        if state == State.FAULT:
            if self.holder and self._pending is None and not self._stop_unconfirmed:
                self._stop(now, "fault")
            if not self.holder and healthy and now >= self._holddown_until:
                self._recovered_at = now
                self._set_state(Event.RECOVER, now, "fault cleared")
            return

        # --- conflicts (rule 5) ------------------------------------------------------
        if (
            self.holder
            and state in (State.INIT, State.BACKUP, State.CLAIMING, State.MASTER)
            and self._resolve_conflicts(live, now)
        ):
            return

        if state == State.INIT:
            self._decide_init(live, now)
        elif state == State.BACKUP:
            self._decide_backup(live, quorum, healthy, now)
        elif state == State.CLAIMING:
            self._decide_claiming(live, now)
        elif state == State.MASTER:
            self._decide_master(live, now)
        elif state == State.RELEASING:
            self._decide_releasing(live, now)

    def _resolve_conflicts(self, live: list[PeerView], now: float) -> bool:
        me = (self.effective_priority, self.config.name)
        for peer in live:
            if not peer.active or peer.state in _RESIGNING:
                peer.conflict_since = None
                continue
            if self._state != State.MASTER:
                if peer.state == State.MASTER or peer.rank > me:
                    if self._state == State.CLAIMING:
                        self._set_state(Event.ABORT_CLAIM, now, f"{peer.name} holds the service")
                    self._stop(now, f"{peer.name} ({peer.state.name if peer.state else '?'}) holds the service")
                    return True
                continue
            if peer.state != State.MASTER:
                continue
            # Two MASTER holders.
            if peer.conflict_since is None:
                peer.conflict_since = now
                self._send_to(peer.address, now, Flag.QUERY)  # fresh acks within one round trip
                self._renotify = True
            settle = 2 * max(self.config.advert_interval, peer.advert)
            if now - peer.conflict_since >= settle and not self._acked_recently(peer, now):
                self._alarm("one_way_loss", f"{peer.name} is MASTER but does not hear us")
                self._release(now, peer.name, f"one-way loss: {peer.name} does not hear us")
                return True
            assert peer.last is not None
            theirs = (peer.last.term, -peer.effective_priority, peer.name or "")
            ours = (self._term, -self.effective_priority, self.config.name)
            # newer term yields; tie: lower effective priority, then lower name yields
            if (self._term, -self.effective_priority) != (peer.last.term, -peer.effective_priority):
                we_yield = (self._term, -self.effective_priority) > (peer.last.term, -peer.effective_priority)
            else:
                we_yield = ours[2] < theirs[2]
            if we_yield:
                self._release(now, peer.name, f"split brain: {peer.name} (term {peer.last.term}) keeps the service")
                return True
        if (
            self._state == State.MASTER
            and self._renotify
            and not any(p.active and p.state == State.MASTER for p in live)
        ):
            self._renotify = False
            self._clear_alarm("one_way_loss")
            self._actions.append(Notify(State.MASTER, State.MASTER, self._term, "split brain resolved"))
        return False

    def _decide_init(self, live: list[PeerView], now: float) -> None:
        cfg = self.config
        if self._service is ServiceStatus.UNKNOWN and self._pending is None:
            return  # wait for the backend's first answer
        if (
            self._resume_candidate
            and not cfg.external_leader  # there, leadership must come from the coordinator
            and self._service is ServiceStatus.RUNNING
            and now >= self._started_at + 1.5 * cfg.advert_interval
            and not any(p.active and p.state == State.MASTER for p in live)
        ):
            self._set_state(Event.RESUME, now, f"resumed MASTER (term {self._term}) without restarting the service")
            return
        if not self.holder and any(p.active and p.state == State.MASTER for p in live):
            # A serving MASTER answers the question the listen period asks.
            self._set_state(Event.LISTEN_DONE, now, "found a MASTER")
            return
        listen_from = max(self._started_at, self._link_bad_at)
        if now >= listen_from + self.master_down_interval():
            self._set_state(Event.LISTEN_DONE, now, "start-up listen done")
            self._vacant_since = now

    def _decide_backup(self, live: list[PeerView], quorum: bool, healthy: bool, now: float) -> None:
        cfg = self.config
        # A holder that is BACKUP (service found running) and no MASTER: claim it at once.
        if self.holder and self._pending is None and self._service is ServiceStatus.FAILED:
            self._stop(now, "service failed while BACKUP")
            return
        blocking = [p for p in live if p.blocks_claim()]
        if cfg.external_leader:
            if self._granted and healthy and not self._maintenance and self.effective_priority > 0:
                self._claim(now, "leadership granted by the coordinator")
                return
            if self.holder and self._pending is None and any(p.state == State.CLAIMING for p in live):
                self._stop(now, "another node was granted leadership")
                return
            if blocking:
                self._decide_preempt(live, blocking, now)
            else:
                self._clear_takeover()
            return
        # Release handshake: the holder named us.
        for peer in live:
            if peer.state == State.RELEASING and peer.last and peer.last.release_target == cfg.name:
                if not peer.active and quorum and healthy and not self._maintenance:
                    self._claim(now, f"{peer.name} released to us")
                return
        if blocking:
            self._vacant_since = None
            self._decide_preempt(live, blocking, now)
            return
        self._clear_takeover()
        if self._vacant_since is None:
            self._vacant_since = now
        if not quorum or not healthy or self._maintenance or self.effective_priority == 0:
            return
        if self._link_bad_at > -INF:
            return  # network not usable long enough
        if self.holder and self._pending is None:
            self._claim(now, "service already running and no MASTER")
            return
        me = (self.effective_priority, cfg.name)
        better = sum(1 for p in live if p.candidate() and p.rank > me)
        due = self._vacant_since + better * self.master_down_interval()
        if now >= due:
            gone = [p for p in self._peers.values() if p.last is not None and not p.live(now)]
            reason = "no MASTER"
            if gone:
                last = max(gone, key=lambda p: p.last_rx or -INF)
                if last.state == State.STOPPING:
                    reason = f"peer {last.name} resigned"
                else:
                    reason = f"peer {last.name} silent for {now - (last.last_rx or now):.3f} s"
            elif any(p.state in _RESIGNING for p in live):
                reason = "MASTER resigned"
            self._claim(now, reason)

    def _decide_preempt(self, live: list[PeerView], blocking: list[PeerView], now: float) -> None:
        cfg = self.config
        holder = next((p for p in blocking if p.state == State.MASTER and p.active), None)
        wants = (
            cfg.preempt
            and holder is not None
            and not self._maintenance
            and self.effective_priority >= holder.effective_priority + cfg.preempt_margin
            and now >= self._takeover_not_before
        )
        if not wants or holder is None:
            self._clear_takeover()
            return
        if self._preempt_since is None:
            self._preempt_since = now
        if self._takeover_requested_at is None:
            if now - self._preempt_since >= cfg.preempt_delay:
                self._takeover_requested_at = now
                self._changed(now)
            return
        budget = (holder.last.release_budget_ms / 1000 if holder.last else 0) + 2 * holder.advert
        if now - self._takeover_requested_at > budget:
            # Not served in time: withdraw, retry with backoff.
            self._takeover_backoff = min(max(2 * self._takeover_backoff, self.master_down_interval()), 60.0)
            self._takeover_not_before = now + self._takeover_backoff
            self._clear_takeover()
            self._changed(now)

    def _decide_claiming(self, live: list[PeerView], now: float) -> None:
        if self.config.external_leader and not self._granted:
            self._set_state(Event.ABORT_CLAIM, now, "leadership lost")
            if self.holder:
                self._stop(now, "leadership lost")
            return
        me = (self.effective_priority, self.config.name)
        for peer in live:
            if peer.state == State.MASTER and (peer.active or not self.holder):
                self._set_state(Event.ABORT_CLAIM, now, f"{peer.name} is MASTER")
                return
            if peer.state == State.CLAIMING and peer.rank > me:
                self._set_state(Event.ABORT_CLAIM, now, f"{peer.name} claims with a higher rank")
                return
        if self._pending is not None:
            return
        if self._service is ServiceStatus.RUNNING:
            self._set_state(Event.STARTED, now, self._last_reason)
            return
        if any(p.active for p in live):
            return  # wait for the resigning holder to confirm its stop
        if self._service is ServiceStatus.STOPPED:
            self._start(now, self._last_reason)

    def _decide_master(self, live: list[PeerView], now: float) -> None:
        if self.config.external_leader and not self._granted:
            self._release(now, None, "leadership lost (coordinator)")
            return
        if self._pending is None and self._service is ServiceStatus.STOPPED:
            self._fault(now, "service stopped")
            return
        requests = [
            p
            for p in live
            if p.last is not None
            and p.last.flags & Flag.TAKEOVER
            and p.eligible()
            and p.effective_priority > self.effective_priority
        ]
        if requests and self._pending is None and not self._maintenance:
            best = max(requests, key=lambda p: p.rank)
            self._release(now, best.name, f"failback: {best.name} (priority {best.effective_priority}) asked")

    def _decide_releasing(self, live: list[PeerView], now: float) -> None:
        if self.holder:
            return
        if self._release_deadline == INF:
            self._release_deadline = now + 2 * self.master_down_interval()
        target = next((p for p in self._peers.values() if p.name == self._release_target), None)
        taken = (
            target is not None
            and target.live(now)
            and (target.state in (State.CLAIMING, State.MASTER) or target.active)
        )
        if taken or target is None or not target.live(now) or now >= self._release_deadline:
            self._release_target = None
            self._release_deadline = INF
            self._set_state(Event.RELEASED, now, "release complete")
            self._released_at = now
            self._vacant_since = None

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
        if due:
            self._send_all(now)
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
                    "rejected_as_stale": p.replays,
                }
                for p in self._peers.values()
            ],
            "counters": self.statistics(),
        }


def _names(peers: Iterable[PeerView]) -> str:
    return ", ".join(p.name or "?" for p in peers)
