"""The converter: one ``vrrp_instance`` of a parsed keepalived.conf → a commented hasup.toml."""

from __future__ import annotations

import os

from .._addr import format_address
from .._errors import ConfigError
from ._conf import Parser, Stmt, error, read_ip, read_number
from ._context import Context, ImportResult
from ._probes import translate_probes
from ._service import translate_service
from ._shell import word_set
from ._toml import duration, quote, quote_list, wrap
from ._vips import GARP_GLOBAL, GARP_INSTANCE, GARP_UNTRANSLATED, VIP_BLOCKS, translate_vips

__all__ = ["DEFAULT_PORT", "KEY_FILE", "convert"]

DEFAULT_PORT = 5405
KEY_FILE = "/etc/hasup/group.key"

_TOP_IGNORED = word_set(
    "vrrp_sync_group virtual_server virtual_server_group static_ipaddress static_routes "
    "static_rules vrrp_track_file track_file vrrp_track_process track_process "
    "linkbeat_interfaces bfd_instance garp_group local_address_group"
)
_INSTANCE_IGNORED = word_set(
    "dont_track_primary lower_prio_no_advert higher_prio_send_advert use_vmac vmac_xmit_base "
    "native_ipv6 version strict_mode accept no_accept skip_check_adv_addr debug unicast_ttl "
    "unicast_fault_no_peer check_unicast_src smtp_alert smtp_alert_checker "
    "lvs_sync_daemon_interface mcast_src_ip notify_master_rx_lower_pri notify "
    "notify_priority_changes kernel_rx_buf_size track_src_ip old_unicast_checksum "
    "promote_secondaries linkbeat_use_polling vrrp_linkbeat "
    "virtual_routes virtual_rules track_file track_process track_bfd notify_deleted "
    "no_accept_mode mcast_dst_ip"
)
_INSTANCE_KNOWN = (
    word_set(
        "state interface virtual_router_id priority advert_int nopreempt preempt preempt_delay "
        "authentication unicast_peer unicast_src_ip track_script track_interface "
        "notify_master notify_backup notify_fault notify_stop no_virtual_ipaddress"
    )
    | GARP_INSTANCE
    | frozenset(GARP_UNTRANSLATED)
)


