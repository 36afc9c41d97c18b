"""hasup: keep exactly one copy of a service running across a small group of machines."""

from ._errors import BackendError, BackendUnavailable, ConfigError, HasupError, ProbeError, ProtocolError, ServiceFailed
from ._version import __version__
from .protocol import ServiceStatus, State

__all__ = [
    "BackendError",
    "BackendUnavailable",
    "ConfigError",
    "HasupError",
    "ProbeError",
    "ProtocolError",
    "ServiceFailed",
    "ServiceStatus",
    "State",
    "__version__",
]
