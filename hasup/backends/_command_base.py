"""What both modes of the ``command`` backend share: :class:`CommandBackend`.

It is the class that ``backend = "command"``, the configuration and the Python API
build: it parses and validates the options of both modes, and constructing it gives an
instance of the mode's subclass — :class:`~hasup.backends._commands.CommandsBackend`
(``start``/``stop``/``status`` commands) or
:class:`~hasup.backends._managed.ManagedProcessBackend` (``run = [...]``). The subclasses
register themselves (``class ...(CommandBackend, mode="run")``), so this module does not
import them; :mod:`hasup.backends.command` imports all of them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, cast

import anyio

from .._addr import parse_address
from ._process import process_environment
from .base import ServiceBackend

if TYPE_CHECKING:
    from typing import Self

    from .._section import Section

__all__ = ["CommandBackend"]


class CommandBackend(ServiceBackend):
    """Start, stop and observe a service with argv commands, or run it directly.

    Exactly one of ``run`` (managed process) or ``start`` + ``stop`` (commands) must be
    given; the instance is of the matching subclass
    (:class:`~hasup.backends._managed.ManagedProcessBackend` or
    :class:`~hasup.backends._commands.CommandsBackend`). ``status`` (commands mode) is
    optional but strongly recommended: without it hasup trusts the exit codes of
    ``start``/``stop`` and cannot notice a crash. Durations are seconds.

    Managed mode: with ``bind_to_hasup=False`` (the default) the program outlives hasup;
    give ``pid_file`` so that a restarted hasup adopts it (``Config.make_backend``
    defaults it to ``<state_dir>/service.pid``). ``bind_to_hasup=True`` kills it with
    hasup (fencing).

    :meth:`start` puts ``HASUP_TERM=<term>`` (the fencing token) in the environment of
    the start command or of the managed program.
    """

    kind: ClassVar[str] = "command"

    #: The mode subclasses, by the option that selects them ("run" or "start").
    _modes: ClassVar[dict[str, type[CommandBackend]]] = {}

    def __init_subclass__(cls, *, mode: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if mode is not None:
            CommandBackend._modes[mode] = cls

    def __new__(cls, *, run: Sequence[str] | None = None, **options: Any) -> Self:
        mode = CommandBackend._modes.get("run" if run is not None else "start")
        if mode is None:  # pragma: no cover - hasup.backends.command imports both modes
            raise TypeError("the command backend's modes are registered by importing hasup.backends.command")
        if cls is CommandBackend:
            return cast("Self", object.__new__(mode))
        if not issubclass(cls, mode):
            needs = "start and stop, not run" if run is not None else "run = [...]"
            raise ValueError(f"{cls.__name__} takes {needs}")
        return object.__new__(cls)

    def __init__(
        self,
        *,
        run: Sequence[str] | None = None,
        start: Sequence[str] | None = None,
        stop: Sequence[str] | None = None,
        status: Sequence[str] | None = None,
        kill: Sequence[str] | None = None,
        ready_tcp: str | None = None,
        start_timeout: float = 60.0,
        stop_timeout: float = 30.0,
        status_timeout: float = 5.0,
        poll_interval: float = 1.0,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        output: str = "inherit",
        start_grace: float = 0.05,
        bind_to_hasup: bool = False,
        pid_file: str | None = None,
    ) -> None:
        if run is not None:
            extra = [n for n, v in (("start", start), ("stop", stop), ("status", status), ("kill", kill)) if v]
            if extra:
                raise ValueError(f"run cannot be combined with {', '.join(extra)}")
        elif start is None or stop is None:
            raise ValueError("give either run, or both start and stop")
        else:
            for name, value in (("ready_tcp", ready_tcp), ("bind_to_hasup", bind_to_hasup), ("pid_file", pid_file)):
                if value:
                    raise ValueError(f"{name} is only for run (managed process) mode")
        for name, argv in (
            ("run", run),
            ("start", start),
            ("stop", stop),
            ("status", status),
            ("kill", kill),
        ):
            if argv is not None and (isinstance(argv, str) or not argv):
                raise ValueError(f"{name} must be a non-empty argv list, not a shell string")
        if output not in ("inherit", "discard"):
            raise ValueError('output must be "inherit" or "discard"')
        self.run_argv = tuple(run) if run is not None else None
        self.start_argv = tuple(start) if start is not None else None
        self.stop_argv = tuple(stop) if stop is not None else None
        self.status_argv = tuple(status) if status is not None else None
        self.kill_argv = tuple(kill) if kill is not None else None
        self.ready_tcp = parse_address(ready_tcp) if ready_tcp is not None else None
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.status_timeout = status_timeout
        self.poll_interval = poll_interval
        self.env = dict(env or {})
        self.cwd = cwd
        self.output = output
        self.start_grace = start_grace
        self.bind_to_hasup = bind_to_hasup
        self.pid_file = pid_file
        # anyio primitives are created lazily: from_config may run outside an event loop.
        self._lock_obj: anyio.Lock | None = None

    # -- configuration ------------------------------------------------------------------
    @classmethod
    def from_config(cls, section: Section) -> Self:
        section.raw("backend")
        run = section.get_argv("run", None)
        commands = {key: section.get_argv(key, None) for key in ("start", "stop", "status", "kill")}
        ready_tcp = section.get_str("ready_tcp", None)
        bind_to_hasup = section.get_bool("bind_to_hasup", False)
        pid_file = section.get_str("pid_file", None)
        if run is not None:
            for key, argv in commands.items():
                if argv is not None:
                    raise section.error(key, "cannot be combined with run = [...] (run: hasup runs the program itself)")
        else:
            if commands["start"] is None and commands["stop"] is None:
                raise section.error(
                    None,
                    'the command backend needs run = ["program", ...] (hasup runs it) '
                    "or start = [...], stop = [...] and status = [...]",
                )
            for key, other in (("start", "stop"), ("stop", "start")):
                if commands[key] is None:
                    raise section.error(key, f"is required with {other} = [...]")
            if ready_tcp is not None:
                raise section.error("ready_tcp", "is only for run = [...] (with start, use a status command)")
            if bind_to_hasup:
                raise section.error("bind_to_hasup", "is only for run = [...] (with start, bind the units instead)")
            if pid_file is not None:
                raise section.error("pid_file", "is only for run = [...]")
        if pid_file is not None and not pid_file:
            raise section.error("pid_file", "must not be empty")
        if ready_tcp is not None:
            try:
                parse_address(ready_tcp)
            except ValueError as exc:
                raise section.error("ready_tcp", str(exc)) from None
        env = section.get_str_table("env")
        cwd = section.get_str("cwd", None)
        backend = cls(
            run=run,
            start=commands["start"],
            stop=commands["stop"],
            status=commands["status"],
            kill=commands["kill"],
            ready_tcp=ready_tcp,
            start_timeout=section.get_duration("start_timeout", 60.0, min=0.001),
            stop_timeout=section.get_duration("stop_timeout", 30.0, min=0.001),
            status_timeout=section.get_duration("status_timeout", 5.0, min=0.001),
            poll_interval=section.get_duration("poll_interval", 1.0, min=0.01),
            env=env,
            cwd=cwd,
            output=section.get_str("output", "inherit", choices=("inherit", "discard")),
            bind_to_hasup=bind_to_hasup,
            pid_file=pid_file,
        )
        section.finish()
        return backend

    @property
    def pid(self) -> int | None:
        """Managed mode: the process group id of the running program (None otherwise)."""
        return None

    @property
    def service_pid(self) -> int | None:
        """Managed mode: the pid of the program itself (None otherwise)."""
        return None

    async def check(self) -> list[str]:
        problems = []
        path = self._environment().get("PATH", os.defpath)
        for name, argv in (
            ("run", self.run_argv),
            ("start", self.start_argv),
            ("stop", self.stop_argv),
            ("status", self.status_argv),
            ("kill", self.kill_argv),
        ):
            if argv is not None and shutil.which(argv[0], path=path) is None:
                problems.append(f"{name} command not found or not executable: {argv[0]!r}")
        if self.cwd is not None and not await anyio.Path(self.cwd).is_dir():
            problems.append(f"cwd is not a directory: {self.cwd!r}")
        return problems

    # -- shared by both modes ----------------------------------------------------------
    def _environment(self, term: int | None = None) -> dict[str, str]:
        return process_environment(self.env, term)

    async def start(self, *, term: int = 0) -> None:
        async with self._lock():  # one start/stop at a time, in order
            await self._start(term)

    async def stop(self) -> None:
        async with self._lock():
            await self._stop()

    async def _start(self, term: int) -> None:
        raise NotImplementedError  # the mode's own start (see _commands, _managed)

    async def _stop(self) -> None:
        raise NotImplementedError

    def _lock(self) -> anyio.Lock:
        """Serialises start() and stop()."""
        if self._lock_obj is None:
            self._lock_obj = anyio.Lock()
        return self._lock_obj
