"""``[[sync]]`` tables: which directory follows the active node, and how.

Example::

    [[sync]]
    path = "/opt/neuronex/data"
    preset = "neuronex"          # adds NEURONEX_EXCLUDES
    exclude = ["tmp/*"]
    interval = "30s"             # backstop full scan; file watching does the rest
    listen = "10.0.0.1:5406"     # transfer server (default: the group listen host, port 5406)
    allow_from = ["10.0.1.0/24"] # more client addresses than the peers' (default: peers only)
    id = "neuronex-data"         # names the directory across the group (default: path)
    max_bytes = 2_000_000_000    # refuse snapshots larger than this (standby quota)
    pull_timeout = "30s"         # bound of the pull a preempting node makes before takeover
"""

from __future__ import annotations

import ipaddress
import os

import attrs

from .._addr import parse_address
from .._section import Section

__all__ = ["DEFAULT_SYNC_PORT", "NEURONEX_EXCLUDES", "PRESETS", "SyncSettings"]

DEFAULT_SYNC_PORT = 5406

#: Excludes for ``/opt/neuronex/data``. See docs/sync.md for why each is there.
NEURONEX_EXCLUDES: tuple[str, ...] = (
    # Licenses are issued for one machine (bound to its hardware id): each node keeps its own.
    "neuron/*.lic",
    "*.lic",
    # Logs and run-time state are not data; they are per machine and churn constantly.
    "logs",
    "log",
    "run",
    "neuron/logs",
    "neuron/run",
    "ekuiper/log",
    "ekuiper/logs",
    "*.log",
    "*.pid",
    "*.sock",
    "*.tmp",
)

PRESETS: dict[str, tuple[str, ...]] = {"neuronex": NEURONEX_EXCLUDES}


@attrs.frozen
class SyncSettings:
    """One ``[[sync]]`` table, validated."""

    path: str
    exclude: tuple[str, ...] = ()
    interval: float = 30.0
    listen: tuple[str, int] = ("0.0.0.0", DEFAULT_SYNC_PORT)
    max_bytes: int | None = None
    pull_timeout: float = 30.0
    #: Names this directory across the group; bound into the channel's keys, so that a
    #: follower connected to another directory's transfer server is refused. Default: path.
    id: str = ""
    #: Client networks accepted besides the peers' own addresses (``0.0.0.0/0`` = any).
    allow_from: tuple[str, ...] = ()

    @property
    def sync_id(self) -> str:
        """The identity both nodes must agree on (``id``, else the path)."""
        return self.id or self.path

    @classmethod
    def from_section(
        cls, section: Section, *, default_host: str = "0.0.0.0", default_port: int = DEFAULT_SYNC_PORT
    ) -> SyncSettings:
        """Read one ``[[sync]]`` table; the transfer server defaults to ``default_host``
        (the group's listen host) and ``default_port`` (give each ``[[sync]]`` its own)."""
        path = section.get_str("path")
        if not os.path.isabs(path) or os.path.normpath(path) == "/":
            raise section.error("path", f"must be an absolute directory other than /, got {path!r}")
        path = os.path.normpath(path)
        preset = section.get_str("preset", None, choices=sorted(PRESETS))
        exclude = tuple(section.get_str_list("exclude", ()))
        for pattern in exclude:
            if not pattern.strip() or pattern.startswith("/"):
                raise section.error("exclude", f"patterns are relative to path, got {pattern!r}")
        if preset is not None:
            exclude = PRESETS[preset] + exclude
        interval = section.get_duration("interval", 30.0, min=0.1)
        listen_text = section.get_str("listen", None)
        if listen_text is None:
            listen = (default_host, default_port)
        else:
            try:
                listen = parse_address(listen_text, default_port=default_port)
            except ValueError as exc:
                raise section.error("listen", str(exc)) from None
        max_bytes = section.get_int("max_bytes", None, min=1)
        pull_timeout = section.get_duration("pull_timeout", 30.0, min=0.0)
        allow_from = tuple(section.get_str_list("allow_from", ()))
        for network in allow_from:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise section.error("allow_from", f"not an address or network: {network!r}") from None
        sync_id = section.get_str("id", "")
        if len(sync_id) > 200 or any(c in sync_id for c in "\x00\n"):
            raise section.error("id", "must be at most 200 characters on one line")
        section.finish()
        return cls(
            path=path,
            exclude=exclude,
            interval=interval,
            listen=listen,
            max_bytes=max_bytes,
            pull_timeout=pull_timeout,
            id=sync_id,
            allow_from=allow_from,
        )
