"""The node's settings: one tree, built and checked once where it is read, then passed whole.

``meshnode.system.config`` fills it from ``config.toml`` and the command line; the
daemon hands each part to the piece it configures (``store`` to the store,
``session`` to every peer session, ``peers`` to the peer service) and nothing
copies a setting field by field on the way. Every field has the value a node
runs with when nothing says otherwise. Pure data: importing it costs nothing.
"""

from __future__ import annotations

from msgspec import Struct, field

from meshnode.core.netkey import PUBLIC_NETWORK_KEY
from meshnode.core.session import SessionConfig
from meshnode.store.base import StoreLimits

Address = tuple[str | None, int]  # host (None: every interface) and port


class SettingsError(ValueError):
    """Settings that contradict each other; the message says which and why."""


class PeerSettings(Struct, frozen=True):
    """Whom the node talks to and how patiently."""

    network_key: bytes = PUBLIC_NETWORK_KEY
    listen: tuple[Address, ...] = ()
    peers: tuple[tuple[str, int], ...] = ()  # dialled and kept connected
    handshake_timeout: float = 10.0
    message_1_timeout: float = 2.0  # an inbound connection's first message, from accept
    connect_timeout: float = 10.0
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    max_peers: int = 128  # sessions at once, either direction
    outbound_slots: int = 8  # of those, kept for addresses this node chose to dial
    # Hints are dialled while the node has fewer sessions than this, either way (the overlay's
    # degree: at an event, a handful of random neighbours rather than the whole room) ...
    target_degree: int = 6
    min_outbound: int = 2  # ... or fewer than this that it dialled: inbound cannot eclipse it
    # The hint sources whose addresses are dialled, besides ``peers``: "mdns" and "exchange"
    # when discovery is on. "hello" (what peers say they listen on) is recorded, never dialled
    # by default.
    dial_sources: frozenset[str] = frozenset()
    exchange: bool = True  # the peer-exchange feature: share and hear addresses of other nodes

    def __post_init__(self) -> None:
        if self.max_peers < 1:
            raise SettingsError("max_peers must be at least 1")
        if not 0 <= self.outbound_slots < self.max_peers:
            raise SettingsError(
                f"outbound_slots must be 0 to {self.max_peers - 1} (max_peers - 1),"
                " so that peers can still dial in"
            )
        if self.target_degree < 1:
            raise SettingsError("target_degree must be at least 1")
        if self.min_outbound < 0:
            raise SettingsError("min_outbound must be 0 or more")
        if len(self.peers) >= self.max_peers:
            raise SettingsError(
                f"{len(self.peers)} peers to keep connected leave no room under max_peers"
                f" ({self.max_peers}) for peers dialling in"
            )


class DiscoverySettings(Struct, frozen=True):
    """How the node finds peers without being told (``protocol/discovery.md``)."""

    mdns: bool = True  # announce and browse on the local link
    interfaces: tuple[str, ...] | None = None  # names or patterns; None: the default rule


class Settings(Struct, frozen=True):
    peers: PeerSettings = field(default_factory=PeerSettings)
    discovery: DiscoverySettings = field(default_factory=DiscoverySettings)
    store: StoreLimits = field(default_factory=StoreLimits)
    session: SessionConfig = field(default_factory=SessionConfig)
