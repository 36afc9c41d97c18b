"""Gratuitous ARP and unsolicited Neighbour Advertisements for virtual IPs, over AF_PACKET.

When a virtual IP moves to this node, switches and clients on the segment still map it
to the previous holder's MAC until their ARP/neighbour cache entries age out. Announcing
the address makes them update at once: switches learn the new port from the frame's
source MAC, and hosts that already have an entry for the address overwrite it with ours.

* IPv4: a gratuitous ARP *request* broadcast to ``ff:ff:ff:ff:ff:ff``: sender and
  target protocol address are both the VIP, sender hardware address is the device MAC
  and target hardware address is ``ff:ff:ff:ff:ff:ff``, as keepalived sends it.
* IPv6: an unsolicited Neighbour Advertisement (RFC 4861 §4.4, §7.2.6) from the VIP to
  all-nodes ``ff02::1`` (Ethernet ``33:33:00:00:00:01``, RFC 2464 §7), hop limit 255,
  Override set, Solicited and Router clear, with a target link-layer address option
  carrying the device MAC. The ICMPv6 checksum is computed here over the pseudo-header.

Frames are built whole (Ethernet header included) by the pure functions :func:`arp_frame`
and :func:`na_frame` and sent with a non-blocking ``sendto`` on an ``AF_PACKET``
``SOCK_RAW`` socket bound to the device; the socket is opened with protocol 0, so it
never receives anything. Opening it needs ``CAP_NET_RAW``.

Followed: keepalived's ``keepalived/vrrp/vrrp_arp.c`` (``send_gratuitous_arp_immediate``)
and ``keepalived/vrrp/vrrp_ndisc.c`` (``ndisc_send_unsolicited_na_immediate``,
``ndisc_icmp6_cksum``), https://github.com/keepalived/keepalived. Unlike keepalived,
the NA's Router flag is always clear (a VIP holder is not announced as a router).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import struct
from pathlib import Path

import anyio
import anyio.lowlevel

__all__ = ["announce", "arp_frame", "icmpv6_checksum", "na_frame", "read_mac"]

log = logging.getLogger("hasup")

ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
BROADCAST_MAC = b"\xff" * 6
ALL_NODES_MAC = b"\x33\x33\x00\x00\x00\x01"  # RFC 2464 §7: 33:33 + low 32 bits of ff02::1
ALL_NODES = ipaddress.IPv6Address("ff02::1")
IPPROTO_ICMPV6 = 58
ND_NEIGHBOR_ADVERT = 136
ND_OPT_TARGET_LL_ADDR = 2
NA_FLAG_ROUTER = 0x80000000
NA_FLAG_SOLICITED = 0x40000000
NA_FLAG_OVERRIDE = 0x20000000

_ETH = struct.Struct("!6s6sH")
_ARP = struct.Struct("!HHBBH6s4s6s4s")
_IPV6 = struct.Struct("!IHBB16s16s")
_NA = struct.Struct("!BBHI16sBB6s")  # ICMPv6 header, flags, target, one TLLA option


def _mac_bytes(mac: bytes) -> bytes:
    if len(mac) != 6:
        raise ValueError(f"an Ethernet address is 6 bytes, not {len(mac)}: {mac.hex(':')}")
    return mac


def arp_frame(mac: bytes, ip: ipaddress.IPv4Address) -> bytes:
    """A gratuitous ARP request for ``ip`` from ``mac``: Ethernet header + 28-byte ARP."""
    mac = _mac_bytes(mac)
    eth = _ETH.pack(BROADCAST_MAC, mac, ETH_P_ARP)
    # htype 1 (Ethernet), ptype IPv4, hlen 6, plen 4, op 1 (request); target MAC is
    # all-ones as in keepalived (RFC 5227 would use zeros; both update caches).
    arp = _ARP.pack(1, 0x0800, 6, 4, 1, mac, ip.packed, BROADCAST_MAC, ip.packed)
    return eth + arp


def icmpv6_checksum(src: ipaddress.IPv6Address, dst: ipaddress.IPv6Address, message: bytes) -> int:
    """RFC 4443 §2.3: one's-complement sum over the pseudo-header and ``message``."""
    data = src.packed + dst.packed + struct.pack("!I3xB", len(message), IPPROTO_ICMPV6) + message
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def na_frame(mac: bytes, ip: ipaddress.IPv6Address) -> bytes:
    """An unsolicited Neighbour Advertisement for ``ip`` from ``mac``, to ``ff02::1``."""
    mac = _mac_bytes(mac)

    def icmp(checksum: int) -> bytes:
        # option length is in units of 8 bytes: type + length + 6-byte MAC = 1
        return _NA.pack(ND_NEIGHBOR_ADVERT, 0, checksum, NA_FLAG_OVERRIDE, ip.packed, ND_OPT_TARGET_LL_ADDR, 1, mac)

    message = icmp(icmpv6_checksum(ip, ALL_NODES, icmp(0)))
    # version 6, traffic class 0, flow label 0; payload length; next header; hop limit
    ipv6 = _IPV6.pack(6 << 28, len(message), IPPROTO_ICMPV6, 255, ip.packed, ALL_NODES.packed)
    return _ETH.pack(ALL_NODES_MAC, mac, ETH_P_IPV6) + ipv6 + message


