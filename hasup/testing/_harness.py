"""Supervisors under test: a config-text builder and a harness that boots, kills and
restarts :class:`~hasup.Supervisor` instances in one task group.

Only the supervisor's public API is used (constructor, ``run()``, ``state``,
``shutdown()``), so the harness keeps working whatever the supervisor does inside.
"""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from ..config import Config, parse_config
from ..protocol import State
from ..supervisor import Supervisor
from ._memory import MemoryNetwork, MemoryStateFile, MockBackend

__all__ = ["TEST_KEY", "SupervisorHarness", "config_text", "pair_configs", "supervisor_harness", "toml_value"]

#: The group key :func:`config_text` uses unless told otherwise (tests only!).
TEST_KEY = "0123456789abcdef0123456789abcdef"

TomlValue = str | int | float | bool | Path | Sequence["TomlValue"]


def toml_value(value: TomlValue) -> str:
    """``value`` as a TOML literal (strings and paths quoted, lists bracketed)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        text = str(value).replace("\\", "\\\\").replace('"', '\\"')
        return f'"{text}"'
    return "[" + ", ".join(toml_value(v) for v in value) + "]"


def _table(body: str | Mapping[str, TomlValue]) -> str:
    if isinstance(body, str):
        return textwrap.dedent(body).strip()
    return "\n".join(f"{key} = {toml_value(value)}" for key, value in body.items())


def config_text(
    name: str,
    priority: int,
    listen: str,
    peers: Sequence[str],
    *,
    advert: str = "1s",
    group_id: int = 7,
    key: str | None = TEST_KEY,
    key_file: str | Path | None = None,
    state_dir: str | Path = "/nonexistent",
    extra_node: str = "",
    extra_group: str = "",
    service: str | Mapping[str, TomlValue] = 'backend = "mock"',
    probes: str = "",
    status: str | Mapping[str, TomlValue] = 'listen = "off"',
    coordinator: Mapping[str, TomlValue] | None = None,
    extra: str = "",
) -> str:
    """The text of a ``hasup.toml`` for one node of a test group.

    ``listen`` and ``peers`` are ``host:port`` strings (``[v6]:port`` for IPv6). The
    ``[service]`` and ``[status]`` tables, and ``[coordinator]`` if given, are TOML
    text or a mapping of keys to values. ``key_file`` replaces the inline test
    ``key``. ``extra_node``/``extra_group`` are lines added to those tables;
    ``probes`` and ``extra`` are whole tables appended (``[[probe]]``, ``[[sync]]``,
    ``[[notify]]``...). The default service is the ``mock`` backend, the status
    endpoint is off and the state directory does not exist (for in-memory state)::

        text = config_text("edge-a", 100, "127.0.0.1:5405", ["127.0.0.1:5406"], advert="100ms")
        config = hasup.config.parse_config(text)
    """
    if key_file is not None:
        secret = f"key_file = {toml_value(key_file)}"
    elif key is not None:
        secret = f"key = {toml_value(key)}"
    else:
        secret = ""
    lines = [
        "[node]",
        f"name = {toml_value(name)}",
        f"priority = {priority}",
        f"state_dir = {toml_value(state_dir)}",
        textwrap.dedent(extra_node).strip(),
        "[group]",
        f"id = {group_id}",
        f"listen = {toml_value(listen)}",
        f"peers = {toml_value(list(peers))}",
        f"advert_interval = {toml_value(advert)}",
        secret,
        textwrap.dedent(extra_group).strip(),
        "[service]",
        _table(service),
        textwrap.dedent(probes).strip(),
        "[status]",
        _table(status),
    ]
    if coordinator is not None:
        lines += ["[coordinator]", _table(coordinator)]
    lines.append(textwrap.dedent(extra).strip())
    return "\n".join(line for line in lines if line) + "\n"


def pair_configs(advert: str = "1s", **kw: Any) -> tuple[Config, Config]:
    """Two parsed configs: ``edge-a`` (priority 100, 10.0.0.1:5405) and ``edge-b``
    (priority 90, 10.0.0.2:5405), peers of each other, for a :class:`MemoryNetwork`.
    ``kw`` goes to :func:`config_text` for both."""
    a = parse_config(config_text("edge-a", 100, "10.0.0.1:5405", ["10.0.0.2:5405"], advert=advert, **kw))
    b = parse_config(config_text("edge-b", 90, "10.0.0.2:5405", ["10.0.0.1:5405"], advert=advert, **kw))
    return a, b


class SupervisorHarness:
    """Supervisors with :class:`MockBackend` services in one task group.

    Each node, by name, keeps its backend and its :class:`MemoryStateFile` across
    :meth:`kill` and a new :meth:`boot`, as a machine keeps its service and disk
    across a restart of hasup. With a :class:`MemoryNetwork` the supervisors talk
    through it; without one (``network=None``) they bind the real UDP sockets of their
    configs. Create it with :func:`supervisor_harness`.
    """

    def __init__(self, tg: anyio.abc.TaskGroup, network: MemoryNetwork | None = None) -> None:
        self.network = network
        #: The supervisor last booted under each name.
        self.supervisors: dict[str, Supervisor] = {}
        self.backends: dict[str, MockBackend] = {}
        self.state_files: dict[str, MemoryStateFile] = {}
        #: ``(time, names)`` of every sample in which two or more services ran
        #: (recorded only with ``no_overlap=True``).
        self.overlaps: list[tuple[float, list[str]]] = []
        self._tg = tg
        self._scopes: dict[str, anyio.CancelScope] = {}
        self._down: set[str] = set()

    def __getitem__(self, name: str) -> Supervisor:
        return self.supervisors[name]

    async def boot(
        self, config: Config, backend: MockBackend | None = None, *, state_file: MemoryStateFile | None = None
    ) -> Supervisor:
        """Start a supervisor for ``config`` and return it once its socket is bound.

        The node's previous backend and state file are reused unless given (a new
        node gets ``MockBackend()`` and an empty ``MemoryStateFile()``).
        """
        name = config.node.name
        backend = backend or self.backends.get(name) or MockBackend()
        self.backends[name] = backend
        if state_file is not None:
            self.state_files[name] = state_file
        state = self.state_files.setdefault(name, MemoryStateFile())
        transport = self.network.endpoint(config.group.listen) if self.network is not None else None
        sup = Supervisor(config, backend=backend, probes=None, transport=transport, state_file=state)
        scope = anyio.CancelScope()
        self.supervisors[name] = sup
        self._scopes[name] = scope
        self._down.discard(name)

        async def runner(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            with scope:
                await sup.run(task_status=task_status)

        await self._tg.start(runner)
        return sup

    def kill(self, name: str, *, service_dies: bool = True) -> None:
        """Power off a node: its supervisor stops at once, without resigning (and its
        service with it, unless ``service_dies=False``: a ``kill -9`` of hasup only)."""
        self._scopes[name].cancel()
        self._down.add(name)
        if service_dies:
            self.backends[name].running = False

    async def shutdown(self, name: str, *, within: float = 10.0) -> None:
        """Graceful exit of one node (stops its service, resigns); fails after ``within`` s."""
        with anyio.fail_after(within):
            await self.supervisors[name].shutdown()
        self._down.add(name)

    def up(self) -> list[str]:
        """Names of the nodes booted and neither killed nor shut down through the harness."""
        return [n for n in self.supervisors if n not in self._down]

    def running(self) -> list[str]:
        """Names of the nodes whose service runs now."""
        return [n for n, b in self.backends.items() if b.running]

    def masters(self) -> list[str]:
        """Names of the live nodes in state MASTER."""
        return [n for n in self.up() if self.supervisors[n].state == State.MASTER]

    def one_master(self) -> bool:
        """Exactly one live MASTER, and its service is the only one running."""
        masters = self.masters()
        return len(masters) == 1 and self.running() == masters

    def history(self, name: str, what: str) -> list[float]:
        """Times of ``what`` (``"start"``, ``"stop"``, ``"stopped"``, ``"crash"``) in a
        node's backend history, oldest first."""
        return [t for t, w in self.backends[name].history if w == what]

    def last(self, name: str, what: str) -> float:
        """The time of the node's latest ``what`` (see :meth:`history`)."""
        times = self.history(name, what)
        if not times:
            raise LookupError(f"{name}'s backend has no {what!r} in its history")
        return times[-1]

    async def _sample(self, interval: float) -> None:
        while True:
            running = self.running()
            if len(running) > 1:
                self.overlaps.append((anyio.current_time(), running))
            await anyio.sleep(interval)


