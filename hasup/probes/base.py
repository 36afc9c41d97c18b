"""The health probe interface and the options every probe shares."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import attrs

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
class ProbeOptions:
    """Scheduling and interpretation options shared by all probe types."""

    name: str
    interval: float = 5.0
    timeout: float = 2.0
    rise: int = 2
    fall: int = 3
    start_period: float = 0.0
    #: "active": only while this node holds the service; "always": all the time.
    when: str = "active"
    #: Adjust effective priority by this much while failing instead of FAULT.
    weight: int | None = None
    #: A witness gates isolation decisions (ARCHITECTURE §2 rule 9).
    witness: bool = False

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
