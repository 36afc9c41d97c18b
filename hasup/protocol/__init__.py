"""The pure election core: no sockets, no clocks, no logging.

Everything here is deterministic given its inputs, each of which carries ``now``.
"""

from ._actions import (
    Action,
    AddVips,
    Alarm,
    AnnounceVips,
    Campaign,
    ConfigWarning,
    Demote,
    Handover,
    Notify,
    Persist,
    PersistentState,
    Promote,
    PullData,
    RemoveVips,
    Resign,
    StartService,
    StopService,
    SyncRole,
)
from ._config import Address, CoreConfig, PeerSpec, ProbeSpec
from ._enums import ServiceStatus, State
from ._node import Node
from ._peers import PeerView, down_interval, skew_time
from ._states import TRANSITIONS, Event, transition
from ._wire import Drop, Flag, Heartbeat, KeyRing, decode, derive_key, encode

__all__ = [
    "TRANSITIONS",
    "Action",
    "AddVips",
    "AnnounceVips",
    "Address",
    "Alarm",
    "Campaign",
    "ConfigWarning",
    "CoreConfig",
    "Demote",
    "Drop",
    "Event",
    "Flag",
    "Handover",
    "Heartbeat",
    "KeyRing",
    "Node",
    "Notify",
    "PeerSpec",
    "PeerView",
    "Persist",
    "PersistentState",
    "ProbeSpec",
    "Promote",
    "PullData",
    "RemoveVips",
    "Resign",
    "ServiceStatus",
    "StartService",
    "State",
    "StopService",
    "SyncRole",
    "decode",
    "derive_key",
    "down_interval",
    "encode",
    "skew_time",
    "transition",
]
