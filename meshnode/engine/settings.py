"""The node's settings: one tree, built and checked once where it is read, then passed whole.

``meshnode.system.config`` fills it from ``config.toml`` and the command line; the
daemon hands each part to the piece it configures (``store`` to the store,
``session`` to every peer session, ``peers`` to the peer service) and nothing
copies a setting field by field on the way. Every field has the value a node
runs with when nothing says otherwise. Pure data: importing it costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from meshnode.core.netkey import PUBLIC_NETWORK_KEY
from meshnode.core.session import SessionConfig
from meshnode.store.base import StoreLimits

Address = tuple[str | None, int]  # host (None: every interface) and port


@dataclass(frozen=True)
class PeerSettings:
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
    dial_hints: bool = False  # dial addresses peers announce, not only ``peers``


@dataclass(frozen=True)
class Settings:
    peers: PeerSettings = field(default_factory=PeerSettings)
    store: StoreLimits = field(default_factory=StoreLimits)
    session: SessionConfig = field(default_factory=SessionConfig)
