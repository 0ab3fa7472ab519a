"""Which peers get which newly stored records: the relay decision, behind one small interface.

The engine hands a strategy every batch of arrivals (what became of each
record, and the connection it came from) and the sessions that are open; the
strategy says what to push where. Today's ``EagerPush`` floods: every new record
to every other session, so a record crosses each link about once in each
direction. Every batch reaches the strategy, duplicates included, with the
session it came from: a lazy-push strategy (Plumtree's: push on a tree, announce
ids to the rest, graft on a miss) prunes a link from its duplicates. It will
also need to announce ids and a timer to graft on; those hooks come with it.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Protocol

from msgspec import Struct

from meshnode.core.record import Record


class Fate(enum.Enum):
    NEW = "new"  # stored: no version of it was here
    DUPLICATE = "duplicate"  # this exact record was here already
    SUPERSEDED = "superseded"  # a newer version of its key was here
    REJECTED = "rejected"  # not stored: dead, over a quota, or from the future


class Arrival(Struct, frozen=True):
    record: Record
    fate: Fate


class Dissemination(Protocol):
    def route(
        self, arrivals: Sequence[Arrival], source: int | None, sessions: Sequence[int]
    ) -> dict[int, list[bytes]]:
        """The records to push to each session, for arrivals from ``source`` (None: local)."""
        ...

    def forget(self, conn: int) -> None:
        """A session ended: drop whatever the strategy knew of it."""
        ...


class EagerPush:
    """Flood: every newly stored record goes to every open session but its source."""

    def route(
        self, arrivals: Sequence[Arrival], source: int | None, sessions: Sequence[int]
    ) -> dict[int, list[bytes]]:
        raws = [a.record.raw for a in arrivals if a.fate is Fate.NEW]
        if not raws:
            return {}
        return {conn: raws for conn in sessions if conn != source}

    def forget(self, conn: int) -> None:
        pass
