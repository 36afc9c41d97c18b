"""Parse ``host:port`` addresses as written in configuration files.

Accepted forms: ``"10.0.0.1:5405"``, ``"[fe80::1%eth0]:5405"``, ``"edge-b.lan:5405"``,
and, when a default port is given, the same without ``:port`` (a bare IPv6 address
such as ``"fe80::1"`` is then accepted too, since it cannot be confused with a port).
"""

from __future__ import annotations

import ipaddress
import re

__all__ = ["format_address", "parse_address"]

# RFC 1123 host names: labels of letters, digits and hyphens, not starting or ending
# with a hyphen. Underscores are tolerated because real networks have them.
_LABEL = r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")


def parse_address(text: str, default_port: int | None = None) -> tuple[str, int]:
    """Return ``(host, port)`` for ``text``; raise ``ValueError`` saying what is wrong.

    IPv6 addresses must be bracketed when a port follows: ``"[::1]:5405"``. The host is
    returned without brackets. Port 0 is accepted (an ephemeral port for listeners).
    """
    if not isinstance(text, str):
        raise ValueError(f"expected an address string such as '10.0.0.1:5405', got {text!r}")
    value = text.strip()
    if not value:
        raise ValueError("empty address (expected 'host:port', e.g. '10.0.0.1:5405')")

    port_text: str | None
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise ValueError(f"{text!r}: missing ']' after the IPv6 address")
        host = value[1:end]
        rest = value[end + 1 :]
        if rest == "":
            port_text = None
        elif rest.startswith(":"):
            port_text = rest[1:]
        else:
            raise ValueError(f"{text!r}: expected ':port' after ']'")
        _check_ipv6(host, text)
    elif value.count(":") > 1:
        # Unbracketed IPv6: only unambiguous without a port.
        _check_ipv6(value, text)
        if default_port is None:
            raise ValueError(f"{text!r}: write IPv6 addresses in brackets with a port, e.g. '[{value}]:5405'")
        host, port_text = value, None
    elif ":" in value:
        host, port_text = value.split(":", 1)
        _check_host(host, text)
    else:
        host, port_text = value, None
        _check_host(host, text)

    if port_text is None:
        if default_port is None:
            raise ValueError(f"{text!r}: missing ':port' (expected 'host:port', e.g. '{host}:5405')")
        return host, _check_port(default_port, text)
    if not port_text.isdigit() or not port_text.isascii():
        raise ValueError(f"{text!r}: port {port_text!r} is not a number")
    return host, _check_port(int(port_text), text)


def format_address(host: str, port: int) -> str:
    """The inverse of :func:`parse_address`: brackets IPv6 hosts."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _check_port(port: int, text: str) -> int:
    if not 0 <= port <= 65535:
        raise ValueError(f"{text!r}: port {port} is out of range (0-65535)")
    return port


def _check_ipv6(host: str, text: str) -> None:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        raise ValueError(f"{text!r}: {host!r} is not a valid IPv6 address") from None


def _check_host(host: str, text: str) -> None:
    if not host:
        raise ValueError(f"{text!r}: missing host before ':port'")
    if _HOSTNAME.fullmatch(host) is None:
        raise ValueError(f"{text!r}: {host!r} is not a valid host name or IPv4 address")
    if re.fullmatch(r"[0-9.]+", host):
        # Looks numeric: it must then be a real dotted-quad, not '10.0.0' or '999.1.1.1'.
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"{text!r}: {host!r} is not a valid IPv4 address") from None
