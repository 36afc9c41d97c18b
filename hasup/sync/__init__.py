"""Data sync: the active node's directory follows it to the standby, safely.

See ``docs/sync.md``. Entry point: :class:`SyncEngine` (one per ``[[sync]]`` table).
"""

from ._errors import AuthenticationFailed, DiskFull, SyncError, TransferError, UnsafeSnapshot
from .config import NEURONEX_EXCLUDES, SyncSettings
from .engine import SyncEngine, SyncStatus
from .snapshot import Generation, Manifest, SnapshotInfo

__all__ = [
    "NEURONEX_EXCLUDES",
    "AuthenticationFailed",
    "DiskFull",
    "Generation",
    "Manifest",
    "SnapshotInfo",
    "SyncEngine",
    "SyncError",
    "SyncSettings",
    "SyncStatus",
    "TransferError",
    "UnsafeSnapshot",
]
