"""Observations fed to the core: the backend's service status, probe results and the
carrier of tracked interfaces. Each is a task that turns one source into inputs."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import aclosing

import anyio

from ._driver import Driver
from ._errors import BackendError
from ._metrics import SupervisorMetrics
from .backends import ServiceBackend
from .probes import Probe
from .protocol import ServiceStatus

__all__ = ["probe_loop", "track_links", "watch_readiness", "watch_service"]

log = logging.getLogger("hasup")

_WATCH_BACKOFF = (0.1, 5.0)  # first and longest retry delay of a failed watch


async def watch_service(driver: Driver, backend: ServiceBackend) -> None:
    """Feed every status change the backend pushes (re-subscribing with backoff)."""
    first, longest = _WATCH_BACKOFF
    backoff = first
    while True:
        try:
            async with aclosing(backend.watch()) as statuses:
                async for status in statuses:
                    backoff = first
                    await _observed(driver, backend, status)
        except BackendError as exc:
            log.warning("service watch failed: %s; retrying in %.1f s", exc, backoff)
            await driver.input(lambda n, now: n.service_status(ServiceStatus.UNKNOWN, now))
        await anyio.sleep(backoff)
        backoff = min(backoff * 2, longest)


async def _observed(driver: Driver, backend: ServiceBackend, status: ServiceStatus) -> None:
    node = driver.node
    if status is not node.service and status is not ServiceStatus.FAILED:
        # A polled status may have been read before our own action finished:
        # confirm anything that contradicts the core before acting on it.
        try:
            status = await backend.status()
        except BackendError:
            status = ServiceStatus.UNKNOWN
    if status is not node.service:
        log.info("service is %s", status.value)
        await driver.input(lambda n, now: n.service_status(status, now))


async def watch_readiness(driver: Driver, backend: ServiceBackend) -> None:
    """Warm standby: feed whether this node's standby could take over
    (``Node.standby_ready``), every ``poll_interval`` of the backend."""
    last: tuple[bool, str] | None = None
    while True:
        try:
            ready, detail = await backend.readiness()
        except BackendError as exc:
            ready, detail = False, str(exc)
        if (ready, detail) != last:
            if ready:
                log.info("standby ready")
            else:
                log.error("standby not ready: %s", detail)
            last = (ready, detail)
            await driver.input(lambda n, now: n.standby_ready(ready, now, detail))  # noqa: B023 - runs at once
        await anyio.sleep(backend.poll_interval)


async def probe_loop(driver: Driver, probe: Probe, metrics: SupervisorMetrics) -> None:
    """Run ``probe`` whenever the core wants it (``Node.wants_probe``), every interval."""
    options = probe.options
    while True:
        if driver.node.wants_probe(options.name, anyio.current_time()):
            began = anyio.current_time()
            ok, detail = False, "timed out"
            with anyio.move_on_after(options.timeout):
                try:
                    outcome = await probe.check()
                    ok, detail = outcome.ok, outcome.detail
                except Exception as exc:
                    ok, detail = False, f"probe error: {exc!r}"
            took = anyio.current_time() - began
            driver.stats[f"probe_{options.name}_seconds"] = round(took, 6)
            metrics.probe(options.name, ok, took)
            driver.count(f"probe_{options.name}_{'ok' if ok else 'failed'}")
            if not ok:
                log.info("probe %s failed: %s", options.name, detail)
            await driver.input(lambda n, now: n.probe_result(options.name, ok, now))  # noqa: B023 - runs at once
        await anyio.sleep(options.interval)


async def track_links(driver: Driver, interfaces: Sequence[str]) -> None:
    """Feed the carrier of the tracked interfaces (netlink)."""
    from ._linkwatch import LinkWatcher

    watcher = LinkWatcher(tuple(interfaces))
    async with aclosing(watcher.watch()) as changes:
        async for up, detail in changes:
            log.log(logging.INFO if up else logging.ERROR, "%s", detail)
            await driver.set_tracked_links(up)
