"""What a node multicasts about itself on the local link, and how it reads others'.

Everyone in the room hears an mDNS advertisement, members of the mesh or not,
so it carries nothing an outsider could tie to a node: the instance label is
random, drawn afresh at every start, and the one token in TXT is a keyed hash
of a constant under the network key (``protocol/discovery.md``). Members
compute the same network tag and skip other networks' services without
dialling them; outsiders see a label that says nothing and a tag that differs
from network to network.

Reading is strict and bounded: whatever a service on the link claims is only
a hint, and one that breaks a rule is dropped with a reason of a fixed set
(``AdvertError.kind``), never raised past the bridge.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
from collections.abc import Callable, Iterable

from msgspec import Struct

from meshnode.core.addresses import IPAddress, format_address, unicast

SERVICE_TYPE = "_meshnode._tcp.local."
ADVERT_VERSION = 1
LABEL_PREFIX = "mn-"
LABEL_BYTES = 10  # 80 random bits: unique among any room of nodes, with no probing
TAG_BYTES = 8
MAX_ADDRESSES = 8  # per service, of those this node can reach; more are ignored
MAX_TXT_BYTES = 200  # the whole TXT record of a service we accept, as on the wire
_NETWORK_CONTEXT = b"meshnode/mdns/network/v1"

# The reasons a service is not used: a fixed set, so that counting them stays bounded.
OTHER_NETWORK = "another network"
OTHER_VERSION = "another advertisement version"
MALFORMED = "malformed advertisement"
UNREACHABLE = "no address this node can reach"
NOT_OURS = "not a meshnode instance name"


class AdvertError(ValueError):
    """A service on the link whose advertisement this node will not use.

    ``kind`` is one of the reasons above; the message may say more.
    """

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


def _base32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def instance_label(random_bytes: bytes) -> str:
    """A DNS-SD instance label from ``LABEL_BYTES`` random bytes: ``mn-`` and 16 characters."""
    if len(random_bytes) != LABEL_BYTES:
        raise ValueError(f"a label is made of {LABEL_BYTES} random bytes")
    return LABEL_PREFIX + _base32(random_bytes)


def network_tag(network_key: bytes) -> str:
    """The network's TXT token (``n=``): the same for every member, opaque to others."""
    return _base32(hmac.new(network_key, _NETWORK_CONTEXT, hashlib.sha256).digest()[:TAG_BYTES])


class Advert(Struct, frozen=True):
    """This node's advertisement, ready for a DNS-SD registration."""

    label: str  # the instance label; also the host label of the SRV target
    port: int
    txt: dict[str, str]

    @property
    def instance(self) -> str:
        """The full service instance name, ``<label>._meshnode._tcp.local.``."""
        return f"{self.label}.{SERVICE_TYPE}"

    @property
    def server(self) -> str:
        """The SRV target: a host name of its own, never the machine's host name."""
        return f"{self.label}.local."


def advert_for(network_key: bytes, random_bytes: bytes, port: int) -> Advert:
    """This node's advertisement; ``random_bytes`` (``LABEL_BYTES``) drawn afresh at each start."""
    if not 1 <= port <= 65535:
        raise ValueError(f"a port is 1 to 65535, got {port}")
    txt = {"v": str(ADVERT_VERSION), "n": network_tag(network_key)}
    return Advert(instance_label(random_bytes), port, txt)


def moved(announced: Iterable[str], now: Iterable[str]) -> bool:
    """Whether a node that announced ``announced`` and now has ``now`` to announce has moved
    to other links (none of its addresses is left), and so needs a new label: one kept would
    link its advertisements on the two, which per-network MAC addresses are there to stop.
    While any address stays, that address links them anyway; a node with none is not
    announcing at all."""
    before, after = set(announced), set(now)
    return bool(before) and bool(after) and before.isdisjoint(after)


class Sighting(Struct, frozen=True):
    """A service of this node's network, seen on the link: where it may be dialled."""

    label: str
    addresses: tuple[str, ...]  # host:port, link-local IPv6 with its interface


