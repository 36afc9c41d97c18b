"""Leader election delegated to an external coordinator (etcd today).

``hasup.coordinator.load_coordinator(section, group_id=..., name=...)`` builds one from a
``[coordinator]`` table; see docs/coordinator.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._section import Section
from .base import Coordinator, CoordinatorError, LeaderChange, serve_while_leader

if TYPE_CHECKING:
    from .etcd import EtcdCoordinator

__all__ = [
    "Coordinator",
    "CoordinatorError",
    "EtcdCoordinator",
    "LeaderChange",
    "load_coordinator",
    "serve_while_leader",
]


def load_coordinator(section: Section, *, group_id: int, name: str) -> Coordinator:
    """A coordinator from a ``[coordinator]`` table (validated; no I/O until entered)."""
    kind = section.get_str("type", choices=("etcd",))
    if kind == "etcd":
        from .etcd import EtcdCoordinator

        return EtcdCoordinator.from_section(section, group_id=group_id, name=name)
    raise section.error("type", f"unknown coordinator {kind!r}")  # pragma: no cover


def __getattr__(name: str) -> object:
    if name == "EtcdCoordinator":
        from .etcd import EtcdCoordinator

        return EtcdCoordinator
    raise AttributeError(name)
