"""The ``backend`` probe: the service backend's own view of health.

For the Docker backend this is the container's HEALTHCHECK status, so users need no
``curl`` in a probe. The supervisor passes the backend it built from ``[service]``::

    [[probe]]
    name = "container-health"
    type = "backend"
    interval = "1s"
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from .._errors import BackendError, ProbeError
from .base import Probe, ProbeOptions, ProbeOutcome

if TYPE_CHECKING:
    from typing import Self

    from .._section import Section
    from ..backends.base import ServiceBackend

__all__ = ["BackendProbe"]


class BackendProbe(Probe):
    """Healthy while ``backend.health()`` says so; a backend error counts as unhealthy."""

    kind: ClassVar[str] = "backend"

    def __init__(self, options: ProbeOptions, backend: ServiceBackend) -> None:
        super().__init__(options)
        self.backend = backend

    @classmethod
    def from_config(cls, section: Section, options: ProbeOptions, *, backend: ServiceBackend | None = None) -> Self:
        if backend is None:
            raise ProbeError(f'probe {options.name!r}: type = "backend" needs the service backend')
        section.finish()
        return cls(options, backend)

    async def check(self) -> ProbeOutcome:
        try:
            ok, detail = await self.backend.health()
        except BackendError as exc:
            return ProbeOutcome(ok=False, detail=str(exc))
        return ProbeOutcome(ok=ok, detail=detail)

    def describe(self) -> str:
        return f"backend probe {self.options.name!r} ({self.backend.describe()})"
