"""Gratuitous ARP / unsolicited NA: frames byte by byte, then real caches in two namespaces.

The frame tests are pure. The namespace tests (root only; fail under ``CI=true``
otherwise) join two namespaces with a veth pair, seed the "client" namespace with a
neighbour entry mapping the VIP to a wrong MAC, run :func:`hasup._announce.announce` in
the other namespace and wait until the client's entry carries the sender's MAC.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hasup._announce import announce, arp_frame, icmpv6_checksum, na_frame
from tests._support import missing_component, wait_until

pytestmark = pytest.mark.netns

REPO_ROOT = Path(__file__).resolve().parents[1]
MAC = bytes.fromhex("020000abcdef")
WRONG_MAC = "02:00:00:00:00:01"
V4 = ipaddress.IPv4Address("192.0.2.10")
V6 = ipaddress.IPv6Address("2001:db8::10")


def reference_checksum(src: bytes, dst: bytes, message: bytes) -> int:
    """RFC 1071 written out byte by byte, independently of the module's version."""
    data = src + dst + len(message).to_bytes(4, "big") + bytes([0, 0, 0, 58]) + message
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) + (data[i + 1] if i + 1 < len(data) else 0)
        total = (total & 0xFFFF) + (total >> 16)  # end-around carry at every step
    return 0xFFFF - total


# -- frames -------------------------------------------------------------------


def test_arp_frame_fields() -> None:
    frame = arp_frame(MAC, V4)
    assert len(frame) == 14 + 28
    assert frame[0:6] == b"\xff" * 6  # Ethernet broadcast
    assert frame[6:12] == MAC
    assert frame[12:14] == b"\x08\x06"
    arp = frame[14:]
    assert arp[0:2] == b"\x00\x01"  # htype Ethernet
    assert arp[2:4] == b"\x08\x00"  # ptype IPv4
    assert arp[4] == 6 and arp[5] == 4
    assert arp[6:8] == b"\x00\x01"  # request
    assert arp[8:14] == MAC  # sender MAC
    assert arp[14:18] == bytes([192, 0, 2, 10])  # sender IP = VIP
    assert arp[18:24] == b"\xff" * 6  # target MAC, as keepalived
    assert arp[24:28] == bytes([192, 0, 2, 10])  # target IP = VIP


def test_na_frame_fields() -> None:
    frame = na_frame(MAC, V6)
    assert len(frame) == 14 + 40 + 32
    assert frame[0:6] == bytes.fromhex("333300000001")
    assert frame[6:12] == MAC
    assert frame[12:14] == b"\x86\xdd"
    ip6 = frame[14:54]
    assert ip6[0:4] == b"\x60\x00\x00\x00"  # version 6, class 0, flow 0
    assert ip6[4:6] == (32).to_bytes(2, "big")  # payload length
    assert ip6[6] == 58 and ip6[7] == 255  # ICMPv6, hop limit 255
    assert ip6[8:24] == V6.packed
    assert ip6[24:40] == ipaddress.IPv6Address("ff02::1").packed
    icmp = frame[54:]
    assert icmp[0] == 136 and icmp[1] == 0
    assert icmp[4] == 0x20  # Override only: Router and Solicited clear
    assert icmp[5:8] == b"\x00\x00\x00"  # reserved
    assert icmp[8:24] == V6.packed  # target
    assert icmp[24] == 2 and icmp[25] == 1  # target link-layer address, 8 bytes
    assert icmp[26:32] == MAC
    checksum = struct.unpack("!H", icmp[2:4])[0]
    zeroed = icmp[:2] + b"\x00\x00" + icmp[4:]
    assert checksum == reference_checksum(ip6[8:24], ip6[24:40], zeroed)
    assert reference_checksum(ip6[8:24], ip6[24:40], icmp) == 0  # verifies as a receiver would


@given(mac=st.binary(min_size=6, max_size=6), raw=st.binary(min_size=16, max_size=16))
def test_na_checksum_always_verifies(mac: bytes, raw: bytes) -> None:
    ip = ipaddress.IPv6Address(raw)
    icmp = na_frame(mac, ip)[54:]
    assert reference_checksum(ip.packed, ipaddress.IPv6Address("ff02::1").packed, icmp) == 0


def test_checksum_of_odd_length_message() -> None:
    src, dst = V6, ipaddress.IPv6Address("ff02::1")
    assert icmpv6_checksum(src, dst, b"\x01\x02\x03") == reference_checksum(src.packed, dst.packed, b"\x01\x02\x03")


def test_frames_reject_a_short_mac() -> None:
    with pytest.raises(ValueError, match="6 bytes"):
        arp_frame(MAC[:5], V4)
    with pytest.raises(ValueError, match="6 bytes"):
        na_frame(MAC[:5], V6)