def label_of(instance: str) -> str:
    """The instance label of a full service name; ``AdvertError`` if no node makes it."""
    suffix = "." + SERVICE_TYPE
    if not instance.lower().endswith(suffix):
        raise AdvertError(NOT_OURS, f"not a {SERVICE_TYPE} service")
    label = instance[: -len(suffix)].lower()
    body = label[len(LABEL_PREFIX) :]
    if not label.startswith(LABEL_PREFIX) or len(body) != 16 or not _is_base32(body):
        raise AdvertError(NOT_OURS)
    return label


class Resolved(Struct, frozen=True):
    """A service as the resolver gave it, before it is judged."""

    instance: str  # the full service instance name
    txt: bytes  # its TXT record as on the wire
    port: int | None  # from SRV
    hosts: tuple[str, ...]  # its addresses; IPv6 link-local ones with their %scope


def read_sighting(
    network_key: bytes, service: Resolved, reachable: Callable[[IPAddress], bool]
) -> Sighting:
    """A resolved service, judged: ``AdvertError`` says why it is not used.

    ``reachable`` says whether an address is on a link this node uses (within
    the prefixes of its own interfaces): a service cannot send this node to
    dial elsewhere.
    """
    label = label_of(service.instance)
    if len(service.txt) > MAX_TXT_BYTES:
        raise AdvertError(MALFORMED, "a TXT record larger than any node sends")
    pairs = _txt_pairs(service.txt)
    port = service.port
    version = pairs.get(b"v")
    if version is None or not version.isdigit():
        raise AdvertError(MALFORMED, "no advertisement version")
    if int(version) != ADVERT_VERSION:
        raise AdvertError(OTHER_VERSION, f"{int(version)}; this node reads {ADVERT_VERSION}")
    if pairs.get(b"n") != network_tag(network_key).encode():
        raise AdvertError(OTHER_NETWORK)
    if port is None or not 1 <= port <= 65535:
        raise AdvertError(MALFORMED, "no usable port")
    ips: list[IPAddress] = []
    for host in service.hosts:
        try:
            ips.append(ipaddress.ip_address(host))
        except ValueError:
            continue
    # Link-local last: a handshake on a routable address makes it one that peer exchange
    # may pass on; one on a link-local address helps this node only.
    ips.sort(key=lambda ip: ip.is_link_local)
    addresses: list[str] = []
    for ip in ips:
        address = format_address(str(ip), port)
        if address in addresses or not _dialable(ip) or not reachable(ip):
            continue
        addresses.append(address)
        if len(addresses) == MAX_ADDRESSES:
            break
    if not addresses:
        raise AdvertError(UNREACHABLE)
    return Sighting(label, tuple(addresses))


def _dialable(ip: IPAddress) -> bool:
    """An address a service may send peers to (``unicast``), IPv6 link-local with its scope."""
    if not unicast(ip):
        return False
    return not (isinstance(ip, ipaddress.IPv6Address) and ip.is_link_local) or bool(ip.scope_id)


def _txt_pairs(txt: bytes) -> dict[bytes, bytes | None]:
    """RFC 6763 §6: length-prefixed strings ``key=value``; keys case-insensitive, first wins.

    A bare ``key`` (no ``=``) has the value None; an empty key is skipped.
    """
    pairs: dict[bytes, bytes | None] = {}
    at = 0
    while at < len(txt):
        size = txt[at]
        if at + 1 + size > len(txt):
            raise AdvertError(MALFORMED, "a TXT string runs past the end of the record")
        item = txt[at + 1 : at + 1 + size]
        at += 1 + size
        key, equals, value = item.partition(b"=")
        key = key.lower()
        if key and key not in pairs:
            pairs[key] = value if equals else None
    return pairs


def _is_base32(text: str) -> bool:
    return all(c in "abcdefghijklmnopqrstuvwxyz234567" for c in text)
