"""The decision rules (ARCHITECTURE §2), evaluated by ``_update`` after every input."""

from __future__ import annotations

from ._actions import AnnounceVips, Notify, StopService
from ._core import _RESIGNING, INF, NAME_CLASH_CLEAR
from ._enums import ServiceStatus, State
from ._peers import PeerView
from ._states import Event
from ._voting import _Voting
from ._wire import Flag


class _Decisions(_Voting):
    """Takeover, conflicts, release, faults, isolation and quorum."""

    # ---------------------------------------------------------------- the decision loop
    def _update(self, now: float) -> None:
        # Repeat until stable: a transition can enable another at the same instant.
        for _ in range(8):
            before = (self._state, self._pending, self.holder)
            self._decide(now)
            if (self._state, self._pending, self.holder) == before:
                break
        self._assign(now)
        self._observe_holders(now)
        if self._name_clash_at is not None and now - self._name_clash_at >= NAME_CLASH_CLEAR:
            # cleared lazily: _update runs at least once per advert
            self._name_clash_at = None
            self._clear_alarm("name_clash")
        self._emit(now)
        self._emit_vote(now)
        timer = self._compute_timer(now)
        if self._vote is not None and timer is not None:
            timer = min([timer, *(t for t in self._vote_timers() if t > now)])
        self._timer = timer

    def _assign(self, now: float) -> None:  # implemented by _Assignments
        raise NotImplementedError

    def _observe_holders(self, now: float) -> None:
        """Feed the handover ledger: who holds the service in this node's view."""
        active: set[str] = set()
        serving: set[str] = set()
        ended: dict[str, float] = {}
        if self.holder and not (self._state == State.INIT and self._service is ServiceStatus.UNKNOWN):
            active.add(self.config.name)
            if self._service is ServiceStatus.RUNNING or isinstance(self._pending, StopService):
                serving.add(self.config.name)
        master: tuple[str, int] | None = None
        if self._state == State.MASTER and self._service is ServiceStatus.RUNNING and self._pending is None:
            master = (self.config.name, self._term)
        for peer in self._peers.values():
            if peer.name is None or peer.last is None or not peer.active:
                continue
            if not peer.live(now):
                if peer.last_rx is not None:
                    ended[peer.name] = peer.last_rx  # went silent: held until last heard
                continue
            active.add(peer.name)
            if peer.last.state != State.CLAIMING:  # a claimer is still starting
                serving.add(peer.name)
            if master is None and peer.last.state == State.MASTER:
                master = (peer.name, peer.last.term)
        move = self._handover.observe(now, active, serving, ended, master)
        if move is not None:
            self._actions.append(move)

    def _standby_ok(self) -> bool:
        """Warm mode: this node's standby reported ready (always true in cold mode)."""
        return not self.config.warm or self._standby_ready is True

    def _decide(self, now: float) -> None:
        cfg = self.config
        live = [p for p in self._peers.values() if p.live(now)]
        if self._link_up and self._link_bad_at > -INF and now - self._link_bad_at > self.master_down_interval():
            self._link_bad_at = -INF
        # The witness is one more vote (docs/witness.md): counted while its lease holds.
        witness = self._witness_votes(now)
        voters = cfg.group_size + (cfg.witness is not None)
        voting = self._voting_peers(live, now)
        quorum = not cfg.quorum_required or (1 + len(voting) + witness) * 2 > voters
        held = quorum
        self._has_quorum = quorum
        if cfg.quorum_required and self.holder:
            # A holder counts only peers heard within 2 adverts, and stops half an advert
            # after losing its majority: at ~2.5 adverts, before the majority side can
            # declare it down (3 adverts + skew) and claim.
            heard = sum(1 for p in voting if p.last_rx is not None and now - p.last_rx < 2 * p.advert)
            held = (1 + heard + witness) * 2 > voters
        if held:
            self._no_quorum_since = None
        elif self._no_quorum_since is None:
            self._no_quorum_since = now
        healthy = self._probes.always_ok() and self._link_up and self._standby_ok()
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
            if self.config.warm and self._standby_ready is False and self.holder and state == State.MASTER:
                # The service died on the holder: demote it, the best ready standby is
                # promoted. (A standby that is not ready is only ineligible: priority 0.)
                detail = self._standby_detail
                self._fault(now, f"standby not ready: {detail}" if detail else "standby not ready")
                return
            if (
                self.holder
                and state != State.INIT
                and self._no_quorum_since is not None
                and now - self._no_quorum_since >= cfg.advert_interval / 2
            ):
                suffix = " and no witness vote" if cfg.witness is not None else ""
                self._fault(now, f"no majority: hear {1 + len(voting)} of {cfg.group_size}{suffix}")
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
            if self._vips_held:
                self._actions.append(AnnounceVips("split brain resolved"))
        return False

    def _decide_init(self, live: list[PeerView], now: float) -> None:
        cfg = self.config
        if self._service is ServiceStatus.UNKNOWN and self._pending is None:
            return  # wait for the backend's first answer
        if (
            self._resume_candidate
            and not cfg.external_leader  # there, leadership must come from the coordinator
            and (cfg.witness is None or self._has_quorum)
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
        # Our service is running although we are BACKUP (adopted at start-up, started
        # behind our back): with no MASTER around, claim it at once (claimers cannot start
        # while we are ACTIVE, so waiting would deadlock); if we may not serve, stop it.
        if (
            self.holder
            and self._pending is None
            and self._service is ServiceStatus.RUNNING
            and not any(p.state == State.MASTER and p.active for p in live)
            and not any(p.state == State.RELEASING for p in live)
        ):
            if quorum and healthy and not self._maintenance and self.effective_priority > 0:
                self._claim(now, "service already running and no MASTER")
            else:
                self._stop(now, "service running on a node that may not serve")
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
        if not quorum or not healthy or self._maintenance or self.effective_priority == 0 or self._link_bad_at > -INF:
            # Not able to claim (no majority, unhealthy, network not usable long enough):
            # the rank stagger restarts from the moment we can, so that nodes regaining
            # quorum together do not all claim at once.
            self._vacant_since = None
            return
        if self._vacant_since is None:
            self._vacant_since = now
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
            self._needs_sync = False
            return
        if self._preempt_since is None:
            self._preempt_since = now
        if self._takeover_requested_at is None:
            if now - self._preempt_since >= cfg.preempt_delay:
                if cfg.takeover_needs_sync and now >= self._sync_ready_until:
                    self._needs_sync = True  # the supervisor pulls the holder's data first
                    return
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
            # Between claimers, one whose service already runs goes first (the other
            # could never start while it is ACTIVE), then the higher rank.
            if peer.state == State.CLAIMING and (peer.active, peer.rank) > (self.holder, me):
                self._set_state(Event.ABORT_CLAIM, now, f"{peer.name} claims with a higher rank")
                return
        if self._pending is not None:
            return
        if self._service is ServiceStatus.RUNNING:
            self._set_state(Event.STARTED, now, self._last_reason)
            return
        if any(p.active for p in live):
            return  # wait for the resigning holder to confirm its stop
        if self.config.witness is not None:
            if not self._claim_confirmed(live, now):
                return  # the peer whose vote we count has not seen the claim yet
        elif not self.config.external_leader and not self._claim_seen(live, now):
            # (with a coordinator the grant is exclusive: its fencing token decides)
            return  # a rival claim may be in flight: every live peer must see ours first
        if self._service is ServiceStatus.STOPPED:
            self._start(now, self._last_reason)

    def _claim_seen(self, live: list[PeerView], now: float) -> bool:
        """Whether every live peer has acknowledged one of our CLAIMING heartbeats.

        Two nodes that become BACKUP within one message delay of each other (two
        hold-downs ending together) each see the other still in FAULT, not a candidate,
        so both claim at once. A peer's heartbeat that acknowledges our claim carries its
        own state: a rival claim is seen there (the lower rank aborts) before either
        starts, and a peer that saw our claim does not claim itself. Until then the
        claimer queries the peers every advert/4 (they answer at once): the start waits
        one round trip, and not at all when no peer is live. The query is the claim's
        own heartbeat: a separate one sent beside it could arrive after it and be
        dropped as a replay."""
        waiting = [p for p in live if not self._acked_claim(p)]
        if not waiting:
            return True
        if now >= self._next_claim_query:
            self._query_all = True  # sent by _emit, in one heartbeat with any burst now due
            self._next_claim_query = now + self.config.advert_interval / 4
        return False

    def _acked_claim(self, peer: PeerView) -> bool:
        hb = peer.last
        ack = hb.acks.get(self.config.name) if hb is not None else None
        return ack is not None and ack[0] == self._epoch and ack[1] >= self._claim_seq

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
