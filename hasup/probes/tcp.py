"""``type = "tcp"``: healthy when a TCP connection to ``address`` succeeds."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import anyio

from .._addr import format_address, parse_address
from .base import Probe, ProbeOptions, ProbeOutcome

if TYPE_CHECKING:
    from typing import Self

    from .._section import Section

__all__ = ["TcpProbe"]


class TcpProbe(Probe):
    """Connect to ``address`` ("host:port", "[::1]:80") within ``options.timeout``."""

    kind: ClassVar[str] = "tcp"

    def __init__(self, options: ProbeOptions, *, address: str) -> None:
        super().__init__(options)
        self.host, self.port = parse_address(address)
        if self.port == 0:
            raise ValueError(f"{address!r}: port 0 cannot be probed")
        self.address = format_address(self.host, self.port)

    @classmethod
    def from_config(cls, section: Section, options: ProbeOptions) -> Self:
        address = section.get_str("address")
        try:
            probe = cls(options, address=address)
        except ValueError as exc:
            raise section.error("address", str(exc)) from None
        section.finish()
        return probe

    async def check(self) -> ProbeOutcome:
        with anyio.move_on_after(self.options.timeout):
            try:
                stream = await anyio.connect_tcp(self.host, self.port)
            except OSError as exc:
                return ProbeOutcome(False, f"cannot connect to {self.address}: {exc.strerror or exc}")
            await stream.aclose()
            return ProbeOutcome(True, f"connected to {self.address}")
        return ProbeOutcome(False, f"no connection to {self.address} within {self.options.timeout:g}s")

    def describe(self) -> str:
        return f"tcp probe {self.options.name!r}: {self.address}"
