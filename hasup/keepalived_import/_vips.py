"""``virtual_ipaddress`` / ``virtual_ipaddress_excluded`` → ``[[vip]]`` tables, with the
announcement settings (the instance's ``garp_master_*``, ``global_defs``' ``vrrp_garp_*``)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from ._conf import Loc, Stmt, Token, error, read_number
from ._context import Context
from ._shell import word_set
from ._toml import duration, quote

__all__ = ["GARP_GLOBAL", "GARP_INSTANCE", "GARP_UNTRANSLATED", "VIP_BLOCKS", "translate_vips"]

VIP_BLOCKS = ("virtual_ipaddress", "virtual_ipaddress_excluded")

#: The translated instance options and the ``global_defs`` keyword that is their default.
_GARP = {
    "garp_master_repeat": "vrrp_garp_master_repeat",
    "garp_master_delay": "vrrp_garp_master_delay",
    "garp_interval": "vrrp_garp_interval",
    "gna_interval": "vrrp_gna_interval",
}
GARP_INSTANCE = frozenset(_GARP)

_NOT_PERIODIC = (
    "hasup announces the addresses when it adds them (garp_repeat, again after garp_delay) "
    "and after a split brain, never periodically"
)
_NOT_LOWER = "hasup does not announce again when it hears a lower-priority peer (it does after a split brain)"
_OWN_DEVICE = "hasup announces on the address's own device only"
#: Instance options about announcements that have no ``[[vip]]`` key, and why.
GARP_UNTRANSLATED = {
    "garp_master_refresh": _NOT_PERIODIC,
    "garp_master_refresh_repeat": _NOT_PERIODIC,
    "garp_lower_prio_delay": _NOT_LOWER,
    "garp_lower_prio_repeat": _NOT_LOWER,
    "garp_extra_if": _OWN_DEVICE,
    "vmac_garp_intvl": _OWN_DEVICE,
}
#: The ``global_defs`` keywords read here (translated, or warned about when there are VIPs).
GARP_GLOBAL = frozenset({*_GARP.values(), *(f"vrrp_{k}" for k in GARP_UNTRANSLATED)})

# keepalived's address options (vrrp_ipaddress.c) besides dev and label, and why hasup ignores them.
_VALUE_OPTIONS = {
    "brd": "hasup sets no broadcast address",
    "broadcast": "hasup sets no broadcast address",
    "scope": "hasup adds global-scope addresses",
    "peer": "hasup adds no point-to-point peer address",
    "preferred_lft": "hasup's addresses are never deprecated",
    "track_group": "for static_ipaddress only",
}
_FLAG_OPTIONS = {
    "no_track": "hasup never watches an address once added, as with no_track",
    "use_vmac": "hasup has no VMAC interfaces",
    "-nodad": "hasup always adds IPv6 addresses without duplicate address detection",
    "home": "hasup sets no address flags",
    "mngtmpaddr": "hasup sets no address flags",
    "noprefixroute": "hasup sets no address flags",
    "autojoin": "hasup sets no address flags",
}
_OPTIONS = frozenset({"dev", "label", *_VALUE_OPTIONS, *_FLAG_OPTIONS})
_GLOBAL_SCOPE = word_set("global 0")
_IFNAMSIZ = 16
_UINT_MAX = 2**32 - 1
_TIMER_HZ = 1_000_000  # keepalived's timers count microseconds

_VIP_NOTE = (
    "# NOTE: hasup adds the virtual IPs once the service's start is confirmed and removes them before "
    "it stops; it needs CAP_NET_ADMIN and CAP_NET_RAW, and each device must exist when hasup starts."
)
_EXCLUDED_NOTE = (
    "# NOTE: keepalived added the virtual_ipaddress_excluded addresses too, and only left them out of "
    "its adverts; hasup's heartbeats carry no addresses, so they are [[vip]] tables like the others."
)

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


@dataclass
class _Vip:
    interface: IPInterface
    block: str  # virtual_ipaddress or virtual_ipaddress_excluded
    loc: Loc
    lines: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Setting:
    key: str  # the [[vip]] key
    value: str  # its TOML text
    stmt: Stmt

    def line(self) -> str:
        words = " ".join([self.stmt.keyword, *(a.text for a in self.stmt.args)])
        where = " (global_defs)" if self.stmt.keyword in GARP_GLOBAL else ""
        return f"{self.key} = {self.value}  # {self.stmt.loc}: {words}{where}"


def translate_vips(
    ctx: Context,
    blocks: list[Stmt],
    s: dict[str, Stmt],
    global_garp: dict[str, Stmt],
    own: dict[str, str],
) -> list[list[str]]:
    """The lines of one ``[[vip]]`` table per address in ``blocks``, in their order.

    ``s``: the instance's settings (``interface``, the ``garp_*`` options);
    ``global_garp``: the ``vrrp_garp_*`` lines of ``global_defs``; ``own``: the node's
    and the peers' addresses (address → what it is), which cannot be virtual IPs."""
    for kw, why in GARP_UNTRANSLATED.items():
        if kw in s:
            ctx.warn(s[kw].loc, f"{kw} is not translated: {why}")
    vips: list[_Vip] = []
    for block in blocks:
        entries = block.need_block()
        if not entries:
            ctx.warn(block.loc, f"{block.keyword} is empty: no [[vip]]")
        for entry in entries:
            vip = _entry(ctx, block.keyword, entry, s, own, vips)
            if vip is not None:
                vips.append(vip)
    if not vips:
        for kw in sorted(GARP_INSTANCE & s.keys(), key=lambda k: s[k].loc.line):
            ctx.warn(s[kw].loc, f"{kw}: this vrrp_instance has no virtual IP to announce; ignored")
        return []
    for kw, why in GARP_UNTRANSLATED.items():
        if f"vrrp_{kw}" in global_garp:
            ctx.warn(global_garp[f"vrrp_{kw}"].loc, f"vrrp_{kw} is not translated: {why}")
    common = [_repeat(ctx, s, global_garp), _delay(ctx, s, global_garp)]
    versions: set[int] = {v.interface.version for v in vips}
    interval = {
        4: _interval(ctx, "garp_interval", 4, versions, s, global_garp),
        6: _interval(ctx, "gna_interval", 6, versions, s, global_garp),
    }
    tables: list[list[str]] = []
    excluded_noted = False
    for vip in vips:
        lines = [] if tables else [_VIP_NOTE]
        if vip.block == "virtual_ipaddress_excluded" and not excluded_noted:
            lines.append(_EXCLUDED_NOTE)
            excluded_noted = True
        lines += ["[[vip]]", *vip.lines]
        lines += [x.line() for x in (*common, interval[vip.interface.version]) if x is not None]
        tables.append(lines)
    return tables


