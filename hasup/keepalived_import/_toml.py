"""Writing hasup.toml text: quoted strings and lists, durations, wrapped comments."""

from __future__ import annotations

import json
from collections.abc import Iterable
from decimal import Decimal

from .._duration import format_duration

__all__ = ["duration", "quote", "quote_list", "wrap"]


def quote(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def quote_list(values: Iterable[str]) -> str:
    return "[" + ", ".join(quote(v) for v in values) + "]"


def duration(seconds: float) -> str:
    """A quoted duration: ``format_duration`` for whole milliseconds, else ``"<seconds>s"``
    (format_duration rounds to milliseconds; a keepalived value is kept exactly, and never
    in exponent notation, which durations do not accept: 1e-06 is ``"0.000001s"``)."""
    ms = seconds * 1000
    if abs(ms - round(ms)) < 1e-9:
        return quote(format_duration(seconds))
    return f'"{Decimal(repr(seconds)):f}s"'


def wrap(text: str, prefix: str, width: int = 108) -> list[str]:
    words = text.split(" ")
    lines: list[str] = []
    current = prefix
    indent = prefix + ("  " if prefix.endswith("   ") else "")
    for word in words:
        if len(current) + len(word) + 1 > width and current.strip() not in ("", "#", "#   -"):
            lines.append(current.rstrip())
            current = indent
        current += word + " "
    lines.append(current.rstrip())
    return lines
