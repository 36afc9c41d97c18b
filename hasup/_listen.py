"""Every socket a configuration listens on, and a check that each can be bound.

A port that another process (or a second node on the same host) already holds is a
user mistake, not a crash: ``hasup run`` checks every listener before it touches
anything and stops with one line naming the key and the address (exit 2); a reload
checks the listeners it would add and is rejected, keeping the running ones, when one
of them cannot be bound. The supervisor maps a failure to bind at its real bind the
same way (:func:`bind_error`), for the race between check and bind.
"""

from __future__ import annotations

import errno
import socket

import attrs

from ._errors import ConfigError
from ._section import Source
from .config import Config

__all__ = ["ListenSpec", "bind_error", "check_listeners", "config_listeners", "new_listeners"]


@attrs.frozen
class ListenSpec:
    """One listener: the configuration key that asks for it, its address and protocol."""

    key: str
    host: str
    port: int
    proto: str  # "tcp" | "udp"

    def describe(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}/{self.proto}"


def config_listeners(config: Config) -> list[ListenSpec]:
    """The heartbeat socket, the status endpoint and each ``[[sync]]`` transfer server."""
    specs = [ListenSpec("group.listen", *config.group.listen, "udp")]
    if config.status.listen is not None:
        specs.append(ListenSpec("status.listen", *config.status.listen, "tcp"))
    for i, sync in enumerate(config.sync_settings()):
        specs.append(ListenSpec(f"sync[{i}].listen", *sync.listen, "tcp"))
    return specs


def new_listeners(running: Config, candidate: Config) -> list[ListenSpec]:
    """The listeners ``candidate`` has that ``running`` does not (same address and protocol)."""
    held = {(s.host, s.port, s.proto) for s in config_listeners(running)}
    return [s for s in config_listeners(candidate) if (s.host, s.port, s.proto) not in held]


def bind_error(config: Config, spec: ListenSpec, exc: OSError) -> ConfigError:
    """The one-line error for a listener that cannot be bound."""
    reason = exc.strerror or str(exc)
    if exc.errno == errno.EADDRINUSE:
        reason = "address already in use (another process, or another node on this host, holds it)"
    elif exc.errno == errno.EADDRNOTAVAIL:
        reason = "no interface of this host has that address"
    return ConfigError(
        f"cannot listen on {spec.describe()}: {reason}",
        file=config.file,
        key=spec.key,
        line=Source(config.file, config.text).locate(spec.key),
    )


def check_listeners(config: Config, specs: list[ListenSpec] | None = None) -> None:
    """Bind (and close at once) each listener; raise :class:`ConfigError` for the first
    that cannot be bound. Port 0 (ephemeral) always binds and is skipped."""
    for spec in config_listeners(config) if specs is None else specs:
        if spec.port == 0:
            continue
        try:
            _probe_bind(spec)
        except OSError as exc:
            raise bind_error(config, spec, exc) from None


def _probe_bind(spec: ListenSpec) -> None:
    family = socket.AF_INET6 if ":" in spec.host else socket.AF_INET
    kind = socket.SOCK_STREAM if spec.proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(family, kind) as sock:
        if spec.proto == "tcp":
            # as anyio's listener does: a port in TIME_WAIT is free, a listening one is not
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((spec.host, spec.port))