def read_mac(device: str) -> bytes:
    """The device's hardware address from ``/sys/class/net/<device>/address``."""
    if not device or "/" in device or device in {".", ".."} or len(device) >= 16:
        raise OSError(errno.ENODEV, f"invalid network device name {device!r}")
    try:
        text = (Path("/sys/class/net") / device / "address").read_text().strip()
    except FileNotFoundError:
        raise OSError(errno.ENODEV, f"no such network device {device!r}") from None
    try:
        return _mac_bytes(bytes.fromhex(text.replace(":", "")))
    except ValueError:
        raise OSError(errno.EINVAL, f"network device {device!r} has no Ethernet address ({text!r})") from None


async def announce(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
    device: str,
    *,
    repeat: int = 5,
    interval: float = 0.0,
) -> int:
    """Send ``repeat`` announcements of ``address`` out of ``device``, ``interval`` s apart.

    Returns how many were sent: a send the kernel refuses (interface down, transmit
    queue full) is logged and not counted. Raises :class:`OSError` naming the device and
    the address when the device does not exist or the socket cannot be opened or bound
    (without ``CAP_NET_RAW``, for instance).
    """
    if repeat < 0 or interval < 0:
        raise ValueError(f"repeat and interval must not be negative (got {repeat}, {interval})")
    what = f"announce {address} on {device}"
    try:
        mac = read_mac(device)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot {what}: {exc.strerror}") from None
    if isinstance(address, ipaddress.IPv4Address):
        frame, ethertype = arp_frame(mac, address), ETH_P_ARP
    else:
        frame, ethertype = na_frame(mac, address), ETH_P_IPV6
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC, 0)
    except OSError as exc:
        hint = " (needs CAP_NET_RAW)" if exc.errno in {errno.EPERM, errno.EACCES} else ""
        raise OSError(exc.errno, f"cannot {what}: AF_PACKET socket: {exc.strerror}{hint}") from exc
    sent = 0
    with sock:
        try:
            sock.bind((device, 0))
        except OSError as exc:
            raise OSError(exc.errno, f"cannot {what}: bind: {exc.strerror}") from exc
        for n in range(repeat):
            if n:
                await anyio.sleep(interval)
            try:
                sock.sendto(frame, (device, ethertype))
            except OSError as exc:
                log.warning("%s: send %d/%d failed: %s", what, n + 1, repeat, exc.strerror or exc)
            else:
                sent += 1
    if repeat < 2:
        await anyio.lowlevel.checkpoint()  # a cancellation point even without a sleep
    return sent
