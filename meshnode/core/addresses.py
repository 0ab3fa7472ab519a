"""``host:port`` strings for listening and dialling, IPv4 and IPv6.

Accepted forms: ``192.0.2.10:7744``, ``[2001:db8::5]:7744``, ``node.local:7744``,
``:7744`` (every interface, IPv4 and IPv6), and a bare host, which takes the
default port.

``unicast`` is the one rule for where a hint (an mDNS service, a peer's word) may
send this node: ``protocol/peer.md`` §4.5 names its blocks, so that a second
implementation can apply the same one.
"""

from __future__ import annotations

import ipaddress

DEFAULT_PORT = 7744

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# As prefixes rather than ipaddress's is_reserved and friends, whose answers for some
# addresses differ between Python versions (IPv4-mapped loopback, for one).
_NOT_UNICAST_V4 = tuple(
    ipaddress.IPv4Network(block)
    for block in ("0.0.0.0/8", "127.0.0.0/8", "224.0.0.0/4", "240.0.0.0/4")
)  # "this network", loopback, multicast, reserved with the broadcast address
_UNICAST_V6 = tuple(
    ipaddress.IPv6Network(block) for block in ("2000::/3", "fc00::/7", "fe80::/10")
)  # global unicast, unique local, link-local
_LOOPBACK = (ipaddress.IPv4Network("127.0.0.0/8"), ipaddress.IPv6Network("::1/128"))


class AddressError(ValueError):
    """A string that is not a usable ``host:port``."""


def parse_address(
    text: str, *, default_port: int = DEFAULT_PORT, min_port: int = 0
) -> tuple[str | None, int]:
    """(host, port); host None means every interface (for listening).

    ``min_port``: 1 for an address to dial; port 0 only says "any free port" to a listener.
    """
    text = text.strip()
    if not text:
        raise AddressError("an address is host:port, e.g. 192.0.2.10:7744")
    if "://" in text:
        raise AddressError(f"invalid address {text!r}: write host:port, with no scheme before it")
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise AddressError(f"invalid address {text!r}: missing ']'")
        host: str | None = text[1:end]
        rest = text[end + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise AddressError(f"invalid address {text!r}: not an IPv6 address") from None
        if rest and not rest.startswith(":"):
            raise AddressError(f"invalid address {text!r}: expected ':' after ']'")
        port_text = rest[1:] if rest else ""
    elif text.count(":") > 1:
        raise AddressError(f"invalid address {text!r}: write IPv6 addresses as [addr]:port")
    else:
        host, _, port_text = text.partition(":")
    if not port_text:
        port = default_port
    elif not (port_text.isascii() and port_text.isdigit()):
        raise AddressError(
            f"invalid address {text!r}: the port {port_text!r} is not a number from {min_port}"
            " to 65535"
        )
    elif min_port <= int(port_text) <= 65535:
        port = int(port_text)
    else:
        raise AddressError(f"invalid address {text!r}: port must be {min_port} to 65535")
    return (host or None), port


def format_address(host: str | None, port: int) -> str:
    if host is None:
        return f":{port}"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def unicast(ip: IPAddress, *, loopback: bool = False) -> bool:
    """Whether a hint may send this node to ``ip``; loopback only where ``loopback`` allows.

    IPv4-mapped IPv6 is judged as IPv6 (none of its blocks holds it): callers that take
    such an address as IPv4 convert it first. Link-local addresses pass; whether one is
    usable without its interface is the caller's question.
    """
    if loopback and any(ip in block for block in _LOOPBACK if block.version == ip.version):
        return True
    if isinstance(ip, ipaddress.IPv4Address):
        return not any(ip in block for block in _NOT_UNICAST_V4)
    return any(ip in block for block in _UNICAST_V6)
