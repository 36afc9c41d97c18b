"""hasup: keep exactly one copy of a service running across a small group of machines.

The public API: :class:`Supervisor` runs one node; :func:`load_config` /
:func:`parse_config` read its configuration; backends live in :mod:`hasup.backends`,
probes in :mod:`hasup.probes`, the pure election core in :mod:`hasup.protocol`, and
test helpers in :mod:`hasup.testing`.
"""

from ._errors import (
    BackendError,
    BackendUnavailable,
    ConfigError,
    HasupError,
    ProbeError,
    ProtocolError,
    ServiceFailed,
)
from ._version import __version__
from .backends.base import ServiceBackend
from .backends.callback import CallbackBackend
from .config import Config, load_config, parse_config
from .probes.base import Probe, ProbeOutcome
from .protocol import ServiceStatus, State
from .supervisor import Supervisor, SupervisorEvent

__all__ = [
    "BackendError",
    "BackendUnavailable",
    "CallbackBackend",
    "Config",
    "ConfigError",
    "HasupError",
    "Probe",
    "ProbeError",
    "ProbeOutcome",
    "ProtocolError",
    "ServiceBackend",
    "ServiceFailed",
    "ServiceStatus",
    "State",
    "Supervisor",
    "SupervisorEvent",
    "__version__",
    "load_config",
    "parse_config",
]
