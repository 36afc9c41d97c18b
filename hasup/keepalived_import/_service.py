"""``notify_*`` scripts → ``[service]``: a script that runs ``systemctl``/``docker``
start and stop for one service becomes that backend; anything else a ``command`` backend
and ``[[notify]]`` hooks."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from ._conf import Stmt, error
from ._context import Context
from ._probes import Probe
from ._recognize import BENIGN, Action, service_actions
from ._shell import command_name, lex_script
from ._toml import quote, quote_list, wrap

__all__ = ["translate_service"]

_EVENTS = ("MASTER", "BACKUP", "FAULT", "STOP")


@dataclass
class _Notify:
    event: str
    stmt: Stmt
    argv: list[str]
    actions: list[tuple[Action, str]] = field(default_factory=list)  # (action, "file:line")
    other: list[str] = field(default_factory=list)  # "file:line: text"
    complex: list[str] = field(default_factory=list)
    unreadable: str | None = None
    read_from: str | None = None


def _notify(ctx: Context, event: str, stmt: Stmt) -> _Notify:
    tok = stmt.value("a script")
    try:
        argv = shlex.split(tok.text)
    except ValueError:
        raise error(tok.loc, f"{stmt.keyword}: cannot split {tok.text!r} (unbalanced quotes)") from None
    if not argv:
        raise error(tok.loc, f"{stmt.keyword}: empty command")
    if len(stmt.args) > 1:
        ctx.warn(
            stmt.loc,
            f"{stmt.keyword}: user/group {' '.join(a.text for a in stmt.args[1:])} not translated",
        )
    info = _Notify(event, stmt, argv)
    direct = service_actions(argv)
    if direct is not None:
        info.actions = [(a, str(stmt.loc)) for a in direct]
        return info
    prog, _ = command_name(argv)
    if prog in BENIGN:
        return info
    found = ctx.read_script(argv[0])
    if found is None:
        info.unreadable = f"{stmt.loc}: {stmt.keyword}: {argv[0]} could not be read (not a systemctl/docker call)"
        return info
    where, text = found
    info.read_from = where
    syms, bad = lex_script(text)
    for number in bad:
        info.complex.append(f"{where}:{number}")
    for sym in syms:
        at = f"{where}:{sym.line}"
        if sym.kind == "kw" or (sym.kind == "op" and sym.text != ";"):
            info.complex.append(f"{at}: {sym.text}")
            continue
        if sym.kind != "cmd":
            continue
        prog, args = command_name(sym.words)
        if prog in BENIGN:
            continue
        if prog in ("exit", "set") and all(not a.startswith("$") for a in args):
            continue
        if any("$" in w or "`" in w for w in sym.words):
            info.complex.append(f"{at}: {sym.text}")
            continue
        actions = service_actions(sym.words)
        if actions is None:
            info.other.append(f"{at}: {sym.text}")
        else:
            info.actions.extend((a, at) for a in actions)
    return info


def translate_service(
    ctx: Context, s: dict[str, Stmt], probes: list[Probe], instance: Stmt
) -> tuple[list[str], list[list[str]]]:
    """The ``[service]`` table and the ``[[notify]]`` hooks, from the ``notify_*`` scripts."""
    notifies: dict[str, _Notify] = {}
    for event in _EVENTS:
        key = f"notify_{event.lower()}"
        if key in s:
            notifies[event] = _notify(ctx, event, s[key])
    lines = ["[service]"]
    hooks: list[list[str]] = []
    if notifies:
        first = min(notifies.values(), key=lambda n: n.stmt.loc.line)
        ctx.trap(
            "notify-fire-and-forget",
            first.stmt.loc,
            "notify scripts are fire-and-forget: no ordering, no check that start/stop worked, the new "
            "master's start can overlap the old master's stop.",
            "the backend's start/stop are awaited and verified, a stop is confirmed (or "
            "escalated to a kill) "
            "before the peer starts, and hooks run in order, one at a time.",
        )
    usable = all(not n.complex and n.unreadable is None for n in notifies.values())
    targets = {(a.kind, a.target) for n in notifies.values() for a, _ in n.actions}
    master = notifies.get("MASTER")
    backend: tuple[str, str] | None = None
    if usable and len(targets) == 1 and master is not None and master.actions:
        backend = next(iter(targets))
    if backend is not None:
        kind, target = backend
        sources = ", ".join(f"{n.stmt.keyword} ({n.stmt.loc})" for n in notifies.values() if n.actions)
        lines.extend(wrap(f"from {sources}", "# "))
        for n in notifies.values():
            if n.read_from is not None and n.read_from != n.argv[0]:
                lines.append(f"# ({n.argv[0]} was read from {n.read_from})")
        if kind == "systemd":
            lines.append('backend = "systemd"')
            lines.append(f"unit = {quote(target)}")
            lines.append(
                f"# run `systemctl disable {target.removesuffix('.service')}` on every node: only hasup starts it"
            )
        else:
            lines.append('backend = "docker"')
            lines.append(f"container = {quote(target)}")
            lines.append('# give the container restart policy "no": only hasup starts it')
        _check_verbs(ctx, notifies)
        for event, info in notifies.items():
            for other in info.other:
                ctx.warn(
                    other.split(": ", 1)[0],
                    f"notify_{event.lower()}: {other.split(': ', 1)[1]!r} is not "
                    "translated (the backend replaces the systemctl/docker line only)",
                )
        hooks.extend(_hooks(ctx, notifies, set()))
        missing = [e for e in ("BACKUP", "FAULT") if e not in notifies]
        if missing:
            lines.extend(
                wrap(
                    f"NOTE: keepalived had no notify for {' or '.join(missing)} here, so the "
                    "service kept "
                    f"running in {'/'.join(missing)}; hasup stops it whenever this node is not MASTER "
                    "(one copy only).",
                    "# ",
                )
            )
        fault = notifies.get("FAULT")
        if fault is not None and probes and any(a.verb == "stop" for a, _ in fault.actions):
            ctx.trap(
                "fault-stops-probed-service",
                fault.stmt.loc,
                f"notify_fault stops {target}, which the health check "
                f"({', '.join(p.name for p in probes)}) "
                "probes: the check can never pass again, so the node stays FAULT until an "
                "operator steps in.",
                "FAULT stops the service too, but active probes run only while the node holds "
                "the service, "
                "and FAULT -> BACKUP happens after fault_holddown without depending on the service.",
            )
    else:
        command, used = _command_backend(ctx, notifies, instance)
        lines.extend(command)
        hooks.extend(_hooks(ctx, notifies, used))
    if not probes:
        lines.append(
            "# NOTE: this keepalived config has no track_script; hasup watches the backend's "
            "status only. "
            "Consider the same [[probe]] as on the other node."
        )
    return lines, hooks


def _check_verbs(ctx: Context, notifies: dict[str, _Notify]) -> None:
    for event, info in notifies.items():
        for action, at in info.actions:
            if event == "MASTER" and action.verb == "restart":
                ctx.warn(at, f"notify_master restarts {action.target}; hasup starts it (a running one is kept)")
            elif event == "MASTER" and action.verb == "stop":
                ctx.warn(at, f"notify_master stops {action.target}; hasup starts the service on MASTER")
            elif event != "MASTER" and action.verb != "stop":
                ctx.warn(
                    at,
                    f"notify_{event.lower()} runs {action.verb} {action.target}; hasup stops it in {event}",
                )


def _command_backend(ctx: Context, notifies: dict[str, _Notify], instance: Stmt) -> tuple[list[str], set[str]]:
    """The notify scripts as a command backend; returns the lines and the events used."""
    lines: list[str] = []
    master = notifies.get("MASTER")
    stoppers = [notifies[e] for e in ("BACKUP", "FAULT", "STOP") if e in notifies]
    stoppers.sort(key=lambda n: not any(a.verb == "stop" for a, _ in n.actions))
    stopper = stoppers[0] if stoppers else None
    reasons: list[str] = []
    for info in notifies.values():
        if info.unreadable:
            reasons.append(info.unreadable)
        for c in info.complex:
            reasons.append(f"{c}: control flow or $variables")
    targets = {(a.kind, a.target) for n in notifies.values() for a, _ in n.actions}
    if len(targets) > 1:
        reasons.append(f"several services: {', '.join(t for _, t in sorted(targets))}")
    if master is None:
        ctx.warn(instance.loc, "no notify_master: nothing says how to start the service; fill in [service]")
        lines.append('backend = "FIXME"  # no notify_master: say how to start the service (systemd, docker, command)')
        return lines, set(notifies)
    for reason in reasons:
        ctx.warn(master.stmt.loc, f"kept as a command backend: {reason}")
    if not reasons and not master.actions:
        ctx.warn(
            master.stmt.loc,
            f"notify_master {master.argv[0]} runs no systemctl/docker start; kept as a command backend",
        )
    lines.append('backend = "command"')
    lines.append(f"start = {quote_list(master.argv)}  # {master.stmt.loc}: notify_master")
    if stopper is not None:
        lines.append(f"stop = {quote_list(stopper.argv)}  # {stopper.stmt.loc}: {stopper.stmt.keyword}")
    else:
        ctx.warn(master.stmt.loc, "no notify_backup/fault/stop: nothing says how to stop the service")
        lines.append('stop = ["FIXME"]  # no notify_backup/fault/stop: say how to stop the service')
    lines.extend(
        wrap(
            "NOTE: add status = [...] (exit 0 running, 3 stopped) so hasup can confirm starts and stops; "
            "without it hasup trusts the exit codes.",
            "# ",
        )
    )
    return lines, {"MASTER"} | ({stopper.event} if stopper is not None else set())


def _hooks(ctx: Context, notifies: dict[str, _Notify], used: set[str]) -> list[list[str]]:
    """[[notify]] hooks for scripts that do something besides starting/stopping the service.

    ``used``: events whose script already is the command backend's start or stop."""
    hooks: list[list[str]] = []
    for event, info in notifies.items():
        if event in used:
            continue
        if info.actions:
            if not info.other:
                continue  # only starts/stops the service: the backend does that now
            prefix = "# "
            head = [
                f"# {info.stmt.loc}: {info.stmt.keyword} also does more than start/stop the service "
                f"({'; '.join(o.split(': ', 1)[1] for o in info.other)}).",
                "# Running the whole script as a hook would start/stop the service a second time; "
                "move the other lines into their own script and enable this hook:",
            ]
        elif info.other or info.complex or info.unreadable:
            prefix = ""
            head = [f"# {info.stmt.loc}: {info.stmt.keyword}, now awaited, in order, with a timeout"]
            ctx.warn(
                info.stmt.loc,
                f"{info.stmt.keyword} kept as a [[notify]] hook on {event}; it gets HASUP_STATE, "
                "HASUP_PREVIOUS_STATE, HASUP_NODE, HASUP_GROUP in its environment, no arguments",
            )
        else:
            continue
        hooks.append(
            [
                *head,
                f"{prefix}[[notify]]",
                f"{prefix}on = [{quote(event)}]",
                f"{prefix}command = {quote_list(info.argv)}",
                f'{prefix}timeout = "10s"',
            ]
        )
    return hooks
