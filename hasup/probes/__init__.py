"""Health probes, looked up by the ``[[probe]] type`` name."""

from __future__ import annotations

import importlib

from .._errors import ConfigError
from .base import Probe, ProbeOptions, ProbeOutcome

__all__ = ["PROBES", "Probe", "ProbeOptions", "ProbeOutcome", "load_probe_class"]

PROBES: dict[str, tuple[str, str]] = {
    "http": ("hasup.probes.http", "HttpProbe"),
    "tcp": ("hasup.probes.tcp", "TcpProbe"),
    "exec": ("hasup.probes.exec", "ExecProbe"),
    "backend": ("hasup.probes.backend", "BackendProbe"),
}


def load_probe_class(name: str) -> type[Probe]:
    try:
        module_name, class_name = PROBES[name]
    except KeyError:
        raise ConfigError(f"unknown probe type {name!r} (choose from {', '.join(sorted(PROBES))})") from None
    cls: type[Probe] = getattr(importlib.import_module(module_name), class_name)
    return cls
