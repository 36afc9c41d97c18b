"""The core's configuration: plain values, no file or network access."""

from __future__ import annotations

import zlib

import attrs

from ._wire import KeyRing

__all__ = ["Address", "CoreConfig", "PeerSpec", "ProbeSpec"]

#: (host, port) as used by the transport; IPv6 hosts without brackets.
Address = tuple[str, int]


@attrs.frozen
class PeerSpec:
    """A configured peer: its address, and optionally the name it must announce."""

    address: Address
    name: str | None = None


@attrs.frozen
class ProbeSpec:
    """What the core needs to know about a probe to interpret its results."""

    name: str
    rise: int = 2
    fall: int = 3
    start_period: float = 0.0
    when: str = "active"
    weight: int | None = None
    witness: bool = False


def _check_priority(_: object, __: object, value: int) -> None:
    if not 1 <= value <= 254:
        raise ValueError(f"priority must be 1..254, got {value}")


@attrs.frozen(kw_only=True)
class CoreConfig:
    """Settings of one node's election core.

    Durations are seconds. Defaults follow keepalived where it has an equivalent
    (advert 1 s, RFC 5798 timing) and are conservative elsewhere.
    """

    name: str
    group: int
    priority: int = attrs.field(validator=_check_priority)
    peers: tuple[PeerSpec, ...] = ()
    keys: KeyRing = attrs.field(factory=KeyRing.insecure)
    advert_interval: float = 1.0
    preempt: bool = True
    preempt_delay: float = 0.0
    preempt_margin: int = 1
    start_timeout: float = 60.0
    stop_timeout: float = 30.0
    fault_holddown: float = 5.0
    fault_backoff_max: float = 300.0
    #: "none", "majority", or "auto" (majority for groups of 3 or more).
    quorum: str = "auto"
    probes: tuple[ProbeSpec, ...] = ()
    #: Longest leave-running hold a STOPPING node may ask peers for.
    max_hold: float = 30.0
    #: Leadership comes from an external coordinator (etcd) through ``Node.leadership``;
    #: heartbeats still carry state, health and the release handshake.
    external_leader: bool = False
    #: How long one coordinator request may take (the etcd ``request_timeout``): part of
    #: the rank stagger with which nodes campaign for a vacant leadership.
    coordinator_timeout: float = 1.0
    #: Data sync is configured: the core assigns the sync role (``SyncRole``) and a
    #: preempting node first pulls the holder's data (``PullData`` /
    #: ``Node.sync_result``) so that no edit is lost on failback.
    takeover_needs_sync: bool = False
    #: Virtual IP addresses are configured (``[[vip]]``): the core emits
    #: ``AddVips``/``RemoveVips``/``AnnounceVips`` around the service.
    vips: bool = False
    #: The pair witness (``[group] witness``): a third vote (``docs/witness.md``).
    witness: Address | None = None
    #: Keys for vote requests (HKDF label ``"witness v1"`` from the group key).
    witness_keys: KeyRing | None = None
    #: Vote lease asked of the witness; 0: ``4 * advert_interval``.
    witness_lease: float = 0.0
    #: Warm standby: the service runs on every node; the core emits ``Promote``/``Demote``
    #: instead of ``StartService``/``StopService`` and a node is eligible only while its
    #: standby reports ready (``Node.standby_ready``).
    warm: bool = False

    @property
    def group_size(self) -> int:
        return 1 + len(self.peers)

    @property
    def quorum_required(self) -> bool:
        if self.external_leader:
            return False  # the coordinator is the quorum
        if self.witness is not None:
            return True  # the witness is the third vote
        if self.quorum == "auto":
            return self.group_size >= 3
        return self.quorum == "majority"

    @property
    def advert_ms(self) -> int:
        return max(1, round(self.advert_interval * 1000))

    @property
    def vote_lease(self) -> float:
        """The witness vote lease this node asks for."""
        return self.witness_lease or 4 * self.advert_interval

    @property
    def config_hash(self) -> int:
        """Hash of the settings every member must share (reported on mismatch)."""
        text = f"v1|{self.group}|{self.advert_ms}|{self.quorum_required}|{self.group_size}"
        if self.warm:
            text += "|warm"  # a group must not mix warm and cold members
        return zlib.crc32(text.encode())
