"""What the engine asks its driver to do: the outputs of ``Mesh.handle``.

The driver (the trio runtime, the simulator) carries out each action in the
order given; none needs an answer, and whatever comes of one (a dial that
connects or fails, a connection that ends) reaches the engine as a new event.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshnode.core.record import Record, RecordError
from meshnode.core.session import SessionClosed
from meshnode.engine.bans import Ban
from meshnode.engine.dissemination import Arrival, Fate
from meshnode.engine.node import NodeError


@dataclass(frozen=True, slots=True)
class Send:
    conn: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Close:
    """Send what is queued, then close; ``why`` says how the session ended, for the log."""

    conn: int
    why: SessionClosed


@dataclass(frozen=True, slots=True)
class Dial:
    address: str


@dataclass(frozen=True, slots=True)
class Banned:
    node: bytes
    ban: Ban


@dataclass(frozen=True, slots=True)
class Ingested:
    """What became of a batch of records, and the connection it came from (None: local)."""

    conn: int | None
    arrivals: tuple[Arrival, ...]

    @property
    def stored(self) -> list[Record]:
        """The records now in the store, for watchers."""
        return [a.record for a in self.arrivals if a.fate is Fate.NEW]


@dataclass(frozen=True, slots=True)
class AheadOfClock:
    """Valid records not stored: created too far ahead of this node's clock."""

    count: int


@dataclass(frozen=True, slots=True)
class Published:
    """The answer to ``Publish`` (one result per publication) or ``Delete`` (one result)."""

    results: tuple[Record | NodeError | RecordError, ...]


@dataclass(frozen=True, slots=True)
class Imported:
    """The answer to ``Ingest``: one verdict per record given, in order (``mesh.verdicts``).

    ``Ingested`` still carries the records themselves, to peers and watchers.
    """

    verdicts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Purged:
    freed_bytes: int


@dataclass(frozen=True, slots=True)
class Unbanned:
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
