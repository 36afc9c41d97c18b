"""``[[notify]]`` hooks: commands run on state changes, in order, one at a time.

Hooks run in their own task from a queue, so a slow or failing hook never delays a
failover; each is bounded by its timeout, and failures are logged and counted.
"""

from __future__ import annotations

import logging
import math

import anyio
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._section import Section
from .backends._process import process_environment, run_command
from .protocol import State

__all__ = ["HookRunner", "NotifyHook", "parse_hooks"]

log = logging.getLogger("hasup")

_ALIASES = {"STOP": "STOPPING"}


@attrs.frozen
class NotifyHook:
    on: frozenset[State]
    command: tuple[str, ...]
    timeout: float = 10.0


def parse_hooks(sections: list[Section]) -> tuple[NotifyHook, ...]:
    hooks = []
    for sub in sections:
        names = sub.get_str_list("on")
        states = set()
        for name in names:
            key = _ALIASES.get(name.upper(), name.upper())
            if key not in State.__members__:
                raise sub.error("on", f"unknown state {name!r} (use MASTER, BACKUP, FAULT, STOP, ...)")
            states.add(State[key])
        if not states:
            raise sub.error("on", "needs at least one state")
        hooks.append(
            NotifyHook(
                frozenset(states),
                sub.get_argv("command"),
                sub.get_duration("timeout", 10.0, min=0.01, max=3600.0),
            )
        )
        sub.finish()
    return tuple(hooks)


@attrs.frozen
class HookEvent:
    state: State
    previous: State
    node: str
    group: int
    term: int
    reason: str


class HookRunner:
    """Queue of hook invocations processed strictly in order."""

    def __init__(self, hooks: tuple[NotifyHook, ...]) -> None:
        self.hooks = hooks
        self.failures = 0
        self.runs = 0
        self._send: MemoryObjectSendStream[HookEvent]
        self._receive: MemoryObjectReceiveStream[HookEvent]
        self._send, self._receive = anyio.create_memory_object_stream[HookEvent](math.inf)

    def submit(self, event: HookEvent) -> None:
        if any(event.state in h.on for h in self.hooks):
            self._send.send_nowait(event)

    async def run(self) -> None:
        with self._send, self._receive:
            async for event in self._receive:
                for hook in self.hooks:
                    if event.state in hook.on:
                        await self._invoke(hook, event)

    def close(self) -> None:
        """Drop what is queued (for a supervisor that stops before :meth:`run` began)."""
        self._send.close()
        self._receive.close()

    async def _invoke(self, hook: NotifyHook, event: HookEvent) -> None:
        env = process_environment(
            {
                "HASUP_STATE": event.state.name,
                "HASUP_PREVIOUS_STATE": event.previous.name,
                "HASUP_NODE": event.node,
                "HASUP_GROUP": str(event.group),
                "HASUP_TERM": str(event.term),
                "HASUP_REASON": event.reason,
            }
        )
        self.runs += 1
        try:
            # in its own session: a timeout kills the hook and everything it started
            result = await run_command(hook.command, hook.timeout, env=env, what="notify hook")
        except OSError as exc:
            self.failures += 1
            log.error("notify hook %s could not run: %s", hook.command[0], exc)
            return
        if result.timed_out:
            self.failures += 1
            log.error("notify hook %s timed out after %g s (its group was killed)", hook.command[0], hook.timeout)
        elif result.returncode != 0:
            self.failures += 1
            tail = result.output.strip().splitlines()[-3:]
            log.error("notify hook %s exited %d: %s", hook.command[0], result.returncode, " | ".join(tail))
        else:
            log.info("notify hook %s ran for %s", hook.command[0], event.state.name)