class _Importer(Context):
    def __init__(self, path: str, instance: str | None) -> None:
        super().__init__(path)
        parser = Parser(self.warnings)
        self.top = parser.parse_file(path)
        self.scripts: dict[str, Stmt] = {}
        self.instances: dict[str, Stmt] = {}
        self.router_id: str | None = None
        self.global_garp: dict[str, Stmt] = {}  # global_defs' vrrp_garp_* lines
        self.own: dict[str, str] = {}  # this node's and the peers' addresses: never a virtual IP
        self.state = "BACKUP"
        self.priority = 100
        self._read_top()
        self.inst = self._pick(instance)

    # -- top level ---------------------------------------------------------------------
    def _read_top(self) -> None:
        for stmt in self.top:
            kw = stmt.keyword
            if kw == "global_defs":
                for sub in stmt.need_block():
                    if sub.keyword == "router_id" and sub.args:
                        self.router_id = sub.args[0].text
                    elif sub.keyword in GARP_GLOBAL:
                        self.global_garp[sub.keyword] = sub
            elif kw in ("vrrp_script", "vrrp_instance"):
                name = stmt.value(f"the {kw} name").text
                stmt.need_block()
                table = self.scripts if kw == "vrrp_script" else self.instances
                if name in table:
                    raise error(stmt.loc, f"{kw} {name} is defined twice (first at line {table[name].loc.line})")
                table[name] = stmt
            elif kw in _TOP_IGNORED:
                self.warn(stmt.loc, f"{kw} has no hasup equivalent and is not translated")
            elif kw.startswith("@") or kw.startswith("$"):
                raise error(stmt.loc, f"{kw}: keepalived conditional lines and $parameters are not supported")
            elif stmt.block is not None:
                raise error(stmt.loc, f"unknown block '{kw}'")
            else:
                raise error(stmt.loc, f"unknown keyword '{kw}' at the top level")

    def _pick(self, instance: str | None) -> Stmt:
        if not self.instances:
            raise ConfigError("no vrrp_instance block found", file=self.path)
        if instance is not None:
            if instance not in self.instances:
                raise ConfigError(
                    f"no vrrp_instance named {instance!r}; found: {', '.join(self.instances)}", file=self.path
                )
            return self.instances[instance]
        if len(self.instances) > 1:
            raise ConfigError(
                f"{len(self.instances)} vrrp_instance blocks ({', '.join(self.instances)}): "
                "choose one with --instance NAME (hasup runs one group per configuration file)",
                file=self.path,
            )
        return next(iter(self.instances.values()))

    # -- the instance ------------------------------------------------------------------
    def convert(self) -> ImportResult:
        inst = self.inst
        name = inst.args[0].text
        settings: dict[str, Stmt] = {}
        vip_blocks: list[Stmt] = []  # each one adds its addresses, as in keepalived
        block = inst.need_block()
        for stmt in block:
            kw = stmt.keyword
            if kw in VIP_BLOCKS:
                vip_blocks.append(stmt)
            elif kw in _INSTANCE_KNOWN:
                if kw in settings and kw not in ("track_script", "unicast_peer"):
                    self.warn(stmt.loc, f"{kw} repeated; the last one (line {stmt.loc.line}) is used")
                settings[kw] = stmt
            elif kw in _INSTANCE_IGNORED:
                what = "a generic notify script (called with instance, state, priority)" if kw == "notify" else kw
                self.warn(stmt.loc, f"{what} has no hasup equivalent and is not translated")
            elif stmt.block is not None:
                raise error(stmt.loc, f"unknown block '{kw}' in vrrp_instance {name}")
            else:
                self.warn(stmt.loc, f"unknown keyword '{kw}' in vrrp_instance {name}; ignored")

        out: list[str] = []
        body = [*self._node(settings), "", *self._group(settings)]
        probes = translate_probes(self, settings, self.scripts)
        service, hooks = translate_service(self, settings, probes, self.inst)
        body += ["", *service]
        for vip in translate_vips(self, vip_blocks, settings, self.global_garp, self.own):
            body += ["", *vip]
        for probe in probes:
            body += ["", *probe.lines]
        for hook in hooks:
            body += ["", *hook]

        out.append(f"# hasup.toml generated by `hasup import-keepalived` from {self.path}")
        out.append(f"# (vrrp_instance {name}). Read every NOTE and TRAP below, then check it:")
        out.append("#   hasup check -c hasup.toml")
        if self.traps:
            out.append("#")
            out.append("# Traps of the keepalived recipe found in the input, and what hasup does instead:")
            for trap in self.traps:
                out.extend(wrap(f"- {trap.where}: {trap.problem} hasup: {trap.instead}", "#   "))
        if self.warnings:
            out.append("#")
            out.append("# Not translated or changed (also printed as warnings):")
            for warning in self.warnings:
                out.extend(wrap(f"- {warning}", "#   "))
        out.append("")
        for line in body:
            out.extend(wrap(line[2:], "# ") if line.startswith("# ") and len(line) > 108 else [line])
        return ImportResult("\n".join(out).rstrip() + "\n", name, list(self.warnings), list(self.traps))

    def _node(self, s: dict[str, Stmt]) -> list[str]:
        lines = ["[node]"]
        if self.router_id:
            lines.append(f"name = {quote(self.router_id)}  # keepalived router_id; must differ from the peers' names")
        else:
            lines.append('# name = "edge-a"  # defaults to the host name; must differ from the peers\' names')
        state = s.get("state")
        if state is not None:
            value = state.value("MASTER or BACKUP")
            if value.text not in ("MASTER", "BACKUP"):
                raise error(value.loc, f"state: expected MASTER or BACKUP, got {value.text!r}")
            lines.append(
                f"# keepalived: state {value.text} ({state.loc}). hasup has no initial state: the highest "
                "priority that is healthy serves."
            )
        self.state = state.args[0].text if state is not None else "BACKUP"
        if "priority" in s:
            raw = read_number(s["priority"], integer=True, lo=0, hi=255)
            prio = int(min(max(raw, 1), 254))
            if prio != raw:
                self.warn(s["priority"].loc, f"priority {int(raw)} clamped to {prio} (hasup priorities are 1..254)")
            lines.append(f"priority = {prio}  # {s['priority'].loc}: priority {int(raw)}")
        else:
            prio = 100
            lines.append("priority = 100  # keepalived's default priority")
        self.priority = prio
        if "nopreempt" in s and "preempt" not in s:
            stmt = s["nopreempt"]
            stmt_lower = self.state == "BACKUP" or prio < 100
            lines.append(f"preempt = false  # {stmt.loc}: nopreempt")
            lines.extend(
                wrap(
                    "TRAP: nopreempt only acts on the node that would take the service back. On the "
                    "lower-priority node it does nothing, in keepalived as in hasup (hasup logs a warning). "
                    "Failback is decided on the preferred node: keep preempt = true there for automatic "
                    "failback, or set preempt = false there to keep the service where it is.",
                    "# ",
                )
            )
            self.trap(
                "nopreempt-lower-priority",
                stmt.loc,
                "nopreempt"
                + (
                    " on what looks like the lower-priority node (state BACKUP / priority below 100)"
                    if stmt_lower
                    else ""
                )
                + " does nothing: preemption is decided by the node that wants to take over.",
                "failback is controlled by preempt on the preferred node (preempt = true there means "
                "automatic "
                "failback through the release handshake, after preempt_delay).",
            )
        else:
            where = f"  # {s['preempt'].loc}: preempt" if "preempt" in s else ""
            lines.append(f"preempt = true{where}")
            lines.append(
                "# automatic failback: this node takes the service back from a live lower-priority holder "
                "(release handshake)"
            )
        if "preempt_delay" in s:
            delay = read_number(s["preempt_delay"], integer=False, lo=0, hi=1000)
            lines.append(f"preempt_delay = {duration(delay)}  # {s['preempt_delay'].loc}: preempt_delay")
        return lines

    def _group(self, s: dict[str, Stmt]) -> list[str]:
        lines = ["[group]"]
        if "virtual_router_id" not in s:
            raise error(self.inst.loc, f"vrrp_instance {self.inst.args[0].text}: virtual_router_id is missing")
        vrid = int(read_number(s["virtual_router_id"], integer=True, lo=1, hi=255))
        lines.append(f"id = {vrid}  # {s['virtual_router_id'].loc}: virtual_router_id (must match on every node)")
        iface = s["interface"].value("an interface name").text if "interface" in s else None
        if "unicast_src_ip" in s:
            ip = read_ip(s["unicast_src_ip"].value("an IP address"), "unicast_src_ip")
            self.own[ip] = f"this node's unicast_src_ip ({s['unicast_src_ip'].loc})"
            lines.append(
                f"listen = {quote(format_address(ip, DEFAULT_PORT))}  # {s['unicast_src_ip'].loc}: unicast_src_ip"
            )
        else:
            lines.append(f'listen = "0.0.0.0:{DEFAULT_PORT}"')
            hint = f" on {iface}" if iface else ""
            lines.append(
                f"# NOTE: no unicast_src_ip; if this node has several addresses, bind the one{hint} "
                f'that the peers list: listen = "<this node\'s IP>:{DEFAULT_PORT}"'
            )
        peers: list[str] = []
        if "unicast_peer" in s:
            for peer in s["unicast_peer"].need_block():
                peer_ip = read_ip(peer.key, "unicast_peer")
                self.own.setdefault(peer_ip, f"a unicast_peer ({peer.loc})")
                peers.append(format_address(peer_ip, DEFAULT_PORT) if ":" in peer_ip else peer_ip)
                if peer.args:
                    self.warn(peer.loc, f"unicast_peer options {' '.join(a.text for a in peer.args)} are ignored")
            lines.append(f"peers = {quote_list(peers)}  # {s['unicast_peer'].loc}: unicast_peer")
        else:
            self.warn(self.inst.loc, "no unicast_peer: hasup talks unicast UDP only; fill in group.peers")
            lines.append(
                'peers = []  # FIXME: the other nodes\' addresses, e.g. ["10.0.0.223"] (keepalived used multicast)'
            )
        lines.append(f"key_file = {quote(KEY_FILE)}")
        lines.append(
            f"# create it once with `hasup keygen {KEY_FILE}` and copy it to every node (mode 0600): "
            "heartbeats are signed with HMAC"
        )
        if "authentication" in s:
            auth = s["authentication"]
            kind = None
            for sub in auth.need_block():
                if sub.keyword == "auth_type":
                    kind = sub.value("PASS or AH").text
                elif sub.keyword == "auth_pass":
                    sub.value("a password")
                else:
                    raise error(sub.loc, f"unknown keyword '{sub.keyword}' in authentication")
            if kind == "PASS":
                self.warn(auth.loc, "auth_type PASS sent the password in plain text; replaced by key_file (HMAC)")
                lines.append(f"# TRAP ({auth.loc}): auth_type PASS was a plain-text password anyone could forge.")
                self.trap(
                    "pass-auth",
                    auth.loc,
                    "auth_type PASS sends the password in clear text; anyone on the segment can forge adverts.",
                    "every heartbeat carries an HMAC with a 256-bit key from key_file "
                    "(replay-protected); the old "
                    "auth_pass is not reused.",
                )
            elif kind is not None:
                self.warn(auth.loc, f"auth_type {kind} is not supported; replaced by key_file (HMAC)")
        if "advert_int" in s:
            adv = read_number(s["advert_int"], integer=False, lo=0.001, hi=255)
            clamped = min(max(adv, 0.01), 60.0)
            if clamped != adv:
                self.warn(s["advert_int"].loc, f"advert_int {adv:g} clamped to {clamped:g}s (hasup: 10 ms .. 60 s)")
            lines.append(f"advert_interval = {duration(clamped)}  # {s['advert_int'].loc}: advert_int")
        lines.extend(self._tracking(s, iface))
        return lines

    def _tracking(self, s: dict[str, Stmt], iface: str | None) -> list[str]:
        """keepalived tracks the instance's ``interface`` implicitly (unless
        ``dont_track_primary``) and every ``track_interface``: so does the output."""
        names: list[str] = []
        where: list[str] = []
        if iface is not None and "dont_track_primary" not in s:
            names.append(iface)
            where.append(f"{s['interface'].loc}: interface")
        if "track_interface" in s:
            stmt = s["track_interface"]
            for entry in stmt.need_block():
                if entry.keyword not in names:
                    names.append(entry.keyword)
                if entry.args:
                    self.warn(
                        entry.loc,
                        f"track_interface {entry.keyword} {' '.join(a.text for a in entry.args)}: the weight is "
                        "ignored; in hasup a tracked link that goes down always stops the service here",
                    )
            where.append(f"{stmt.loc}: track_interface")
        if not names:
            return []
        note = "; ".join(where)
        return [f"track_interface = {quote_list(names)}  # {note} (link down: stop here, the peer takes over)"]


def convert(path: str | os.PathLike[str], *, instance: str | None = None) -> ImportResult:
    """Convert one keepalived.conf (and the scripts it names) into a commented hasup.toml.

    Raises :class:`~hasup.ConfigError` (with file and line) on a malformed file, an
    unknown block, a missing value, or several instances without ``instance``.
    """
    return _Importer(os.fspath(path), instance).convert()