@asynccontextmanager
async def supervisor_harness(
    network: MemoryNetwork | None = None,
    *,
    no_overlap: bool = False,
    sample_interval: float = 0.002,
    shutdown_on_exit: bool = False,
) -> AsyncIterator[SupervisorHarness]:
    """A :class:`SupervisorHarness` whose supervisors stop when the block ends.

    ``no_overlap=True`` checks the group's safety invariant throughout: every
    ``sample_interval`` seconds it records the moments two services ran at once, and
    the block fails with :class:`AssertionError` on exit if there was one.
    ``shutdown_on_exit=True`` shuts the live supervisors down gracefully before
    cancelling them. On trio's ``MockClock`` everything runs on virtual time::

        async with supervisor_harness(MemoryNetwork()) as h:
            a = await h.boot(cfg_a)
            b = await h.boot(cfg_b)
            await a.wait_state(State.MASTER)
            h.kill("edge-a")
            await b.wait_state(State.MASTER)
    """
    async with anyio.create_task_group() as tg:
        h = SupervisorHarness(tg, network)
        if no_overlap:
            tg.start_soon(h._sample, sample_interval)
        try:
            yield h
            if shutdown_on_exit:
                for name in h.up():
                    if h.supervisors[name].state is not State.INIT:
                        with anyio.move_on_after(10):
                            await h.supervisors[name].shutdown()
        finally:
            tg.cancel_scope.cancel()
    if no_overlap and h.overlaps:
        raise AssertionError(f"two services running at once: {h.overlaps[:5]}")
