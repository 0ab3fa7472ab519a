"""What a node multicasts about itself on the local link, and how it reads others'.

Everyone in the room hears an mDNS advertisement, members of the mesh or not,
so it carries nothing an outsider could tie to a node: the instance name is a
keyed hash of the node's public key under the network key, and the one token
in TXT is a keyed hash of a constant under the same key (``protocol/discovery.md``).
Members compute the same network tag and skip other networks' services
without dialling them; outsiders see tokens that differ from network to
network and say nothing of the node ids behind them.

Decoding is strict and bounded: whatever a service on the link claims is
only a hint, and a malformed one is dropped with the reason, never raised
past the bridge.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
from dataclasses import dataclass

from meshnode.core.addresses import format_address

SERVICE_TYPE = "_meshnode._tcp.local."
ADVERT_VERSION = 1
LABEL_PREFIX = "mn-"
LABEL_BYTES = 10  # 80 bits: unique by construction among any room of nodes
TAG_BYTES = 8
MAX_ADDRESSES = 8  # per service; more are ignored
MAX_TXT_BYTES = 200  # the whole TXT record of a service we accept
_INSTANCE_CONTEXT = b"meshnode/mdns/instance/v1"
_NETWORK_CONTEXT = b"meshnode/mdns/network/v1"


class AdvertError(ValueError):
    """A service on the link whose advertisement this node will not use; ``str`` says why."""


def _token(key: bytes, message: bytes, size: int) -> str:
    digest = hmac.new(key, message, hashlib.sha256).digest()[:size]
    return base64.b32encode(digest).decode("ascii").rstrip("=").lower()


def instance_label(network_key: bytes, public_key: bytes) -> str:
    """The node's DNS-SD instance label on a network: ``mn-`` and 16 base32 characters."""
    return LABEL_PREFIX + _token(network_key, _INSTANCE_CONTEXT + public_key, LABEL_BYTES)


def network_tag(network_key: bytes) -> str:
    """The network's TXT token (``n=``): the same for every member, opaque to others."""
    return _token(network_key, _NETWORK_CONTEXT, TAG_BYTES)


@dataclass(frozen=True, slots=True)
class Advert:
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


def advert_for(network_key: bytes, public_key: bytes, port: int) -> Advert:
    if not 1 <= port <= 65535:
        raise ValueError(f"a port is 1 to 65535, got {port}")
    txt = {"v": str(ADVERT_VERSION), "n": network_tag(network_key)}
    return Advert(instance_label(network_key, public_key), port, txt)


@dataclass(frozen=True, slots=True)
class Sighting:
    """A service of this node's network, seen on the link: where it may be dialled."""

    label: str
    addresses: tuple[str, ...]  # host:port, link-local IPv6 with its interface


def label_of(instance: str) -> str:
    """The instance label of a full service name; ``AdvertError`` if it is not ours."""
    suffix = "." + SERVICE_TYPE
    if not instance.endswith(suffix):
        raise AdvertError(f"not a {SERVICE_TYPE} service")
    label = instance[: -len(suffix)]
    body = label[len(LABEL_PREFIX) :]
    if not label.startswith(LABEL_PREFIX) or len(body) != 16 or not _is_base32(body):
        raise AdvertError("an instance name that no node makes")
    return label


def read_sighting(
    network_key: bytes,
    instance: str,
    txt: dict[bytes, bytes | None],
    port: int | None,
    hosts: list[str],
) -> Sighting:
    """A service's advertisement as resolved, judged: ``AdvertError`` says why it is not used.

    ``hosts`` are its addresses as the resolver gives them (IPv6 link-local
    ones with ``%interface``); ``txt`` its TXT pairs, raw.
    """
    label = label_of(instance)
    if sum(len(k) + len(v or b"") + 2 for k, v in txt.items()) > MAX_TXT_BYTES:
        raise AdvertError("a TXT record larger than any node sends")
    version = txt.get(b"v")
    if version is None or not version.isdigit():
        raise AdvertError("no advertisement version")
    if int(version) != ADVERT_VERSION:
        raise AdvertError(f"advertisement version {int(version)}; this node reads {ADVERT_VERSION}")
    if txt.get(b"n") != network_tag(network_key).encode():
        raise AdvertError("another network")
    if port is None or not 1 <= port <= 65535:
        raise AdvertError("no usable port")
    addresses: list[str] = []
    for host in hosts[:MAX_ADDRESSES]:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            continue
        if ip.is_unspecified or ip.is_multicast:
            continue
        if ip.version == 6 and ip.is_link_local and not getattr(ip, "scope_id", None):
            continue  # fe80::/10 without its interface cannot be dialled
        addresses.append(format_address(str(ip), port))
    if not addresses:
        raise AdvertError("no usable address")
    return Sighting(label, tuple(dict.fromkeys(addresses)))


def _is_base32(text: str) -> bool:
    return all(c in "abcdefghijklmnopqrstuvwxyz234567" for c in text)
