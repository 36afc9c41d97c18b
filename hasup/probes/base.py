"""The health probe interface and the options every probe shares."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import attrs

from ..protocol import ProbeSpec

if TYPE_CHECKING:
    from typing import Self

    from .._section import Section

__all__ = ["Probe", "ProbeOptions", "ProbeOutcome"]


@attrs.frozen
class ProbeOutcome:
    """The result of one probe run."""

    ok: bool
    detail: str = ""


@attrs.frozen
class ProbeOptions(ProbeSpec):
    """Options shared by all probe types: what the core needs to interpret results
    (the fields of :class:`~hasup.protocol.ProbeSpec`: name, rise, fall,
    start_period, when, weight, witness) plus the supervisor's scheduling."""

    interval: float = 5.0
    timeout: float = 2.0

    def spec(self) -> ProbeSpec:
        """The core's part alone (what :class:`~hasup.protocol.CoreConfig` holds)."""
        return ProbeSpec(**{f.name: getattr(self, f.name) for f in attrs.fields(ProbeSpec)})

    @classmethod
    def from_section(cls, section: Section) -> ProbeOptions:
        name = section.get_str("name")
        when = section.get_str("when", "active", choices=("active", "always"))
        weight = section.get_int("weight", None, min=-253, max=253)
        witness = section.get_bool("witness", False)
        if weight is not None and when != "always":
            raise section.error("weight", 'is allowed only on probes with when = "always"')
        if witness and when != "always":
            raise section.error("witness", 'a witness probe must have when = "always"')
        interval = section.get_duration("interval", 5.0, min=0.01)
        timeout = section.get_duration("timeout", min(2.0, interval), min=0.001)
        if timeout > interval:
            raise section.error("timeout", f"must not be longer than interval ({interval:g}s)")
        return cls(
            name=name,
            interval=interval,
            timeout=timeout,
            rise=section.get_int("rise", 2, min=1, max=100),
            fall=section.get_int("fall", 3, min=1, max=100),
            start_period=section.get_duration("start_period", 0.0, min=0.0),
            when=when,
            weight=weight,
            witness=witness,
        )


class Probe:
    """One health check. :meth:`check` must not raise for an unhealthy service:
    it returns ``ProbeOutcome(ok=False, detail=...)``. The supervisor enforces
    ``timeout`` around it (a hung probe never blocks heartbeats)."""

    kind: ClassVar[str] = ""

    def __init__(self, options: ProbeOptions) -> None:
        self.options = options

    @classmethod
    def from_config(cls, section: Section, options: ProbeOptions) -> Self:
        """Build from the probe's ``[[probe]]`` table (type-specific keys)."""
        raise NotImplementedError

    async def check(self) -> ProbeOutcome:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release resources (HTTP client, ...)."""

    def describe(self) -> str:
        return f"{self.kind} probe {self.options.name!r}"
