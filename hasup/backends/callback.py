"""The ``callback`` backend: the service is managed by Python callables (embedding).

For programs that embed hasup and run the service themselves::

    backend = CallbackBackend(start=start_collector, stop=stop_collector, status=collector_status)
    async with Supervisor(config, backend=backend) as sup: ...

It cannot be configured from a file: there is nothing a TOML value could name.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import TYPE_CHECKING, ClassVar, NoReturn

from .._errors import BackendError, HasupError, ServiceFailed
from ..protocol._enums import ServiceStatus
from .base import ServiceBackend

if TYPE_CHECKING:
    from .._section import Section

__all__ = ["CallbackBackend"]


class CallbackBackend(ServiceBackend):
    """A backend whose operations are async callables supplied by the embedding program.

    * ``start()`` returns when the service runs, or raises. If it takes a ``term``
      parameter (``async def start(*, term: int)``), it gets the fencing token of the
      holding (see :meth:`ServiceBackend.start <hasup.backends.base.ServiceBackend.start>`);
      a ``start()`` without one is called without arguments, as before.
    * ``stop()`` returns when the service is confirmed stopped (idempotent), or raises.
    * ``status()`` returns a :class:`~hasup.ServiceStatus`.
    * ``watch()`` (optional) returns an async iterator of statuses, yielding the
      current one first and then every change; without it :meth:`watch` polls
      ``status()`` every ``poll_interval`` seconds.

    Exceptions other than :class:`~hasup.BackendError` are wrapped at this boundary:
    from ``start`` as :class:`~hasup.ServiceFailed`, from the others as
    :class:`~hasup.BackendError`, with the original as ``__cause__``.
    """

    kind: ClassVar[str] = "callback"

    def __init__(
        self,
        start: Callable[..., Awaitable[None]],
        stop: Callable[[], Awaitable[None]],
        status: Callable[[], Awaitable[ServiceStatus]],
        *,
        watch: Callable[[], AsyncIterator[ServiceStatus]] | None = None,
        poll_interval: float = 1.0,
        name: str | None = None,
    ) -> None:
        for label, fn in (("start", start), ("stop", stop), ("status", status), ("watch", watch)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{label} must be callable, got {type(fn).__name__}")
        self._start = start
        self._start_takes_term = _takes_term(start)
        self._stop = stop
        self._status = status
        self._watch = watch
        self.poll_interval = poll_interval
        self.name = name or getattr(start, "__qualname__", "callbacks")

    @classmethod
    def from_config(cls, section: Section) -> NoReturn:
        raise section.error(
            "backend",
            'the "callback" backend is for the Python API only: pass '
            "CallbackBackend(start=..., stop=..., status=...) to the Supervisor in your program; "
            'in a configuration file use "command", "systemd" or "docker"',
        )

    async def start(self, *, term: int = 0) -> None:
        try:
            await (self._start(term=term) if self._start_takes_term else self._start())
        except HasupError:
            raise
        except Exception as exc:
            raise ServiceFailed(f"start callback failed: {exc!r}") from exc

    async def stop(self) -> None:
        try:
            await self._stop()
        except HasupError:
            raise
        except Exception as exc:
            raise BackendError(f"stop callback failed: {exc!r}") from exc

    async def status(self) -> ServiceStatus:
        try:
            result = await self._status()
        except HasupError:
            raise
        except Exception as exc:
            raise BackendError(f"status callback failed: {exc!r}") from exc
        return _checked(result)

    async def watch(self) -> AsyncGenerator[ServiceStatus, None]:
        if self._watch is None:
            # the base watch() is an async generator: close it with ours
            polling = super().watch()
            async with aclosing(polling) as statuses:
                async for status in statuses:
                    yield status
            return
        iterator = self._watch()
        try:
            while True:
                try:
                    status = await iterator.__anext__()
                except StopAsyncIteration:
                    return
                except HasupError:
                    raise
                except Exception as exc:
                    raise BackendError(f"watch callback failed: {exc!r}") from exc
                yield _checked(status)
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()

    def describe(self) -> str:
        return f"callback: {self.name}"


def _takes_term(fn: Callable[..., object]) -> bool:
    """True if ``fn`` has a parameter named ``term`` that can be given by keyword
    (a bare ``**kwargs`` does not count: such callbacks were written before the term)."""
    try:
        parameter = inspect.signature(fn).parameters.get("term")
    except (TypeError, ValueError):  # no signature (some builtins and C callables)
        return False
    return parameter is not None and parameter.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )


def _checked(result: object) -> ServiceStatus:
    if not isinstance(result, ServiceStatus):
        raise BackendError(f"status callback returned {result!r}, expected a hasup.ServiceStatus")
    return result
