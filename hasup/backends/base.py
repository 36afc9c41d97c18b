"""The service backend interface: start, stop, status and watch one service.

Modelled on ``httpx/_transports/base.py``: a plain base class, no plugin machinery.
A backend maps its third-party exceptions to :class:`~hasup.BackendError` subclasses
once, at this boundary (``raise BackendUnavailable(...) from exc``).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, ClassVar

import anyio
from anyio.abc import AsyncResource

from ..protocol._enums import ServiceStatus

if TYPE_CHECKING:
    from typing import Self

    from .._section import Section

__all__ = ["ServiceBackend", "ServiceStatus"]


class ServiceBackend(AsyncResource):
    """Start, stop and observe one service.

    Contract every implementation keeps:

    * :meth:`start` returns only when the service runs (and is healthy, where the
      backend can tell); otherwise it raises :class:`~hasup.BackendError`
      (usually :class:`~hasup.ServiceFailed`) carrying the reason.
    * :meth:`stop` returns only when the service is confirmed stopped. It is
      idempotent, gives the service ``stop_timeout`` to exit and then kills it. If it
      cannot confirm the stop it raises: the supervisor then keeps the node a holder
      (an outage is preferred to two copies running).
    * :meth:`status` asks the backend now; :meth:`watch` yields every change it
      notices (event-driven backends push; the default polls :meth:`status`).
    """

    #: The ``[service] backend = "..."`` name.
    kind: ClassVar[str] = ""
    #: Warm standby backend: the service runs on every node, :meth:`start` *promotes*
    #: this node's copy (makes it the active one) and :meth:`stop` *demotes* it (it
    #: keeps running as a standby). :meth:`status` then reports the promotion
    #: (RUNNING = promoted, STOPPED = standby or not running at all) and
    #: :meth:`readiness` whether the standby could take over.
    warm: ClassVar[bool] = False
    #: Poll period of the default :meth:`watch`.
    poll_interval: float = 1.0
    #: How long :meth:`start` may take before it counts as failed (the supervisor's
    #: bound around it, and the core's ``start_timeout``); backends set their own.
    start_timeout: float = 60.0
    #: How long the service gets to exit on :meth:`stop` before it is killed.
    stop_timeout: float = 30.0

    @classmethod
    def from_config(cls, section: Section) -> Self:
        """Build the backend from its ``[service]`` table. Raise ``ConfigError``."""
        raise NotImplementedError

    async def start(self, *, term: int = 0) -> None:
        """Start the service (see the contract above).

        ``term`` is the election term of this holding, a monotonically increasing
        fencing token: a node that claims the service takes a term higher than any it
        has seen (with ``[coordinator]``, the coordinator's token). A backend hands it
        to the service where it can (the ``command`` backend as ``HASUP_TERM``, the
        ``docker`` backend as a label of the containers it creates), so that the
        service, or the store it writes to, can reject writes carrying an older term
        than one it has seen: a deposed holder that still runs cannot overwrite its
        successor's data. ``0``: no term (a call from outside the supervisor). See
        docs/backends.md.
        """
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def status(self) -> ServiceStatus:
        raise NotImplementedError

    async def watch(self) -> AsyncGenerator[ServiceStatus, None]:
        """Yield the service status whenever it changes (first value: the current one)."""
        last: ServiceStatus | None = None
        while True:
            current = await self.status()
            if current is not last:
                last = current
                yield current
            await anyio.sleep(self.poll_interval)

    async def health(self) -> tuple[bool, str]:
        """The backend's own view of the service's health, for ``type = "backend"``
        probes (Docker overrides this with the container's HEALTHCHECK status)."""
        status = await self.status()
        return status is ServiceStatus.RUNNING, status.value

    async def readiness(self) -> tuple[bool, str]:
        """Warm backends: whether the service process is up and able to take over
        (``(False, reason)`` otherwise). A node is eligible only while ready. Cold
        backends are always ready (the service is started on demand)."""
        return True, ""

    async def preflight(self) -> None:
        """At ``hasup run`` start-up: raise :class:`~hasup.ConfigError` for a mistake in
        the configuration that only the service can reveal (e.g. credentials it
        rejects), so that it is one line and exit 2, not a running node that can never
        serve. Anything that may be transient (the service not up yet) must not raise."""

    async def check(self) -> list[str]:
        """Problems ``hasup check`` should report (empty when all is well)."""
        return []

    async def aclose(self) -> None:
        """Release connections; never stops the service."""

    def describe(self) -> str:
        """One line for logs and ``hasup check``."""
        return self.kind