def _entry(
    ctx: Context, kw: str, entry: Stmt, s: dict[str, Stmt], own: dict[str, str], vips: list[_Vip]
) -> _Vip | None:
    """One address line: ``<IPADDR>[/<MASK>] [dev <STRING>] [label <LABEL>] [option...]``."""
    if entry.block is not None:
        raise error(entry.loc, f"{kw}: unexpected '{{' block after {entry.keyword}")
    text = entry.keyword
    try:
        if "%" in text:  # keepalived takes no zone index either
            raise ValueError(text)
        interface: IPInterface = ipaddress.ip_interface(text)
    except ValueError:
        raise error(entry.loc, f"{kw}: {text!r} is not an IP address with an optional /prefix") from None
    ip = interface.ip
    what = f"{kw} {text}"
    if ip.is_loopback or ip.is_multicast or ip.is_unspecified:
        raise error(entry.loc, f"{what}: {ip} cannot be a virtual IP")
    if str(ip) in own:
        raise error(entry.loc, f"{what}: {ip} is {own[str(ip)]}; a virtual IP must be an address of its own")
    for other in vips:
        if other.interface.ip == ip:
            ctx.warn(entry.loc, f"{what}: {ip} is already a virtual IP ({other.loc}); skipped")
            return None

    dev, label, ignored = _options(what, entry.args)
    if dev is not None:
        device = _device(what, dev)
        device_line = f"device = {quote(device)}  # {entry.loc}: dev {device}"
    elif "interface" in s:
        device = _device(what, s["interface"].value("an interface name"))
        device_line = f"device = {quote(device)}  # {s['interface'].loc}: interface"
    else:
        raise error(
            entry.loc,
            f"{what}: no device for this address: add 'dev <device>' to the line or 'interface' to the vrrp_instance",
        )
    label_line = None
    if label is not None:
        if ip.version == 6:
            ignored.append(f"label {label.text} (labels exist for IPv4 addresses only; keepalived ignored it too)")
        elif len(label.text) >= _IFNAMSIZ or not (label.text == device or label.text.startswith(device + ":")):
            ignored.append(
                f'label {label.text} (a label is the device name or starts with "{device}:", '
                f"at most {_IFNAMSIZ - 1} characters)"
            )
        else:
            label_line = f"label = {quote(label.text)}  # {entry.loc}: label {label.text}"

    bare = "" if "/" in text else f" (no prefix: /{interface.network.prefixlen}, as in keepalived)"
    lines = [f"address = {quote(interface.with_prefixlen)}  # {entry.loc}: {kw}{bare}", device_line]
    if label_line is not None:
        lines.append(label_line)
    if ignored:
        ctx.warn(entry.loc, f"{what}: ignored {'; '.join(ignored)}")
        lines.append(f"# {entry.loc}: not translated: {', '.join(i.split(' (', 1)[0] for i in ignored)}")
    if ip.version == 6 and interface.network.prefixlen == 128 and "preferred_lft" not in (a.text for a in entry.args):
        ctx.warn(
            entry.loc,
            f"{what}: keepalived added a /128 address deprecated (preferred_lft 0), so the host did not "
            "pick it as a source address; hasup adds it preferred",
        )
    return _Vip(interface, kw, entry.loc, lines)


