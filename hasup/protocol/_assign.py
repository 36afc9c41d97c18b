"""Assignments derived from the election state after every decision round.

* **Leadership** (``[coordinator]``): when to campaign for the external lease
  (:class:`Campaign`), when to withdraw or end a tenure (:class:`Resign`);
* **data sync** (``[[sync]]``): which role the sync engines play (:class:`SyncRole`)
  and when a failback must first pull the holder's data (:class:`PullData`);
* one-off configuration warnings (:class:`ConfigWarning`).

The supervisor executes these like any other action and reports back through
``Node.leadership``, ``Node.leader_change`` and ``Node.sync_result``.
"""

from __future__ import annotations

from ._actions import AddVips, Campaign, ConfigWarning, PullData, Resign, SyncRole
from ._decisions import _Decisions
from ._enums import ServiceStatus, State
from ._peers import PeerView

_HOLDING = (State.MASTER, State.CLAIMING, State.RELEASING)


class _Assignments(_Decisions):
    """Leadership campaign, sync role, configuration warnings."""

    def _assign(self, now: float) -> None:
        if self.config.external_leader:
            self._coordinate(now)
        if self.config.takeover_needs_sync:
            self._assign_sync(now)
        if self.config.vips:
            self._assign_vips()
        if not self._warned_preempt:
            self._check_preempt_setting()

    # ---------------------------------------------------------------- virtual IPs
    def _assign_vips(self) -> None:
        """Add the virtual IPs once the start is confirmed; remove them whenever this
        node stops serving (``_stop`` already removed them before a StopService), and
        at start-up when it is not the holder (a left-over copy from a crash)."""
        serving = self._state == State.MASTER and self._service is ServiceStatus.RUNNING and self._pending is None
        if serving and self._vips_held is not True:
            self._vips_held = True
            self._actions.append(AddVips("service running"))
        elif not serving and self._vips_held is not False:
            if self._vips_held is None and self._state == State.INIT and self._resume_candidate:
                return  # the holder before a restart of hasup: keep them until it is decided
            if self._state == State.STOPPING and self._hold > 0 and self._service is ServiceStatus.RUNNING:
                return  # leaving the service running (reload, upgrade): the addresses stay with it
            self._remove_vips("not serving" if self._vips_held else "start-up: not the holder")

    # ---------------------------------------------------------------- leadership
    def _coordinate(self, now: float) -> None:
        if self._granted:
            if self._state not in (State.CLAIMING, State.MASTER) and not self.holder:
                # The tenure is over and the service confirmed stopped: resign, so that
                # the next leader need not wait for the lease to expire.
                self._granted = False
                self._actions.append(Resign(True, "service stopped"))
            return
        wanted = self._wants_campaign(now)
        if wanted and not self._campaigning:
            self._campaigning = True
            self._actions.append(Campaign("best-ranked candidate" if self.wants_leadership(now) else "leader vacant"))
        elif not wanted and self._campaigning:
            self._campaigning = False
            self._actions.append(Resign(False, "no longer the candidate"))

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

    def _wants_campaign(self, now: float) -> bool:
        """Campaign when best-ranked, or when the lease stayed vacant for longer than the
        better-ranked candidates had to win it (rank is a preference, not a veto: a
        better peer whose heartbeats arrive but that cannot reach the coordinator would
        otherwise keep every node from leading; the coordinator still lets one win)."""
        if self.wants_leadership(now):
            return True
        due = self._campaign_due(now)
        return due is not None and now >= due

    def _campaign_due(self, now: float) -> float | None:
        """When the vacancy stagger lets this node campaign (``None``: it may not)."""
        if (
            self._leader_vacant_since is None
            or self._state != State.BACKUP
            or self._maintenance
            or self.effective_priority == 0
            or not self._link_up
        ):
            return None
        return self._leader_vacant_since + self._better_candidates(now) * self._campaign_grace()

    def _campaign_grace(self) -> float:
        return self.master_down_interval() + self.config.coordinator_timeout

    def _better_candidates(self, now: float) -> int:
        me = (self.effective_priority, self.config.name)
        return sum(1 for p in self._peers.values() if p.live(now) and p.candidate() and p.rank > me)

    def _leadership_timers(self, now: float) -> list[float]:
        timers = [self._released_at + self.master_down_interval()]
        due = self._campaign_due(now)
        if due is not None:
            timers.append(due)
        return timers

    # ---------------------------------------------------------------- data sync
    def _assign_sync(self, now: float) -> None:
        holder = self.holder_peer(now)
        if self.holder and self._state in (*_HOLDING, State.INIT):
            role = SyncRole("serve")
        elif (
            holder is not None
            and self._state == State.BACKUP
            and self._service is ServiceStatus.STOPPED
            and not self.holder
        ):
            role = SyncRole("follow", holder.name, holder.address[0])
        else:
            role = SyncRole("idle")
        if role != self._sync_role:
            self._sync_role = role
            self._actions.append(role)
        if self._needs_sync and not self._pull_in_flight:
            if holder is None or holder.name is None:
                self._sync_done(True, now)  # nobody to pull from: nothing to lose
            else:
                self._pull_in_flight = True
                self._actions.append(PullData(holder.name, holder.address[0]))

    def _sync_done(self, ok: bool, now: float) -> None:
        self._needs_sync = False
        self._pull_in_flight = False
        if ok:
            self._sync_ready_until = now + 2 * self.master_down_interval()
        else:
            self._takeover_backoff = min(max(2 * self._takeover_backoff, self.master_down_interval()), 60.0)
            self._takeover_not_before = now + self._takeover_backoff

    def holder_peer(self, now: float) -> PeerView | None:
        """A live peer that holds the service (the source for data sync), if any."""
        for peer in self._peers.values():
            if peer.live(now) and peer.active and peer.state in _HOLDING:
                return peer
        return None

    # ---------------------------------------------------------------- warnings
    def _check_preempt_setting(self) -> None:
        peers = list(self._peers.values())
        if not peers or any(p.last is None for p in peers):
            return
        self._warned_preempt = True
        lowest = all(self.config.priority < (p.last.base_priority if p.last else 0) for p in peers)
        if not self.config.preempt and lowest:
            self._actions.append(
                ConfigWarning(
                    f"preempt = false has no effect on the lowest-priority node {self.config.name}: failback is "
                    "decided by the preferred node; set preempt = false there to disable automatic failback"
                )
            )
