"""``[[vip]]`` tables: virtual IP addresses that follow the service.

Each entry is one address with its prefix on one device; the holder adds it once its
service start is confirmed and announces it (gratuitous ARP for IPv4, unsolicited
Neighbour Advertisement for IPv6), and removes it before the service stops. The
announcement defaults are keepalived's: 5 at once (``garp_master_repeat``), back to
back (``garp_interval`` 0), and 5 more after 5 s (``garp_master_delay``).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence

import attrs

from ._errors import ConfigError
from ._rtnl import IPInterface
from ._section import Section
from .protocol import Address, PeerSpec

__all__ = ["VipSettings", "check_devices", "parse_vips"]

_IFNAMSIZ = 16


@attrs.frozen
class VipSettings:
    """One virtual IP address (see the module docstring)."""

    interface: IPInterface
    device: str
    label: str | None = None
    #: Announcements sent right after the address is added.
    garp_repeat: int = 5
    #: Pause between two announcements of one burst.
    garp_interval: float = 0.0
    #: A second burst this long after the first (0: none).
    garp_delay: float = 5.0
    #: Raised at start-up when ``device`` does not exist (built at parse time so that
    #: it carries the file, key and line).
    missing_device: ConfigError | None = attrs.field(default=None, eq=False, repr=False)

    @property
    def text(self) -> str:
        return f"{self.interface.with_prefixlen} dev {self.device}"


def _device_name(section: Section, key: str) -> str:
    name = str(section.get_str(key))
    if not name or len(name) >= _IFNAMSIZ or "/" in name or name in (".", "..") or any(c.isspace() for c in name):
        raise section.error(key, f"{name!r} is not a network device name")
    return name


def parse_vips(sections: Sequence[Section], listen: Address, peers: Sequence[PeerSpec]) -> tuple[VipSettings, ...]:
    """Validate every ``[[vip]]`` table; raise :class:`ConfigError` on the first mistake."""
    own = {listen[0], *(p.address[0] for p in peers)}
    vips: list[VipSettings] = []
    for sub in sections:
        text = sub.get_str("address")
        try:
            interface = ipaddress.ip_interface(text)
        except ValueError:
            raise sub.error(
                "address", f"{text!r} is not an IP address with an optional prefix, e.g. 10.0.0.100/24"
            ) from None
        if interface.ip.is_loopback or interface.ip.is_multicast or interface.ip.is_unspecified:
            raise sub.error("address", f"{interface.ip} cannot be a virtual IP")
        if str(interface.ip) in own:
            raise sub.error("address", f"{interface.ip} is a node's own address (group.listen or group.peers)")
        if any(v.interface.ip == interface.ip for v in vips):
            raise sub.error("address", f"{interface.ip} is listed twice")
        device = _device_name(sub, "device")
        label = sub.get_str("label", None)
        if label is not None:
            if interface.version == 6:
                raise sub.error("label", "labels exist for IPv4 addresses only")
            if len(label) >= _IFNAMSIZ or not (label == device or label.startswith(device + ":")):
                raise sub.error("label", f'must be the device name or start with "{device}:" (at most 15 characters)')
        repeat = sub.get_int("garp_repeat", 5, min=1, max=100)
        interval = sub.get_duration("garp_interval", 0.0, min=0.0, max=10.0)
        delay = sub.get_duration("garp_delay", 5.0, min=0.0, max=3600.0)
        missing = sub.error("device", f"no network device {device!r} on this host")
        sub.finish()
        vips.append(VipSettings(interface, device, label, repeat, interval, delay, missing))
    return tuple(vips)


def check_devices(vips: Sequence[VipSettings]) -> None:
    """Raise the located :class:`ConfigError` of the first device this host lacks."""
    for vip in vips:
        if not os.path.exists(f"/sys/class/net/{vip.device}") and vip.missing_device is not None:
            raise vip.missing_device
