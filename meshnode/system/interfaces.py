"""Which network interfaces mDNS discovery uses: the machine's, read from the OS, and a choice.

Announcing on every interface is a known complaint against other meshes: a
docker0 or VPN address in an advertisement sends peers to an address they
cannot reach, or tells a VPN what happens in the room. By default discovery
uses interfaces that are up, multicast-capable and not loopback, container
bridges, the host ends of container veth pairs or tunnels; the
``mdns_interfaces`` setting names the ones to use instead. (Inside a network
namespace a veth end is an ordinary ``eth0``, and is used.)
"""

from __future__ import annotations

import fnmatch
import ipaddress
from collections.abc import Sequence
from pathlib import Path

import ifaddr
from msgspec import Struct

SYS_NET = Path("/sys/class/net")
# /proc/self/net: the same file, and still visible under the unit's ProcSubset=pid.
IF_INET6 = Path("/proc/self/net/if_inet6")
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_POINTOPOINT = 0x10
IFF_NOARP = 0x80
IFF_MULTICAST = 0x1000
# IPv6 address flags never announced: temporary (RFC 4941: announcing it beside the
# stable one would link the two), deprecated, still tentative, or failed DAD.
IFA_F_TEMPORARY, IFA_F_DADFAILED, IFA_F_DEPRECATED, IFA_F_TENTATIVE = 0x01, 0x08, 0x20, 0x40
_NOT_ANNOUNCED = IFA_F_TEMPORARY | IFA_F_DADFAILED | IFA_F_DEPRECATED | IFA_F_TENTATIVE
SKIPPED_BY_DEFAULT = (
    "lo",
    "docker*",
    "br-*",
    "virbr*",
    "cni*",
    "podman*",
    "veth*",
    "tun*",
    "tap*",
    "wg*",
    "tailscale*",
    "zt*",
    "lxcbr*",
    "vboxnet*",
    "vmnet*",
    "cali*",
    "flannel*",
    "nordlynx*",
)  # names, and prefixes ending in "*"


class Interface(Struct, frozen=True):
    name: str
    index: int
    ipv4: tuple[str, ...]
    ipv6: tuple[str, ...]  # without scope; link-local ones are reached through ``index``
    up: bool
    multicast: bool
    loopback: bool
    point_to_point: bool = False  # a tunnel, whatever its name
    networks: tuple[str, ...] = ()  # the on-link prefixes of its addresses, as CIDR


class Choice(Struct, frozen=True):
    """The interfaces discovery uses, and why each other one is left out."""

    used: tuple[Interface, ...]
    skipped: tuple[tuple[str, str], ...]  # (name, why)

    @property
    def ipv4(self) -> list[str]:
        return [ip for interface in self.used for ip in interface.ipv4]

    @property
    def ipv6_indexes(self) -> list[int]:
        return [interface.index for interface in self.used if interface.ipv6]


def machine_interfaces() -> list[Interface]:
    """Every interface with an address, with its flags where the OS tells them (Linux)."""
    found = []
    unusable = _unusable_ipv6()
    for adapter in ifaddr.get_adapters():
        ipv4, ipv6, networks = [], [], []
        for ip in adapter.ips:
            address = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            if isinstance(ip.ip, str):
                ipv4.append(address)
            elif ipaddress.ip_address(address).packed not in unusable:
                ipv6.append(address)
            else:
                continue
            networks.append(str(ipaddress.ip_interface(f"{address}/{ip.network_prefix}").network))
        flags = _flags(adapter.nice_name)
        found.append(
            Interface(
                name=adapter.nice_name,
                index=adapter.index or 0,
                ipv4=tuple(ipv4),
                ipv6=tuple(ipv6),
                up=flags is None or bool(flags & IFF_UP),
                multicast=flags is None or bool(flags & IFF_MULTICAST),
                loopback=_loopback(adapter.nice_name, ipv4, ipv6, flags),
                point_to_point=flags is not None and bool(flags & (IFF_POINTOPOINT | IFF_NOARP)),
                networks=tuple(networks),
            )
        )
    return found


def _unusable_ipv6() -> set[bytes]:
    """IPv6 addresses the kernel marks temporary, deprecated or tentative (Linux)."""
    try:
        lines = IF_INET6.read_text().splitlines()
    except OSError:
        return set()
    found = set()
    for line in lines:
        fields = line.split()
        if len(fields) >= 5 and int(fields[4], 16) & _NOT_ANNOUNCED:
            found.add(bytes.fromhex(fields[0]))
    return found


def choose(interfaces: Sequence[Interface], names: Sequence[str] | None = None) -> Choice:
    """The interfaces to use: ``names`` (patterns, as ``mdns_interfaces``) or the default rule."""
    used, skipped = [], []
    for interface in interfaces:
        why = _why_not(interface, names)
        if why is None:
            used.append(interface)
        else:
            skipped.append((interface.name, why))
    return Choice(tuple(used), tuple(skipped))


def _why_not(interface: Interface, names: Sequence[str] | None) -> str | None:
    if names is not None:
        if not any(fnmatch.fnmatchcase(interface.name, n) for n in names):
            return "not in mdns_interfaces"
    elif interface.loopback:
        return "loopback"
    elif _skipped_by_default(interface.name):
        return "a container bridge, veth or tunnel (name it in mdns_interfaces to use it)"
    elif interface.point_to_point:
        return "point-to-point: a tunnel (name it in mdns_interfaces to use it)"
    if not interface.up:
        return "down"
    if not interface.multicast:
        return "no multicast"
    if not interface.ipv4 and not interface.ipv6:
        return "no address"
    return None


def _skipped_by_default(name: str) -> bool:
    """Matched by hand: fnmatch would compile a regular expression for each of the 18
    patterns on every start, half a percent of it."""
    return any(
        name.startswith(pattern[:-1]) if pattern.endswith("*") else name == pattern
        for pattern in SKIPPED_BY_DEFAULT
    )


def _flags(name: str) -> int | None:
    try:
        return int((SYS_NET / name / "flags").read_text().strip(), 16)
    except (OSError, ValueError):
        return None  # not Linux, or gone meanwhile: assume the best, as zeroconf would


def _loopback(name: str, ipv4: list[str], ipv6: list[str], flags: int | None) -> bool:
    if flags is not None:
        return bool(flags & IFF_LOOPBACK)
    addresses = [*ipv4, *ipv6]
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)
