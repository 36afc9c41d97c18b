"""Durations in configuration are strings such as ``"1s"``, ``"150ms"`` or ``"1m30s"``."""

from __future__ import annotations

import re

__all__ = ["format_duration", "parse_duration"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Return seconds for a duration string; raise ``ValueError`` with a readable reason."""
    compact = text.strip().replace(" ", "")
    if not compact:
        raise ValueError("empty duration")
    pos = 0
    total = 0.0
    for match in _PART.finditer(compact):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(compact):
        raise ValueError(f'{text!r} is not a duration (use e.g. "1s", "150ms", "2m")')
    return total


def format_duration(seconds: float) -> str:
    """Render seconds the way configuration writes them (``0.15`` → ``"150ms"``)."""
    if seconds == 0:
        return "0s"
    ms = round(seconds * 1000)
    if ms % 1000 == 0:
        return f"{ms // 1000}s"
    return f"{ms}ms"
