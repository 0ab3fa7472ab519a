"""How long and through whom the node has known each foreign author: who is evicted first.

A full store must make room, and whom it evicts decides who can push out whom.
Evicting from the author holding the most bytes let a Sybil flood (thousands of
new one-record authors, none of them big) displace every honest author the node
held. So authors have a standing: a **newcomer** is one first stored less than
``newcomer_ms`` ago and delivered from fewer than ``ESTABLISHING_SOURCES``
distinct sources (the runtime names a source by the network address a peer
connects from, which costs an attacker more than a key pair); every other
author is **established**. Records the user imported (no source) and authors
held before standings were kept are established from the start, and so is an
author first seen while the clock was behind the time it reads now.

Newcomers compete with newcomers: a newcomer's record evicts records of
newcomers, taken from the source that introduced the most newcomer bytes,
newest author first, so a flooding source pushes out its own authors before
anyone else's. Only while newcomers together hold less than a reserve (an
eighth of the store) may a newcomer's record evict an established author's, so
that a store full of established authors still lets new ones in. Established
authors go newest first: the node keeps longest the authors it has known
longest (``protocol/records.md`` §7, "Eviction"). Pure bookkeeping: the store
persists what ``note`` reports changed and passes the time in.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterable, Mapping

from msgspec import Struct

from meshnode.core.record import CLOCK_FLOOR_MS

ESTABLISHING_SOURCES = 3  # distinct sources that delivered an author's records
HOUR_MS = 3600 * 1000
NEWCOMER_SHARE = 8  # newcomers may take up to 1/8 of the store from established authors


class Standing(Struct, frozen=True):
    """What the node knows of a foreign author: since when, and from which sources."""

    first_seen_ms: int
    sources: tuple[bytes, ...]  # the introducer first; at most ESTABLISHING_SOURCES

    @property
    def introducer(self) -> bytes | None:
        return self.sources[0] if self.sources else None


VOUCHED = Standing(0, ())  # imported by the user, or held before standings were kept


class Standings:
    def __init__(self, owner: bytes, newcomer_ms: int) -> None:
        self.owner = owner
        self.newcomer_ms = newcomer_ms
        self._reset()

    def _reset(self) -> None:
        self.newcomer_bytes = 0  # held of all newcomers together
        self._standing: dict[bytes, Standing] = {}
        self._bytes: dict[bytes, int] = {}  # held of each newcomer
        # Per introducing source, its newcomers in the order they were first seen.
        self._newcomers: dict[bytes, dict[bytes, None]] = {}
        self._introduced: dict[bytes, int] = {}  # newcomer bytes per introducer
        self._by_introduced: list[tuple[int, bytes]] = []  # max-heap, stale entries skipped
        self._by_age: dict[bytes, None] = {}  # newcomers that age, oldest first
        self._established: dict[bytes, None] = {}  # held, oldest known first

    def load(self, entries: Iterable[tuple[bytes, Standing]], usage: Mapping[bytes, int]) -> None:
        """Start over from storage: the standings kept, and the bytes held of every author."""
        self._reset()
        kept = {author: s for author, s in entries if author != self.owner and author in usage}
        for author in usage:
            if author not in kept and author != self.owner:
                self._established[author] = None  # held before standings were kept
        for author, standing in sorted(kept.items(), key=lambda item: item[1].first_seen_ms):
            self._standing[author] = standing
            self._enrol(author, standing, usage[author], now_ms=None)

    def get(self, author: bytes) -> Standing:
        return self._standing.get(author, VOUCHED)

    def is_newcomer(self, author: bytes, source: bytes | None) -> bool:
        """Whether ``author``, whose record arrives from ``source``, is a newcomer.

        Call ``graduate_aged`` first: newcomers old enough are established then.
        An author not held at all is a newcomer if it comes from a peer.
        """
        if author in self._bytes:
            return True
        held = author in self._established
        return not held and source is not None and author != self.owner

    def note(
        self, author: bytes, source: bytes | None, now_ms: int, first: bool
    ) -> Standing | None:
        """A record of ``author`` from ``source`` was stored; the new standing, if it changed.

        ``first`` says the author had no records before this one.
        """
        if author == self.owner:
            return None
        standing = self._standing.get(author)
        if standing is None:
            if not first:
                return None  # held before standings were kept: established
            standing = VOUCHED if source is None else Standing(now_ms, (source,))
            self._standing[author] = standing
            self._enrol(author, standing, 0, now_ms)
            return standing
        if source is None or source in standing.sources or not standing.sources:
            return None
        if len(standing.sources) >= ESTABLISHING_SOURCES:
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
            self.newcomer_bytes += delta
            introducer = self._standing[author].introducer
            assert introducer is not None
            self._introduced[introducer] += delta
            heapq.heappush(self._by_introduced, (-self._introduced[introducer], introducer))
            self._compact_heap()

    def forget(self, author: bytes) -> bool:
        """The author's last record is gone; whether there was a standing to drop."""
        self._graduate(author)
        self._established.pop(author, None)
        return self._standing.pop(author, None) is not None

    def newest_newcomer(self, skip: Collection[bytes] = ()) -> bytes | None:
        """The newcomer to evict from next, or None if there is none (but those in ``skip``)."""
        heap = self._by_introduced
        stale: list[tuple[int, bytes]] = []
        try:
            while heap:
                negative, introducer = heap[0]
                if self._introduced.get(introducer) != -negative:
                    heapq.heappop(heap)  # an old figure; the current one is in the heap too
                    continue
                for author in reversed(self._newcomers[introducer]):
                    if author not in skip:
                        return author
                stale.append(heapq.heappop(heap))  # all skipped: try the next introducer
            return None
        finally:
            for entry in stale:
                heapq.heappush(heap, entry)

    def newest_established(self, skip: Collection[bytes] = ()) -> bytes | None:
        """The established author known for the shortest time, but those in ``skip``."""
        for author in reversed(self._established):
            if author not in skip:
                return author
        return None

    def _young(self, standing: Standing, now_ms: int | None) -> bool:
        """Still a newcomer: too few sources, and seen too recently (if ``now_ms`` is known).

        A first sighting before the clock floor has no age: it stays young until
        enough sources vouch for it. One in the future (the clock went back) is old.
        """
        if not standing.sources or len(standing.sources) >= ESTABLISHING_SOURCES:
            return False
        if standing.first_seen_ms < CLOCK_FLOOR_MS or now_ms is None:
            return True
        return 0 <= now_ms - standing.first_seen_ms < self.newcomer_ms

    def _enrol(self, author: bytes, standing: Standing, nbytes: int, now_ms: int | None) -> None:
        introducer = standing.introducer
        if introducer is None or not self._young(standing, now_ms):
            self._established[author] = None
            return
        self._newcomers.setdefault(introducer, {})[author] = None
        self._introduced[introducer] = self._introduced.get(introducer, 0) + nbytes
        heapq.heappush(self._by_introduced, (-self._introduced[introducer], introducer))
        self._bytes[author] = nbytes
        self.newcomer_bytes += nbytes
        if standing.first_seen_ms >= CLOCK_FLOOR_MS:
            self._by_age[author] = None

    def _graduate(self, author: bytes) -> None:
        """``author`` is a newcomer no more: it leaves its introducer's queue."""
        nbytes = self._bytes.pop(author, None)
        if nbytes is None:
            return
        self.newcomer_bytes -= nbytes
        self._by_age.pop(author, None)
        introducer = self._standing[author].introducer
        assert introducer is not None
        queue = self._newcomers[introducer]
        del queue[author]
        self._introduced[introducer] -= nbytes
        if queue:
            heapq.heappush(self._by_introduced, (-self._introduced[introducer], introducer))
        else:
            del self._newcomers[introducer]
            del self._introduced[introducer]
        self._established[author] = None

    def graduate_aged(self, now_ms: int) -> None:
        """Newcomers first seen ``newcomer_ms`` ago are established now; the oldest go first."""
        while self._by_age:
            oldest = next(iter(self._by_age))
            if self._young(self._standing[oldest], now_ms):
                return
            self._graduate(oldest)

    def _compact_heap(self) -> None:
        """Drop stale heap entries once they outnumber the live ones: memory stays bounded."""
        if len(self._by_introduced) > 4 * len(self._introduced) + 64:
            self._by_introduced = [(-nbytes, i) for i, nbytes in self._introduced.items()]
            heapq.heapify(self._by_introduced)
