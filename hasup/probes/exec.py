"""``type = "exec"``: run a command (argv, no shell); exit status 0 means healthy."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from ..backends.command import run_command
from .base import Probe, ProbeOptions, ProbeOutcome

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Self

    from .._section import Section

__all__ = ["ExecProbe"]


class ExecProbe(Probe):
    """Run ``command``; healthy on exit status 0 within ``options.timeout``.

    The command runs in its own session; on timeout it and everything it started
    (its process group) are killed, and the check counts as failed.
    """

    kind: ClassVar[str] = "exec"

    def __init__(self, options: ProbeOptions, *, command: Sequence[str]) -> None:
        super().__init__(options)
        if isinstance(command, str) or not command:
            raise ValueError("command must be a non-empty argv list, not a shell string")
        self.command = tuple(command)

    @classmethod
    def from_config(cls, section: Section, options: ProbeOptions) -> Self:
        probe = cls(options, command=section.get_argv("command"))
        section.finish()
        return probe

    async def check(self) -> ProbeOutcome:
        try:
            result = await run_command(self.command, self.options.timeout, what="probe")
        except OSError as exc:
            return ProbeOutcome(False, f"cannot run {self.command[0]!r}: {exc}")
        output = f": {result.output}" if result.output else ""
        if result.timed_out:
            return ProbeOutcome(False, f"timed out after {self.options.timeout:g}s (killed){output}")
        if result.returncode == 0:
            return ProbeOutcome(True, "exit status 0")
        if result.returncode < 0:
            return ProbeOutcome(False, f"killed by signal {-result.returncode}{output}")
        return ProbeOutcome(False, f"exit status {result.returncode}{output}")

    def describe(self) -> str:
        return f"exec probe {self.options.name!r}: {' '.join(self.command)}"
