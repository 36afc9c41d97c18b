"""What a conversion produces and reports: the result, the traps, and the context the
translators share (warnings, traps, script lookup)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ._conf import Loc

__all__ = ["Context", "ImportResult", "Trap"]


@dataclass(frozen=True)
class Trap:
    """A known problem of the keepalived recipe found in the input, and hasup's answer."""

    code: str
    where: str  # "file:line"
    problem: str
    instead: str

    def __str__(self) -> str:
        return f"{self.where}: {self.problem} hasup: {self.instead}"


@dataclass
class ImportResult:
    """The converted configuration: ``toml`` (commented text), ``warnings``, ``traps``."""

    toml: str
    instance: str
    warnings: list[str] = field(default_factory=list)
    traps: list[Trap] = field(default_factory=list)


class Context:
    """The conversion of one keepalived.conf: the warnings and traps found so far, and
    where the scripts it names are read from."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.base_dir = os.path.dirname(os.path.abspath(path))
        self.warnings: list[str] = []
        self.traps: list[Trap] = []

    def warn(self, where: Loc | str, message: str) -> None:
        self.warnings.append(f"{where}: {message}")

    def trap(self, code: str, where: Loc | str, problem: str, instead: str) -> None:
        self.traps.append(Trap(code, str(where), problem, instead))

    def read_script(self, path: str) -> tuple[str, str] | None:
        """Text of a script named in the config: at its path, else next to keepalived.conf
        (for a copied /etc/keepalived directory). Returns (where it was read, text)."""
        if "/" not in path:
            return None  # a program found through $PATH, not a script of this configuration
        candidates = [path]
        if os.path.isabs(path):
            candidates.append(os.path.join(self.base_dir, os.path.basename(path)))
        else:
            candidates.insert(0, os.path.join(self.base_dir, path))
        for cand in candidates:
            try:
                data = Path(cand).read_bytes()
            except OSError:
                continue
            if b"\0" in data[:4096]:
                return None  # a binary program, not a script
            return cand, data.decode("utf-8", errors="replace")
        return None
