"""Errors of the data sync engine (all under :class:`hasup.HasupError`)."""

from __future__ import annotations

from .._errors import HasupError

__all__ = ["AuthenticationFailed", "DiskFull", "SyncError", "TransferError", "UnsafeSnapshot"]


class SyncError(HasupError):
    """A sync could not complete; the standby's current copy is left as it was."""


class AuthenticationFailed(SyncError):
    """The peer does not hold the group key (or is not a hasup sync endpoint)."""


class TransferError(SyncError):
    """The connection broke, timed out, or the peer sent something inconsistent."""


class UnsafeSnapshot(SyncError):
    """A received manifest was refused: path traversal, special file, quota, bad hash."""


class DiskFull(SyncError):
    """The standby has no room to stage the snapshot; its current copy is intact."""
