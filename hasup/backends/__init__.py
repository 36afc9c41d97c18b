"""Service backends, looked up by the ``[service] backend`` name.

The registry is an explicit table of lazy imports, so that a missing optional
dependency (``docker``, ``jeepney``) only matters to users of that backend.
"""

from __future__ import annotations

import importlib

from .._errors import ConfigError
from .base import ServiceBackend, ServiceStatus

__all__ = ["BACKENDS", "WARM_BACKENDS", "ServiceBackend", "ServiceStatus", "load_backend_class"]

#: name → (module, class, pip extra or None)
BACKENDS: dict[str, tuple[str, str, str | None]] = {
    "command": ("hasup.backends.command", "CommandBackend", None),
    "callback": ("hasup.backends.callback", "CallbackBackend", None),
    "systemd": ("hasup.backends.systemd", "SystemdBackend", "systemd"),
    "docker": ("hasup.backends.docker", "DockerBackend", "docker"),
    "warm": ("hasup.backends.warm", "WarmCommandBackend", None),
    "neuronex": ("hasup.backends.neuronex", "NeuronexBackend", None),
    "mock": ("hasup.testing", "MockBackend", None),
}

#: The warm standby backends (the core runs in warm mode: promote/demote).
WARM_BACKENDS = frozenset({"warm", "neuronex"})


def load_backend_class(name: str) -> type[ServiceBackend]:
    """Import the backend class for ``name``; ``ConfigError`` if unknown or its extra is missing."""
    try:
        module_name, class_name, extra = BACKENDS[name]
    except KeyError:
        raise ConfigError(f"unknown backend {name!r} (choose from {', '.join(sorted(BACKENDS))})") from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f": pip install 'hasup[{extra}]'" if extra else ""
        raise ConfigError(f"backend {name!r} needs a package that is not installed ({exc.name}){hint}") from None
    cls: type[ServiceBackend] = getattr(module, class_name)
    return cls