@pytest.mark.anyio
async def test_missing_device_raises_naming_it() -> None:
    device = f"hsan{os.getpid()}x"
    with pytest.raises(OSError, match=rf"{device}.*no such network device") as info:
        await announce(V4, device)
    assert str(V4) in str(info.value)


# -- real namespaces ----------------------------------------------------------


def need_root() -> None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        missing_component("network namespaces", "needs root and iproute2")


def ip(*args: str) -> str:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} -> {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def operstate(ns: str) -> str:
    state: str = json.loads(ip("-n", ns, "-j", "link", "show", "dev", ns))[0].get("operstate", "")
    return state


@dataclass(frozen=True)
class Pair:
    sender: str  # namespace (and veth end) that holds the VIP and announces it
    client: str  # namespace (and veth end) whose neighbour cache must follow
    net: int  # 10.250.<net>.0/24

    def mac(self) -> str:
        mac: str = json.loads(ip("-n", self.sender, "-j", "link", "show", "dev", self.sender))[0]["address"]
        return mac

    def client_lladdr(self, vip: str) -> str | None:
        entries = json.loads(ip("-n", self.client, "-j", "neigh", "show", vip, "dev", self.client) or "[]")
        return entries[0].get("lladdr") if entries else None


@pytest.fixture
def pair() -> Iterator[Pair]:
    need_root()
    tag = f"hsan{os.getpid()}"
    p = Pair(sender=f"{tag}a", client=f"{tag}b", net=os.getpid() % 250 + 1)
    try:
        ip("netns", "add", p.sender)
        ip("netns", "add", p.client)
        ip("link", "add", p.sender, "netns", p.sender, "type", "veth", "peer", "name", p.client, "netns", p.client)
        for ns, host in ((p.sender, 1), (p.client, 2)):
            ip("-n", ns, "addr", "add", f"10.250.{p.net}.{host}/24", "dev", ns)
            ip("-n", ns, "addr", "add", f"fd00:250::{host}/64", "dev", ns, "nodad")
            ip("-n", ns, "link", "set", ns, "up")
        # Until the kernel's linkwatch has run for a new link (up to a second, longer on
        # a loaded machine) its qdisc drops every frame: wait for both ends to be UP.
        for ns in (p.sender, p.client):
            wait_until(lambda ns=ns: operstate(ns) == "UP", timeout=20, what=f"{ns} operationally up")
        yield p
    finally:
        for ns in (p.sender, p.client):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def run_announce(ns: str, vip: str, device: str, *, repeat: int, setpriv: tuple[str, ...] = ()) -> str:
    code = (
        "import anyio, functools, ipaddress\n"
        "from hasup._announce import announce\n"
        f"call = functools.partial(announce, ipaddress.ip_address({vip!r}), {device!r}, repeat={repeat}, interval=0.05)\n"
        "print(anyio.run(call))\n"
    )
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, *setpriv, sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0 or setpriv, proc.stderr
    return proc.stdout.strip() if proc.returncode == 0 else proc.stderr


@pytest.mark.parametrize(("vip", "prefix"), [("10.250.{net}.100", "24"), ("fd00:250::100", "64")])
def test_client_cache_follows_the_announcement(pair: Pair, vip: str, prefix: str) -> None:
    vip = vip.format(net=pair.net)
    ip("-n", pair.client, "neigh", "replace", vip, "lladdr", WRONG_MAC, "dev", pair.client, "nud", "stale")
    ip("-n", pair.sender, "addr", "add", f"{vip}/{prefix}", "dev", pair.sender, *(("nodad",) if ":" in vip else ()))
    assert pair.client_lladdr(vip) == WRONG_MAC  # adding the VIP announced nothing by itself
    sender_mac = pair.mac()
    assert run_announce(pair.sender, vip, pair.sender, repeat=3) == "3"
    wait_until(
        lambda: pair.client_lladdr(vip) == sender_mac,
        timeout=10,
        what=f"{pair.client}'s entry for {vip} to become {sender_mac}",
    )


def test_without_cap_net_raw_the_socket_error_names_device(pair: Pair) -> None:
    if shutil.which("setpriv") is None:
        missing_component("setpriv", "needs util-linux's setpriv to drop CAP_NET_RAW")
    drop = ("setpriv", "--inh-caps=-net_raw", "--bounding-set=-net_raw")
    err = run_announce(pair.sender, "fd00:250::1", pair.sender, repeat=1, setpriv=drop)
    assert "OSError" in err and "CAP_NET_RAW" in err and pair.sender in err and "fd00:250::1" in err, err
