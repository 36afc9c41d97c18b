"""The exception hierarchy: one root, one class per kind of failure."""

from __future__ import annotations

__all__ = [
    "BackendError",
    "BackendUnavailable",
    "ConfigError",
    "HasupError",
    "ProbeError",
    "ProtocolError",
    "ServiceFailed",
]


class HasupError(Exception):
    """Root of every error hasup raises on purpose."""


class ConfigError(HasupError):
    """A configuration mistake: carries the file, the key path and the line where known.

    ``str(err)`` is the one line shown to users: ``file: key.path: message (line N)``.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        key: str | None = None,
        line: int | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.key = key
        self.line = line
        super().__init__(self.render())

    def render(self) -> str:
        parts = [p for p in (self.file, self.key) if p]
        text = ": ".join([*parts, self.message])
        if self.line is not None:
            text += f" (line {self.line})"
        return text


class ProtocolError(HasupError):
    """A datagram or a protocol input that the core cannot accept."""


class BackendError(HasupError):
    """A service backend could not do what was asked."""


class BackendUnavailable(BackendError):
    """The thing behind the backend (systemd, dockerd, ...) cannot be reached."""


class ServiceFailed(BackendError):
    """The service itself failed: exit code, signal, failed health check, timeout."""


class ProbeError(HasupError):
    """A health probe is misconfigured or could not run at all."""
