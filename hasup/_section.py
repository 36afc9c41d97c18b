"""Typed, located reading of one TOML table.

Every value hasup reads from a configuration file goes through :class:`Section`, so
that every mistake is reported the same way: ``file: key.path: what is wrong (line N)``.
Backends and probes receive a ``Section`` for their own table and read their options
with it; :meth:`Section.finish` then rejects keys nobody read (typos).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from ._duration import parse_duration
from ._errors import ConfigError

__all__ = ["Section", "Source"]

T = TypeVar("T")
_MISSING: Any = object()


class Source:
    """The text of a configuration file, used to find the line of a key path."""

    def __init__(self, file: str, text: str = "") -> None:
        self.file = file
        self._lines = text.splitlines()

    def locate(self, path: str) -> int | None:
        """Best-effort line number of a dotted key path such as ``probe[1].url``."""
        if not self._lines:
            return None
        parts = path.split(".")
        key = parts[-1]
        tables = parts[:-1]
        start = 0
        end = len(self._lines)
        if tables:
            header_path = ".".join(tables)
            m = re.fullmatch(r"(.+)\[(\d+)\]", header_path)
            if m:
                name, index = m.group(1), int(m.group(2))
                pattern = re.compile(r"^\s*\[\[\s*" + re.escape(name) + r"\s*\]\]")
            else:
                name, index = header_path, 0
                pattern = re.compile(r"^\s*\[\s*" + re.escape(name) + r"\s*\]")
            seen = -1
            found = None
            for no, line in enumerate(self._lines):
                if pattern.match(line):
                    seen += 1
                    if seen == index:
                        found = no
                        break
            if found is None:
                # key may be an inline table of its parent; fall back to the parent.
                return self.locate(".".join(tables)) if len(tables) > 1 else None
            start = found + 1
            for no in range(start, len(self._lines)):
                if re.match(r"^\s*\[", self._lines[no]):
                    end = no
                    break
            if not key:
                return found + 1
        key_re = re.compile(r"^\s*[\"']?" + re.escape(re.sub(r"\[\d+\]$", "", key)) + r"[\"']?\s*=")
        for no in range(start, end):
            if key_re.match(self._lines[no]):
                return no + 1
        if tables:
            return start  # the table header line
        return None


class Section:
    """One TOML table with its location, read key by key."""

    def __init__(self, data: Mapping[str, Any], *, path: str, source: Source) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"expected a table, got {_typename(data)}",
                file=source.file,
                key=path or None,
                line=source.locate(path) if path else None,
            )
        self._data = dict(data)
        self.path = path
        self.source = source
        self._read: set[str] = set()

    # -- errors ---------------------------------------------------------------------
    def key_path(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str | None, message: str) -> ConfigError:
        """A :class:`ConfigError` located at ``key`` of this table (or the table)."""
        path = self.key_path(key) if key else self.path
        line = self.source.locate(path) if path else None
        return ConfigError(message, file=self.source.file, key=path or None, line=line)

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def keys(self) -> list[str]:
        return list(self._data)

    def data(self) -> dict[str, Any]:
        """The whole table, handed on to someone else who validates it (marks all read)."""
        self._read.update(self._data)
        return dict(self._data)

    def raw(self, key: str, default: Any = None) -> Any:
        self._read.add(key)
        return self._data.get(key, default)

    def _get(self, key: str, default: Any) -> Any:
        self._read.add(key)
        if key not in self._data:
            if default is _MISSING:
                raise self.error(key, "is required")
            return default
        return self._data[key]

    # -- typed getters -------------------------------------------------------------
    def get_str(self, key: str, default: Any = _MISSING, *, choices: Sequence[str] | None = None) -> Any:
        value = self._get(key, default)
        if value is default and key not in self._data:
            return value
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {_typename(value)}")
        if choices is not None and value not in choices:
            raise self.error(key, f"must be one of {', '.join(map(repr, choices))}, got {value!r}")
        return value

    def get_int(self, key: str, default: Any = _MISSING, *, min: int | None = None, max: int | None = None) -> Any:
        value = self._get(key, default)
        if value is default and key not in self._data:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected an integer, got {_typename(value)}")
        if (min is not None and value < min) or (max is not None and value > max):
            raise self.error(key, f"must be between {min} and {max}, got {value}")
        return value

    def get_bool(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if value is default and key not in self._data:
            return value
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {_typename(value)}")
        return value

    def get_duration(
        self,
        key: str,
        default: Any = _MISSING,
        *,
        min: float | None = None,
        max: float | None = None,
    ) -> Any:
        """Seconds from a duration string like ``"1s"`` or ``"150ms"``."""
        value = self._get(key, default)
        if value is default and key not in self._data:
            return value
        if not isinstance(value, str):
            raise self.error(key, f'expected a duration string such as "1s" or "200ms", got {value!r}')
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise self.error(key, str(exc)) from None
        if min is not None and seconds < min:
            raise self.error(key, f"must be at least {min:g}s, got {value!r}")
        if max is not None and seconds > max:
            raise self.error(key, f"must be at most {max:g}s, got {value!r}")
        return seconds

    def get_str_list(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if value is default and key not in self._data:
            return value
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(key, "expected a list of strings")
        return tuple(value)

    def get_argv(self, key: str, default: Any = _MISSING) -> Any:
        """A command as an argv list. Shell strings are refused on purpose."""
        value = self._get(key, default)
        if value is default and key not in self._data:
            return value
        if isinstance(value, str):
            raise self.error(
                key,
                "commands are argv lists, not shell strings: write "
                f"{[*value.split()]!r} (run a shell explicitly if you need one)",
            )
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise self.error(key, "expected a non-empty list of strings (argv)")
        return tuple(value)

    def get_table(self, key: str) -> Section | None:
        value = self._get(key, None)
        if value is None:
            return None
        return Section(value, path=self.key_path(key), source=self.source)

    def get_str_table(self, key: str) -> dict[str, str]:
        """A table of strings (``env = { A = "1" }``, ``headers = {...}``); empty when absent."""
        table = self.get_table(key)
        if table is None:
            return {}
        out = {name: table.get_str(name) for name in table.keys()}  # noqa: SIM118 - Section is not a dict
        table.finish()
        return out

    def get_tables(self, key: str) -> list[Section]:
        """An array of tables (``[[probe]]``)."""
        value = self._get(key, [])
        if isinstance(value, Mapping):
            value = [value]
        if not isinstance(value, list):
            raise self.error(key, f"expected an array of tables ([[{key}]]), got {_typename(value)}")
        return [Section(v, path=f"{self.key_path(key)}[{i}]", source=self.source) for i, v in enumerate(value)]

    def finish(self) -> None:
        """Reject keys that nobody read: they are typos or options of another backend."""
        unknown = [k for k in self._data if k not in self._read]
        if unknown:
            raise self.error(unknown[0], "unknown key")


def _typename(value: object) -> str:
    return {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "a boolean",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)
