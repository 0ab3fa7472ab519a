"""How long and through whom the node has known each foreign author: who is evicted first.

A full store must make room, and whom it evicts decides who can be pushed out.
Evicting from the author holding the most bytes lets a Sybil flood (thousands
of new one-record authors, none of them big) displace every honest author the
node held. So authors have a standing: a **newcomer** is one first stored less
than ``newcomer_ms`` ago and delivered by fewer than ``ESTABLISHING_SOURCES``
distinct peers; every other author is **established**. Records the user
imported (no source) and authors held before standings were kept are
established from the start.

Newcomers compete with newcomers: a newcomer's record may only evict records of
newcomers, taken from the peer that introduced the most newcomer bytes, newest
author first, so a flooding peer pushes out its own authors before anyone
else's. Only an established author's record may evict an established author's
(``protocol/records.md`` §7, "Quotas"). Pure bookkeeping: the store persists
what ``note`` reports changed and passes the time in.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

ESTABLISHING_SOURCES = 3  # distinct peers that delivered an author's records
HOUR_MS = 3600 * 1000


@dataclass(frozen=True, slots=True)
class Standing:
    """What the node knows of a foreign author: since when, and from which peers."""

    first_seen_ms: int
    sources: tuple[bytes, ...]  # the introducer first; at most ESTABLISHING_SOURCES

    @property
    def introducer(self) -> bytes | None:
        return self.sources[0] if self.sources else None


VOUCHED = Standing(0, ())  # imported by the user, or held before standings were kept


class Standings:
    def __init__(self, newcomer_ms: int) -> None:
        self.newcomer_ms = newcomer_ms
        self._standing: dict[bytes, Standing] = {}
        self._bytes: dict[bytes, int] = {}  # bytes held of each newcomer
        # Per introducing peer, its newcomers in the order they were first seen.
        self._newcomers: dict[bytes, dict[bytes, None]] = {}
        self._newcomer_bytes: dict[bytes, int] = {}

    def load(self, entries: Iterable[tuple[bytes, Standing]], usage: dict[bytes, int]) -> None:
        """Start over from what storage holds: (author, standing) and bytes per author."""
        self._standing.clear()
        self._bytes.clear()
        self._newcomers.clear()
        self._newcomer_bytes.clear()
        for author, standing in sorted(entries, key=lambda entry: entry[1].first_seen_ms):
            self._standing[author] = standing
            self._enrol(author, standing, usage.get(author, 0))

    def get(self, author: bytes) -> Standing:
        return self._standing.get(author, VOUCHED)

    def is_newcomer(self, author: bytes, source: bytes | None, now_ms: int, held: bool) -> bool:
        """Whether ``author``, whose record arrives from ``source``, is a newcomer.

        ``held`` says the store holds records of it already.
        """
        standing = self._standing.get(author)
        if standing is None:
            return source is not None and not held
        return self._young(standing, now_ms)

    def _young(self, standing: Standing, now_ms: int) -> bool:
        return (
            bool(standing.sources)
            and len(standing.sources) < ESTABLISHING_SOURCES
            and now_ms - standing.first_seen_ms < self.newcomer_ms
        )

    def note(
        self, author: bytes, source: bytes | None, now_ms: int, first: bool
    ) -> Standing | None:
        """A record of ``author`` from ``source`` was stored; the new standing, if it changed.

        ``first`` says the author had no records before this one.
        """
        standing = self._standing.get(author)
        if standing is None:
            if not first:
                return None  # held before standings were kept: established
            standing = VOUCHED if source is None else Standing(now_ms, (source,))
            self._standing[author] = standing
            self._enrol(author, standing, 0)
            return standing
        if source is None or source in standing.sources:
            return None
        if len(standing.sources) >= ESTABLISHING_SOURCES or not standing.sources:
            return None
        grown = Standing(standing.first_seen_ms, (*standing.sources, source))
        self._standing[author] = grown
        if len(grown.sources) >= ESTABLISHING_SOURCES:
            self._graduate(author)
        return grown

    def resize(self, author: bytes, delta: int) -> None:
        """The bytes held of ``author`` changed by ``delta``."""
        if author in self._bytes:
            self._bytes[author] += delta
            introducer = self._standing[author].introducer
            assert introducer is not None
            self._newcomer_bytes[introducer] += delta

    def forget(self, author: bytes) -> bool:
        """The author's last record is gone; whether there was a standing to drop."""
        self._graduate(author)
        return self._standing.pop(author, None) is not None

    def newest_newcomer(self, now_ms: int, skip: Collection[bytes] = ()) -> bytes | None:
        """The next newcomer to evict from, or None if there is none (but those in ``skip``)."""
        self._graduate_aged(now_ms)
        by_bytes = sorted(self._newcomer_bytes, key=self._newcomer_bytes.__getitem__, reverse=True)
        for introducer in by_bytes:
            for author in reversed(self._newcomers[introducer]):
                if author not in skip:
                    return author
        return None

    def _enrol(self, author: bytes, standing: Standing, nbytes: int) -> None:
        introducer = standing.introducer
        if introducer is None or len(standing.sources) >= ESTABLISHING_SOURCES:
            return
        self._newcomers.setdefault(introducer, {})[author] = None
        self._newcomer_bytes[introducer] = self._newcomer_bytes.get(introducer, 0) + nbytes
        self._bytes[author] = nbytes

    def _graduate(self, author: bytes) -> None:
        """``author`` is a newcomer no more: it leaves the eviction queue of its introducer."""
        nbytes = self._bytes.pop(author, None)
        if nbytes is None:
            return
        introducer = self._standing[author].introducer
        assert introducer is not None
        queue = self._newcomers[introducer]
        del queue[author]
        self._newcomer_bytes[introducer] -= nbytes
        if not queue:
            del self._newcomers[introducer]
            del self._newcomer_bytes[introducer]

    def _graduate_aged(self, now_ms: int) -> None:
        """Newcomers first seen ``newcomer_ms`` ago are established now (oldest come first)."""
        for queue in list(self._newcomers.values()):
            while queue:
                oldest = next(iter(queue))
                if self._young(self._standing[oldest], now_ms):
                    break
                self._graduate(oldest)
