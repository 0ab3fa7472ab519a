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

from meshnode.core.addresses import AddressError, IPAddress, parse_address, unicast

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
        if (
            node != peer_node
            and node not in one_each
            and _crosses(address, via_loopback=via_loopback)
        ):
            one_each[node] = address
    pool = list(one_each.values())
    if len(pool) <= SAMPLE:
        rng.shuffle(pool)
        return pool
    return rng.sample(pool, SAMPLE)


def acceptable(address: str, *, via: str) -> bool:
    """Whether an address a peer shared over the session at ``via`` is worth a hint."""
    return _crosses(address, via_loopback=_is_loopback(via))


def next_shuffle(now: float, rng: random.Random) -> float:
    return now + SHUFFLE_INTERVAL * rng.uniform(1 - JITTER, 1 + JITTER)


def _crosses(address: str, *, via_loopback: bool) -> bool:
    ip = _ip(address)
    return ip is not None and not ip.is_link_local and unicast(ip, loopback=via_loopback)


def _is_loopback(address: str) -> bool:
    ip = _ip(address)
    return ip is not None and ip.is_loopback


def _ip(address: str) -> IPAddress | None:
    try:
        host, port = parse_address(address, default_port=0)
        if host is None or port == 0:
            return None
        ip = ipaddress.ip_address(host)
    except (AddressError, ValueError):
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip
