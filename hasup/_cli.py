"""The command line: ``python -m hasup`` / ``hasup``."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import secrets
import signal
import sys
import time
from typing import Any

import anyio

from ._addr import format_address
from ._errors import ConfigError, HasupError
from ._ledger import add_ledger_parser, describe_handover
from ._listen import check_listeners, new_listeners
from ._logsetup import setup_logging as _setup_logging
from ._rlimit import raise_nofile
from ._strictmodes import check_run_files
from ._version import __version__
from ._vipconfig import check_devices
from ._witness_server import add_witness_parser
from .config import Config, load_config

__all__ = ["main"]

_DESCRIPTION = """\
hasup keeps exactly one copy of a service running on a pair (or small group) of
machines: it moves the service in well under a second when the active node or its
service dies, and back without ever running two copies."""

#: where -c looks when it is not given (the Debian package's configuration file)
DEFAULT_CONFIG = "/etc/hasup/hasup.toml"

#: `hasup status` exit codes (docs/cli.md): monitoring can alert on them
STATUS_OK, STATUS_UNREACHABLE, STATUS_FAULT, STATUS_ALARM = 0, 1, 3, 4

log = logging.getLogger("hasup")


def _fail(message: str, code: int = 2) -> int:
    print(f"hasup: {message}", file=sys.stderr)
    return code


def _load(path: str) -> Config:
    config = load_config(path)
    check_run_files(config)  # StrictModes: nobody else can change what hasup acts on
    check_devices(config.vips)  # a [[vip]] device this host lacks: a located config error
    for warning in config.warnings:
        log.warning("%s", warning)
    return config


# --------------------------------------------------------------------------- run
async def _run(path: str, config: Config, *, leave_running: bool = False) -> int:
    """Run until SIGTERM/SIGINT; SIGHUP reloads in process without touching the service.

    A reload resigns with ``leave_running`` (peers stretch our down timer) and starts a
    new supervisor with the new configuration. When the ``[service]`` table is unchanged
    the backend object is kept, so even a managed process is adopted without a restart;
    when it changed, the old service is stopped first (a clean hand-over).
    """
    from ._notify import SystemdNotifier
    from .supervisor import Supervisor

    exit_code = 0
    notifier = SystemdNotifier.from_environment()
    backend = config.make_backend()
    try:
        await backend.preflight()  # e.g. credentials the service rejects: one line, exit 2
    except ConfigError as exc:
        await backend.aclose()
        return _fail(str(exc))
    try:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            while True:
                sup = Supervisor(config, backend=backend, notify_systemd=False)
                reload_to: Config | None = None
                async with anyio.create_task_group() as tg:

                    async def supervise(sup: Supervisor = sup, *, task_status: anyio.abc.TaskStatus[None]) -> None:
                        nonlocal exit_code
                        try:
                            await sup.run(task_status=task_status)
                        except ConfigError as exc:  # a listener taken since the check
                            log.error("%s", exc)
                            exit_code = 2
                            task_status.started()
                        except HasupError as exc:
                            log.error("fatal: %s", exc)
                            exit_code = 1
                            task_status.started()
                        tg.cancel_scope.cancel()

                    await tg.start(supervise)
                    running = anyio.Event()
                    if notifier is not None:
                        tg.start_soon(functools.partial(notifier.run, running, stopping=False))
                    async for signum in signals:
                        if signum == signal.SIGHUP:
                            try:
                                candidate = _load(path)
                                check_listeners(candidate, new_listeners(config, candidate))
                            except ConfigError as exc:
                                log.error("reload rejected, keeping the running configuration: %s", exc)
                                continue
                            if notifier is not None:
                                notifier.send("RELOADING=1")
                            reload_to = candidate
                            if candidate.service == config.service:
                                log.info("reloading %s (the service keeps running)", path)
                                await sup.shutdown(leave_running=True, hold=3 * config.group.advert_interval + 1)
                            else:
                                log.info("reloading %s: [service] changed, stopping the old service first", path)
                                await sup.shutdown()
                        else:
                            log.info(
                                "%s: %s and exiting",
                                signal.Signals(signum).name,
                                "leaving the service running" if leave_running else "resigning",
                            )
                            await sup.shutdown(leave_running=leave_running, hold=30.0 if leave_running else 0.0)
                        break
                    running.set()
                    tg.cancel_scope.cancel()
                if reload_to is None:
                    return exit_code
                if reload_to.service != config.service:
                    await backend.aclose()
                    backend = reload_to.make_backend()
                config = reload_to
    finally:
        if notifier is not None:
            notifier.send("STOPPING=1")
            notifier.close()
        with anyio.CancelScope(shield=True):
            await backend.aclose()


def cmd_run(args: argparse.Namespace) -> int:
    try:
        config = _load(args.config)
        if config.backend_kind == "callback":
            config.make_backend()  # raises the explanation
        check_listeners(config)  # a busy port: one line and exit 2, before anything starts
    except ConfigError as exc:
        return _fail(str(exc))
    raise_nofile()
    return anyio.run(lambda: _run(args.config, config, leave_running=args.leave_running), backend=args.loop)


# --------------------------------------------------------------------------- check
def cmd_check(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        check_run_files(config)
        if not args.offline:
            check_devices(config.vips)
        if config.backend_kind == "callback":
            config.make_backend()  # raises the explanation
    except ConfigError as exc:
        return _fail(str(exc))
    core = config.core_config()
    for warning in config.warnings:  # stderr: `hasup check -c F | jq` sees only the JSON
        print(f"warning: {warning}", file=sys.stderr)
    effective = {
        "node": {
            "name": core.name,
            "priority": core.priority,
            "preempt": core.preempt,
            "preempt_delay": core.preempt_delay,
            "state_dir": config.node.state_dir,
        },
        "group": {
            "id": core.group,
            "listen": format_address(*config.group.listen),
            "peers": [format_address(*p.address) + (f" ({p.name})" if p.name else "") for p in core.peers],
            "advert_interval": core.advert_interval,
            "authenticated": core.keys.keyed,
            "quorum": "majority" if core.quorum_required else "none",
            "fault_holddown": core.fault_holddown,
            "witness": None if core.witness is None else f"{format_address(*core.witness)} (lease {core.vote_lease} s)",
            "track_interface": _tracking(config),
            "master_down_interval_at_own_priority": round(
                3 * core.advert_interval + (256 - core.priority) * core.advert_interval / 256, 4
            ),
        },
        "service": dict(config.service),
        "probes": [
            {
                "name": p.options.name,
                "type": p.type,
                "when": p.options.when,
                "interval": p.options.interval,
                "fall": p.options.fall,
                "rise": p.options.rise,
            }
            for p in config.probes
        ],
        "vips": [
            {"address": v.interface.with_prefixlen, "device": v.device, "label": v.label, "garp_repeat": v.garp_repeat}
            for v in config.vips
        ],
        "status": None if config.status.listen is None else format_address(*config.status.listen),
        "sync": [
            {"path": s.path, "listen": format_address(*s.listen), "exclude": list(s.exclude)}
            for s in config.sync_settings()
        ],
        "coordinator": None
        if config.coordinator is None
        else {k: v for k, v in config.coordinator.items() if "password" not in k},
    }
    print(json.dumps(effective, indent=2, default=str))
    if args.offline:
        return 0

    async def backend_problems() -> list[str]:
        backend = config.make_backend()
        try:
            return await backend.check()
        finally:
            await backend.aclose()

    problems = anyio.run(backend_problems)
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    return 1 if problems else 0


def _tracking(config: Config) -> object:
    """The tracked links as ``run`` would find them (``check`` output)."""
    if config.group.track_interface is not None:
        return list(config.group.track_interface)
    from ._iface import interfaces_for

    try:
        return {"auto": list(interfaces_for(config.group.listen[0], [p.address[0] for p in config.group.peers]))}
    except OSError as exc:
        return {"auto": None, "problem": f"cannot tell which interface carries the heartbeats: {exc}"}


# --------------------------------------------------------------------------- status
def _status_url(args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url).rstrip("/")
    config = load_config(args.config)
    if config.status.listen is None:
        raise ConfigError("status.listen is off: no status endpoint to ask", file=config.file)
    host, port = config.status.listen
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def cmd_status(args: argparse.Namespace) -> int:
    import httpx

    try:
        url = _status_url(args)
    except ConfigError as exc:
        return _fail(str(exc))
    try:
        response = httpx.get(f"{url}/status", timeout=3.0)
        response.raise_for_status()
        doc = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        return _fail(f"cannot reach {url}/status: {exc}", 1)
    code = _status_code(doc)
    if args.json:
        print(json.dumps(doc, indent=2))
        return code
    print(
        f"{doc['node']}: {doc['state']} (term {doc['term']}, priority {doc['priority']}/"
        f"{doc['effective_priority']}) service {doc['service']}, in this state for {doc['since_seconds']} s"
        f" — {doc['reason']}"
    )
    if doc.get("group_maintenance"):
        print("  GROUP MAINTENANCE: no node claims or takes over (hasup maintenance off --group)")
    elif doc.get("maintenance"):
        print("  maintenance: this node does not claim or take over (hasup maintenance off)")
    for peer in doc.get("peers", []):
        seen = "never" if peer["last_seen_ago"] is None else f"{peer['last_seen_ago']} s ago"
        print(
            f"  peer {peer['name'] or '?'} at {peer['address']}: {peer['state'] or '-'}"
            f"{' ACTIVE' if peer['active'] else ''}{' maintenance' if peer.get('maintenance') else ''}, "
            f"{'live' if peer['live'] else 'DOWN'}, last heard {seen}"
        )
    if w := doc.get("witness"):
        state = "reachable" if w["reachable"] else "UNREACHABLE"
        print(f"  witness {w['address']}: {state}, vote {w['vote']} (holder {w['holder'] or 'nobody'})")
    for kind, detail in doc.get("alarms", {}).items():
        print(f"  ALARM {kind}: {detail}")
    handovers = doc.get("handovers") or []
    if handovers:
        last = handovers[-1]
        print(f"  last handover: {describe_handover(last)} (hasup ledger)")
    return code


def _status_code(doc: dict[str, Any]) -> int:
    """0 healthy, 3 FAULT, 4 an alarm is raised (not FAULT); 1 is "cannot ask"."""
    if doc.get("state") == "FAULT":
        return STATUS_FAULT
    return STATUS_ALARM if doc.get("alarms") else STATUS_OK


# --------------------------------------------------------------------------- operations
def _control(args: argparse.Namespace, command: str, body: dict[str, object]) -> tuple[int, dict[str, Any]]:
    import httpx

    config = load_config(args.config)
    url = _status_url(args)
    token_path = os.path.join(config.node.state_dir, "control.token")
    try:
        with open(token_path) as fh:
            token = fh.read().strip()
    except OSError as exc:
        raise HasupError(f"cannot read the control token {token_path}: {exc.strerror} (run as hasup's user)") from None
    try:
        response = httpx.post(
            f"{url}/control/{command}", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10.0
        )
    except httpx.HTTPError as exc:
        raise HasupError(f"cannot reach {url}: {exc}") from None
    try:
        doc = response.json()
    except ValueError:
        doc = {"error": f"HTTP {response.status_code}: {response.text[:200]}"}
    return response.status_code, doc if isinstance(doc, dict) else {"error": str(doc)}


def cmd_switchover(args: argparse.Namespace) -> int:
    import httpx

    started = time.monotonic()
    code, doc = _control(args, "switchover", {"to": args.to} if args.to else {})
    if code != 200:
        return _fail(f"switchover refused: {doc.get('error', doc)}", 1)
    target = doc["target"]
    url = _status_url(args)
    deadline = started + args.timeout
    while time.monotonic() < deadline:
        try:
            status = httpx.get(f"{url}/status", timeout=3.0).json()
        except (httpx.HTTPError, ValueError) as exc:
            return _fail(f"switchover to {target} asked, but {url}/status stopped answering: {exc}", 1)
        peer = next((p for p in status["peers"] if p["name"] == target), None)
        if peer and peer["state"] == "MASTER" and peer["active"] and not status["holder"]:
            took = time.monotonic() - started
            print(
                f"switched over to {target} in {took * 1000:.0f} ms; this node's service was confirmed "
                f"stopped before {target} started (no overlap)"
            )
            return 0
        time.sleep(0.01)
    return _fail(f"{target} did not become MASTER within {args.timeout:g} s; see `hasup status`", 1)


def cmd_maintenance(args: argparse.Namespace) -> int:
    code, doc = _control(args, "maintenance", {"on": args.mode == "on", "group": args.group})
    if code != 200:
        return _fail(f"refused: {doc.get('error', doc)}", 1)
    if args.group:
        print(f"group maintenance {'on: no node claims or takes over' if doc['group_maintenance'] else 'off'}")
    else:
        print(f"maintenance {'on: this node will not claim or take over' if doc['maintenance'] else 'off'}")
    return 0


def cmd_forget_peer(args: argparse.Namespace) -> int:
    code, doc = _control(args, "forget-peer", {"peer": args.peer})
    if code != 200:
        return _fail(f"refused: {doc.get('error', doc)}", 1)
    print(f"forgot the replay high-water mark of {args.peer}; its next heartbeats are accepted")
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    import httpx

    if args.action == "now":
        code, doc = _control(args, "sync-now", {})
        if code != 200:
            return _fail(f"sync refused: {doc.get('error', doc)}", 1)
        print("sync done: generation " + ", ".join(str(g) for g in doc["generations"]))
        return 0
    url = _status_url(args)
    try:
        status = httpx.get(f"{url}/status", timeout=3.0).json()
    except (httpx.HTTPError, ValueError) as exc:
        return _fail(f"cannot reach {url}/status: {exc}", 1)
    entries = status.get("sync")
    if not entries:
        print("no [[sync]] configured")
        return 0
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    for e in entries:
        peer = "-" if e["peer_generation"] is None else e["peer_generation"]
        state = "in sync" if e["in_sync"] else "BEHIND"
        print(
            f"{e['path']}: {e['role']}, generation {e['generation']} (peer {peer}), {state}, "
            f"conflicts {e['conflicts']}" + (f", last error: {e['last_error']}" if e["last_error"] else "")
        )
    return 0


def cmd_confirm_stopped(args: argparse.Namespace) -> int:
    code, doc = _control(args, "confirm-stopped", {})
    if code != 200:
        return _fail(f"refused: {doc.get('error', doc)}", 1)
    print("recorded: the service is stopped on this node; peers may start it")
    return 0


def cmd_import_keepalived(args: argparse.Namespace) -> int:
    # imported here: the converter is large and `hasup run` never needs it
    from .keepalived_import import _cmd_import

    return int(_cmd_import(args))


# --------------------------------------------------------------------------- keygen
def cmd_keygen(args: argparse.Namespace) -> int:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if args.force else os.O_EXCL)
    try:
        fd = os.open(args.file, flags, 0o600)
    except FileExistsError:
        return _fail(f"{args.file} exists; use --force to overwrite it")
    except OSError as exc:
        return _fail(f"cannot create {args.file}: {exc.strerror}")
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(secrets.token_hex(32) + "\n")
    print(f"wrote a new 256-bit group key to {args.file} (mode 0600); copy it to every node of the group")
    return 0


# --------------------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    _setup_logging(args.log_level, "text")
    return anyio.run(run_demo, args.advert, backend=args.loop)


def _config_arg(p: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup) -> None:
    p.add_argument("-c", "--config", default=DEFAULT_CONFIG, help=f"configuration file (default {DEFAULT_CONFIG})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hasup", description=_DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"hasup {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run this node's supervisor")
    _config_arg(p)
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", default="text", choices=["text", "json"])
    p.add_argument(
        "--leave-running",
        action="store_true",
        help="on SIGTERM leave the service running for up to 30 s (for upgrades of hasup)",
    )
    p.add_argument("--loop", default="asyncio", choices=["asyncio", "trio"], help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check", help="validate a configuration and print the effective settings")
    _config_arg(p)
    p.add_argument("--offline", action="store_true", help="do not contact the backend (systemd, dockerd)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("status", help="show a running node's view of the group")
    group = p.add_mutually_exclusive_group()
    _config_arg(group)
    group.add_argument("--url", help="ask this status endpoint instead of the one -c names")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    add_ledger_parser(sub, _config_arg)  # the command lives in _ledger

    p = sub.add_parser("switchover", help="move the service from this MASTER to a peer (release handshake)")
    _config_arg(p)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--to", help="target node (default: the best BACKUP)")
    p.add_argument("--timeout", type=float, default=120.0)
    p.set_defaults(func=cmd_switchover)

    p = sub.add_parser("maintenance", help="on: this node never claims or takes over; off: back to normal")
    p.add_argument("mode", choices=["on", "off"])
    p.add_argument("--group", action="store_true", help="the whole group (persisted, spread by heartbeats)")
    _config_arg(p)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_maintenance)

    p = sub.add_parser(
        "confirm-stopped", help="vouch that the service is stopped after a failed stop (clears the alarm)"
    )
    _config_arg(p)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_confirm_stopped)

    p = sub.add_parser("forget-peer", help="accept a peer rejected as stale (after its state was wiped)")
    p.add_argument("peer")
    _config_arg(p)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_forget_peer)

    p = sub.add_parser("sync", help="data sync: `status` (generations, lag, conflicts) or `now`")
    p.add_argument("action", choices=["status", "now"])
    _config_arg(p)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_sync)

    p = sub.add_parser("keygen", help="create a group key file (mode 0600)")
    p.add_argument("file")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_keygen)

    p = sub.add_parser(
        "import-keepalived",
        help="convert a keepalived.conf (and its notify scripts) into a commented hasup.toml",
        description="Convert a keepalived.conf into a hasup.toml. Warnings and recipe traps go to stderr.",
    )
    p.add_argument("path", help="keepalived.conf to read (scripts it names are read, never run)")
    p.add_argument("--instance", help="the vrrp_instance to convert when the file has several")
    p.add_argument("-o", "--output", help="write the TOML here instead of stdout (refuses to overwrite)")
    p.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    p.set_defaults(func=cmd_import_keepalived)

    p = sub.add_parser("demo", help="two nodes on loopback: crash, node loss, failback, with a timeline")
    p.add_argument("--advert", default=0.1, type=float, help="advert interval in seconds (default 0.1)")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    p.add_argument("--loop", default="asyncio", choices=["asyncio", "trio"], help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_demo)
    add_witness_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("run", "witness"):
        _setup_logging(args.log_level, args.log_format)
    started = time.monotonic()
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `hasup check | head`: the reader left; no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except ConfigError as exc:
        return _fail(str(exc), 2)
    except HasupError as exc:
        return _fail(str(exc), 1)
    log.debug("%s finished in %.3f s", args.command, time.monotonic() - started)
    return code
