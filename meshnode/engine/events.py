"""What happens to a node, as the engine hears of it: the inputs of ``Mesh.handle``.

Every event comes with an ``Instant``: the one reading of the clock the driver
took for it, monotonic and wall time together, so no part of the engine ever
sees two clocks disagree about "now". Connections are named by the driver's own
numbers (``conn``), as a kernel names sockets by file descriptors; the engine
learns of a connection only once its handshake has finished.
"""

from __future__ import annotations

from collections.abc import Sequence

from msgspec import Struct

from meshnode.core.session import Channel
from meshnode.engine.node import Publication
from meshnode.engine.settings import Settings


class Instant(Struct, frozen=True):
    """One reading of the clock: ``mono`` for timers (seconds), ``wall_ms`` for records."""

    mono: float
    wall_ms: int


class Opened(Struct, frozen=True):
    """A connection finished its handshake with ``remote``.

    ``address`` is where it was dialled (``initiator``) or where it came from;
    ``source`` is what the admission quotas count it as (an IPv4 address, an
    IPv6 /64), which also names where its records came from.
    """

    conn: int
    remote: bytes
    initiator: bool
    channel: Channel
    address: str
    source: str


class Received(Struct, frozen=True):
    conn: int
    data: bytes


class Congested(Struct, frozen=True):
    """The connection holds more unsent bytes than it should: send it nothing more for now."""

    conn: int


class Drained(Struct, frozen=True):
    """A congested connection has sent what it held: it may take bytes again."""

    conn: int


class Lost(Struct, frozen=True):
    """The connection is gone, whoever ended it."""

    conn: int


class DialFailed(Struct, frozen=True):
    """A ``Dial`` came to nothing: unreachable, refused, or a handshake that failed.

    ``is_self``: the handshake found this node itself at the address. ``why``: what the
    driver saw, in words for the operator (``connection refused``); the engine only keeps it.
    """

    address: str
    is_self: bool = False
    why: str = ""


class Hint(Struct, frozen=True):
    """Discovery (or an operator) says a node may accept peers at ``address``."""

    address: str
    source: str  # who says so: "hello", "mdns", "exchange", ...
    group: str | None = None  # addresses of one node, as the source knows it: dialled in turn


class Withdrawn(Struct, frozen=True):
    """The source of a hint takes it back (an mDNS service went away): forget it unless in use."""

    address: str
    source: str


class Listening(Struct, frozen=True):
    """Where this node accepts peers, announced in every hello from now on."""

    addresses: tuple[str, ...]


class Publish(Struct, frozen=True):
    publications: Sequence[Publication]


class Delete(Struct, frozen=True):
    key: str


class Ingest(Struct, frozen=True):
    """Records from outside any session (a bundle, a test)."""

    raws: Sequence[bytes]


class Purge(Struct, frozen=True):
    """Time to drop expired records and old tombstones."""


class Tick(Struct, frozen=True):
    """A timer may be due (``Mesh.next_timer`` said when)."""


class Unban(Struct, frozen=True):
    node: bytes


class Reconfigure(Struct, frozen=True):
    """The operator changed the settings (a reload): what can change at run time does.

    Limits, quotas and static peers apply at once; session settings to sessions
    opened from now on. A new network key ends every session: they were keyed by
    the old one, and the node has left that mesh.
    """

    settings: Settings


class SyncNow(Struct, frozen=True):
    """Someone waits to be caught up (``meshnode sync --wait``): reconcile with each peer now.

    A session that began a round in the last few seconds, or whose last round's
    records are still arriving, is left alone (``PeerSession.resync``).
    """


class Stop(Struct, frozen=True):
    """The node is leaving: say goodbye to every peer."""


Event = (
    Opened
    | Received
    | Congested
    | Drained
    | Lost
    | DialFailed
    | Hint
    | Withdrawn
    | Listening
    | Publish
    | Delete
    | Ingest
    | Purge
    | Tick
    | Unban
    | Reconfigure
    | SyncNow
    | Stop
)
