"""What the engine asks its driver to do: the outputs of ``Mesh.handle``.

The driver (the trio runtime, the simulator) carries out each action in the
order given; none needs an answer, and whatever comes of one (a dial that
connects or fails, a connection that ends) reaches the engine as a new event.
"""

from __future__ import annotations

from msgspec import Struct

from meshnode.core.record import Record, RecordError
from meshnode.core.session import SessionClosed
from meshnode.engine.bans import Ban
from meshnode.engine.dissemination import Arrival, Fate
from meshnode.engine.node import NodeError


class Send(Struct, frozen=True):
    conn: int
    data: bytes


class Close(Struct, frozen=True):
    """Send what is queued, then close; ``why`` says how the session ended, for the log."""

    conn: int
    why: SessionClosed


class Dial(Struct, frozen=True):
    address: str


class Banned(Struct, frozen=True):
    node: bytes
    ban: Ban


class Ingested(Struct, frozen=True):
    """What became of a batch of records, and the connection it came from (None: local)."""

    conn: int | None
    arrivals: tuple[Arrival, ...]

    @property
    def stored(self) -> list[Record]:
        """The records now in the store, for watchers."""
        return [a.record for a in self.arrivals if a.fate is Fate.NEW]


class AheadOfClock(Struct, frozen=True):
    """Valid records not stored: created too far ahead of this node's clock."""

    count: int


class Published(Struct, frozen=True):
    """The answer to ``Publish`` (one result per publication) or ``Delete`` (one result)."""

    results: tuple[Record | NodeError | RecordError, ...]


class Imported(Struct, frozen=True):
    """The answer to ``Ingest``: one verdict per record given, in order (``mesh.verdicts``).

    ``Ingested`` still carries the records themselves, to peers and watchers.
    """

    verdicts: tuple[str, ...]


class Purged(Struct, frozen=True):
    freed_bytes: int


class Unbanned(Struct, frozen=True):
    node: bytes
    lifted: bool  # False: there was no ban


Action = (
    Send
    | Close
    | Dial
    | Banned
    | Ingested
    | Imported
    | AheadOfClock
    | Published
    | Purged
    | Unbanned
)