def _options(what: str, args: list[Token]) -> tuple[Token | None, Token | None, list[str]]:
    """``dev`` and ``label``, and the ignored options, each ``"words (why)"``."""
    dev: Token | None = None
    label: Token | None = None
    ignored: list[str] = []
    i = 0
    while i < len(args):
        word = args[i].text
        if word in _FLAG_OPTIONS:
            ignored.append(f"{word} ({_FLAG_OPTIONS[word]})")
            i += 1
        elif word in _OPTIONS:
            if i + 1 >= len(args):
                raise error(args[i].loc, f"{what}: {word} needs a value")
            value = args[i + 1]
            i += 2
            if word == "dev":
                if dev is not None:
                    raise error(value.loc, f"{what}: dev is given twice")
                dev = value
            elif word == "label":
                label = value
            elif word != "scope" or value.text not in _GLOBAL_SCOPE:
                ignored.append(f"{word} {value.text} ({_VALUE_OPTIONS[word]})")
        else:  # keepalived skips unknown words one by one
            words: list[str] = []
            while i < len(args) and args[i].text not in _OPTIONS:
                words.append(args[i].text)
                i += 1
            hint = "one address per line" if any(_is_ip(w) for w in words) else "not a keepalived address option"
            ignored.append(f"{' '.join(words)} ({hint})")
    return dev, label, ignored


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_interface(text)
    except ValueError:
        return False
    return True


def _device(what: str, tok: Token) -> str:
    name = tok.text
    if not name or len(name) >= _IFNAMSIZ or "/" in name or name in (".", "..") or any(c.isspace() for c in name):
        raise error(tok.loc, f"{what}: {name!r} is not a network device name")
    return name


def _pick(s: dict[str, Stmt], global_garp: dict[str, Stmt], kw: str) -> Stmt | None:
    """The instance's option, else its ``global_defs`` default."""
    return s.get(kw) or global_garp.get(_GARP[kw])


def _repeat(ctx: Context, s: dict[str, Stmt], global_garp: dict[str, Stmt]) -> _Setting | None:
    stmt = _pick(s, global_garp, "garp_master_repeat")
    if stmt is None:
        return None
    count = max(int(read_number(stmt, integer=True, lo=0, hi=_UINT_MAX)), 1)  # keepalived reads 0 as 1
    if count > 100:
        ctx.warn(stmt.loc, f"{stmt.keyword} {count} clamped to 100 (hasup's garp_repeat is 1..100)")
        count = 100
    return _Setting("garp_repeat", str(count), stmt)


def _delay(ctx: Context, s: dict[str, Stmt], global_garp: dict[str, Stmt]) -> _Setting | None:
    stmt = _pick(s, global_garp, "garp_master_delay")
    if stmt is None:
        return None
    seconds = read_number(stmt, integer=True, lo=0, hi=_UINT_MAX // _TIMER_HZ)
    if seconds > 3600:
        ctx.warn(stmt.loc, f"{stmt.keyword} {seconds:g} clamped to 3600 (hasup's garp_delay is at most 1 h)")
        seconds = 3600
    return _Setting("garp_delay", duration(seconds), stmt)


def _interval(
    ctx: Context, kw: str, version: int, versions: set[int], s: dict[str, Stmt], global_garp: dict[str, Stmt]
) -> _Setting | None:
    """The pause between announcements: ``garp_interval`` (gratuitous ARP) for the IPv4
    addresses, ``gna_interval`` (neighbour advertisements) for the IPv6 ones."""
    if version not in versions:
        if kw in s:
            ctx.warn(s[kw].loc, f"{kw} applies to IPv{version} addresses and this vrrp_instance has none; ignored")
        return None
    stmt = _pick(s, global_garp, kw)
    if stmt is None:
        return None
    seconds = round(read_number(stmt, integer=False, lo=0, hi=_UINT_MAX / _TIMER_HZ), 6)
    if seconds > 10:
        ctx.warn(stmt.loc, f"{stmt.keyword} {seconds:g} clamped to 10 (hasup's garp_interval is at most 10 s)")
        seconds = 10.0
    return _Setting("garp_interval", duration(seconds), stmt)
