"""Peer exchange (``protocol/peer.md`` §5.9): what a node tells a peer of others, and what it takes.

HyParView keeps its passive view fresh by shuffles, a random walk that swaps
samples of addresses. meshnode keeps the part that matters on a LAN or two:
each node pushes a random sample of the addresses it has itself completed a
handshake on, once to every new peer, to every peer a second after it reached a
node it had never reached before, and otherwise to one random peer every
``SHUFFLE_INTERVAL``. So a node learns of nodes beyond the reach of its own
multicast (another subnet, behind a dual-homed node) within seconds of the node
between them reaching them, and the passive view stays fresh after that.

Nothing a peer shares is trusted: an address is a hint like any other, bounded
by the policy's quota for the source, and dialled under the same backoff and
rate limit. Addresses that mean something only on one link or one host never
cross: link-local addresses (their scope is an interface of the sender's), and
loopback addresses except between two nodes of one host.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import TYPE_CHECKING

from meshnode.core.addresses import (
    AddressError,
    IPAddress,
    format_address,
    parse_address,
    unicast,
)

if TYPE_CHECKING:
    import random

SAMPLE = 16  # addresses per peers message, of the 32 the protocol allows
SHUFFLE_INTERVAL = 30.0  # seconds between pushes to one random peer
NEWS_DELAY = 1.0  # a node newly reached is told of to every peer after this, with others
JITTER = 0.2  # each interval is drawn from ±20 %, so nodes started together drift apart


def sample_for(
    shareable: Iterable[tuple[str, bytes]],
    *,
    peer_node: bytes,
    peer_address: str,
    rng: random.Random,
) -> list[str]:
    """A random sample of ``shareable`` (address, node) pairs that mean something to the peer.

    One address per node, so that no node (one host listening on many ports, say)
    fills a sample; the peer's own addresses are left out: it knows where it listens.
    """
    via_loopback = _is_loopback(peer_address)
    one_each: dict[bytes, str] = {}
    for address, node in shareable:
        if node == peer_node or node in one_each:
            continue
        parsed = _ip_and_port(address)
        if parsed is not None and _crosses(parsed[0], via_loopback=via_loopback):
            one_each[node] = address
    pool = list(one_each.values())
    if len(pool) <= SAMPLE:
        rng.shuffle(pool)
        return pool
    return rng.sample(pool, SAMPLE)


def taken_as(address: str, *, via: str) -> str | None:
    """An address a peer shared over the session at ``via``, in the canonical form it is a
    hint by (§4.5); None where it is ignored."""
    parsed = _ip_and_port(address)
    if parsed is None:
        return None
    ip, port = parsed
    if not _crosses(ip, via_loopback=_is_loopback(via)):
        return None
    return format_address(str(ip), port)


def next_shuffle(now: float, rng: random.Random) -> float:
    return now + SHUFFLE_INTERVAL * rng.uniform(1 - JITTER, 1 + JITTER)


def _crosses(ip: IPAddress, *, via_loopback: bool) -> bool:
    """Whether ``ip`` means the same to a peer as to this node: not link-local, no zone."""
    if ip.is_link_local or (isinstance(ip, ipaddress.IPv6Address) and ip.scope_id):
        return False
    return unicast(ip, loopback=via_loopback)


def _is_loopback(address: str) -> bool:
    parsed = _ip_and_port(address)
    return parsed is not None and parsed[0].is_loopback


def _ip_and_port(address: str) -> tuple[IPAddress, int] | None:
    """The IP literal and port of ``address``, IPv4-mapped IPv6 as IPv4; None for a name,
    a missing port or anything else."""
    try:
        host, port = parse_address(address, default_port=0)
        if host is None or port == 0:
            return None
        ip = ipaddress.ip_address(host)
    except (AddressError, ValueError):
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped, port
    return ip, port
