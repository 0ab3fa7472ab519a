"""The store interface and the acceptance rules every store shares.

Rules (``protocol/records.md``, "Store semantics"):

1. Per (author, key) one record is kept: the one that ``supersedes`` the others
   (highest seq, then highest id). Older versions are dropped.
2. A record past its ``dead_at`` (expiry, or a tombstone's retention) is never
   stored or served, and is purged.
3. A record claiming to be created more than ``MAX_CREATED_AHEAD_MS`` ahead
   of the node's clock is refused (unless the clock is unset), and a
   tombstone's retention counts from when it arrived if it claims a later
   creation, so no clock can make a tombstone live for ever.
4. Each foreign author is held to ``max_author_records`` and
   ``max_author_bytes``; a record that would exceed them is refused. The node's
   own records are exempt.
5. The whole store is held to ``max_total_bytes``. To make room, dead records
   are purged first; then records are evicted in the order of ``standing``:
   newcomers' first, established authors' newest first (for a newcomer's
   record only while newcomers hold less than their reserve). The node's own
   records are never evicted; if nothing may go, the new record is refused.

Subclasses provide storage primitives only; ``ingest`` is not overridden.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager

from msgspec import Struct

from meshnode.core.record import CLOCK_FLOOR_MS, Record
from meshnode.store.standing import HOUR_MS, NEWCOMER_SHARE, Standing, Standings

MIB = 1024 * 1024
DAY_MS = 24 * 3600 * 1000
# A bound's timestamp goes on the wire as 1 + its delta to the previous bound, and the
# JavaScript reference reads varints with 32-bit signed arithmetic: 2^31 - 2 is the
# largest timestamp whose encoding (2^31 - 1) it reads back right (protocol/peer.md §5.2).
MAX_RECONCILE_TIMESTAMP = 2**31 - 2
# Further ahead than this a creation time is a broken clock or a forgery: longer than a
# Raspberry Pi without network time plausibly runs behind, short enough to mean something.
MAX_CREATED_AHEAD_MS = 30 * DAY_MS


def reconcile_timestamp(created_ms: int) -> int:
    """A record's Negentropy timestamp: creation time in whole seconds, at most 2^31 - 2."""
    return min(created_ms // 1000, MAX_RECONCILE_TIMESTAMP)


class StoreError(Exception):
    """The store cannot be opened or used (corrupt file, disk full, closed)."""


class StoreLimits(Struct, frozen=True):
    max_total_bytes: int = 256 * MIB
    max_author_records: int = 10_000
    max_author_bytes: int = 8 * MIB
    tombstone_retention_ms: int = 30 * DAY_MS
    newcomer_ms: int = HOUR_MS  # how long a new author's records yield to established ones


class Outcome(enum.StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    STALE = "stale"  # an equal or newer version is already stored
    DEAD = "dead"  # expired, or a tombstone past retention
    QUOTA = "quota"  # refused by a per-author quota or the total cap
    FUTURE = "future"  # created too far ahead of this node's clock


class IngestResult:
    """What became of each record of one batch, in the order given."""

    __slots__ = ("each", "stored")

    def __init__(self) -> None:
        self.each: list[tuple[Record, Outcome]] = []
        self.stored: list[Record] = []

    @property
    def outcomes(self) -> Counter[Outcome]:
        return Counter(outcome for _, outcome in self.each)


class StoreStats(Struct, frozen=True):
    records: int
    tombstones: int
    authors: int
    own_records: int
    record_bytes: int


class Current(Struct, frozen=True):
    """What a store knows of the stored version of one (author, key)."""

    id: bytes
    seq: int
    size: int


class Store(ABC):
    """A set of verified records, at most one per (author, key)."""

    def __init__(self, owner: bytes, limits: StoreLimits) -> None:
        self.owner = owner
        self.limits = limits
        self._usage: dict[bytes, list[int]] = {}  # author -> [records, bytes]
        self._total_bytes = 0
        self._standings = Standings(owner, limits.newcomer_ms)
        self.warnings: list[str] = []  # damage found and worked around on opening

    # -- the shared rules ---------------------------------------------------

    def ingest(
        self,
        records: Sequence[Record],
        now_ms: int,
        *,
        source: bytes | None = None,
        durable: bool = False,
    ) -> IngestResult:
        """Store verified records in one transaction; say what became of each.

        ``source`` is the peer that sent them (None: the user or the node itself),
        which decides the standing of authors met for the first time. ``durable``
        asks that the transaction survive a power cut once this returns (the
        node's own records: another node cannot give them back if none has them).
        """
        result = IngestResult()
        each, stored, owner = result.each, result.stored, self.owner
        try:  # as ``_atomic``, spelt out on the path every record takes
            with self._transaction(durable):
                own_high = 0
                for record in records:
                    outcome = self._ingest_one(record, now_ms, source)
                    each.append((record, outcome))
                    if outcome is Outcome.STORED:
                        stored.append(record)
                    if record.author == owner:
                        # Every own seq in the batch, stored or not, so none is ever reused.
                        own_high = max(own_high, record.seq)
                if own_high:
                    self._raise_high_seq(owner, own_high)
        except BaseException:
            self._rebuild_usage()
            raise
        return result

    def _ingest_one(self, record: Record, now_ms: int, source: bytes | None) -> Outcome:
        clock_set = now_ms >= CLOCK_FLOOR_MS
        if clock_set and record.created_ms > now_ms + MAX_CREATED_AHEAD_MS:
            return Outcome.FUTURE
        dead_at = record.dead_at(self.limits.tombstone_retention_ms, now_ms if clock_set else None)
        if dead_at is not None and dead_at <= now_ms:
            return Outcome.DEAD
        current = self._current(record.author, record.key)
        if current is not None:
            if current.id == record.id:
                return Outcome.DUPLICATE
            if (current.seq, current.id) > (record.seq, record.id):
                return Outcome.STALE
        size = len(record.raw)
        old_size = current.size if current is not None else 0
        foreign = record.author != self.owner
        if foreign:
            count, nbytes = self._usage.get(record.author, (0, 0))
            if current is None:
                count += 1
            if (
                count > self.limits.max_author_records
                or nbytes + size - old_size > self.limits.max_author_bytes
            ):
                return Outcome.QUOTA
        overflow = self._total_bytes + size - old_size - self.limits.max_total_bytes
        while overflow > 0:
            if not self._make_room(overflow, record, source, now_ms):
                return Outcome.QUOTA
            # Making room purges dead records, perhaps the stored version of this key:
            # then its bytes were freed once already, and more room may be needed.
            current = self._current(record.author, record.key)
            old_size = current.size if current is not None else 0
            overflow = self._total_bytes + size - old_size - self.limits.max_total_bytes
        first = record.author not in self._usage
        if current is not None:
            self._remove(record.author, record.key)
        self._insert(record, dead_at, now_ms)
        if foreign:
            standing = self._standings.note(record.author, source, now_ms, first)
            if standing is not None:
                self._save_standing(record.author, standing)
        self._account(record.author, 0 if current is not None else 1, size - old_size)
        return Outcome.STORED

    def _make_room(self, need: int, incoming: Record, source: bytes | None, now_ms: int) -> bool:
        """Evict until ``need`` bytes are free, in the order ``standing`` explains."""
        need -= self._purge_dead(now_ms)
        standings = self._standings
        standings.graduate_aged(now_ms)
        newcomer = standings.is_newcomer(incoming.author, source)
        reserve = self.limits.max_total_bytes // NEWCOMER_SHARE
        spare = incoming.author, incoming.key
        exhausted: set[bytes] = set()  # authors with nothing left to evict but the spare key
        while need > 0:
            if newcomer and standings.newcomer_bytes < reserve:
                author = standings.newest_established(exhausted)  # the reserve is not full
                author = author or standings.newest_newcomer(exhausted)
            elif newcomer:
                author = standings.newest_newcomer(exhausted)
            else:
                author = standings.newest_newcomer(exhausted)
                author = author or standings.newest_established(exhausted)
            if author is None:
                return False
            evicted = self._evict_lowest(author, spare[1] if author == spare[0] else None)
            if evicted is None:
                exhausted.add(author)
                continue
            self._account(author, -1, -evicted)
            need -= evicted
        return True

    def _account(self, author: bytes, records: int, nbytes: int) -> None:
        usage = self._usage.setdefault(author, [0, 0])
        usage[0] += records
        usage[1] += nbytes
        self._total_bytes += nbytes
        self._standings.resize(author, nbytes)
        if usage[0] == 0:
            del self._usage[author]
            if self._standings.forget(author):
                self._drop_standing(author)

    @contextmanager
    def _atomic(self, durable: bool = False) -> Iterator[None]:
        """A storage transaction; on failure the in-memory books are re-read."""
        try:
            with self._transaction(durable):
                yield
        except BaseException:
            self._rebuild_usage()
            raise

    def _rebuild_usage(self) -> None:
        self._usage = {author: [count, nbytes] for author, count, nbytes in self._scan_usage()}
        self._total_bytes = sum(nbytes for _, nbytes in self._usage.values())
        nbytes_of = {author: usage[1] for author, usage in self._usage.items()}
        self._standings.load(self._scan_standings(), nbytes_of)

    def purge(self, now_ms: int) -> int:
        """Drop every record past its ``dead_at``; return how many bytes that freed."""
        with self._atomic():
            return self._purge_dead(now_ms)

    def _purge_dead(self, now_ms: int) -> int:
        freed = 0
        for author, size in self._delete_dead(now_ms):
            self._account(author, -1, -size)
            freed += size
        return freed

    def usage(self, author: bytes) -> tuple[int, int]:
        """(records, bytes) held for ``author``."""
        count, nbytes = self._usage.get(author, (0, 0))
        return count, nbytes

    def standing(self, author: bytes) -> Standing:
        """Since when, and through which peers, the node has held ``author``'s records."""
        return self._standings.get(author)

    def is_newcomer(self, author: bytes, now_ms: int) -> bool:
        """Whether records of ``author`` held now yield to established authors' (``standing``)."""
        self._standings.graduate_aged(now_ms)
        return self._standings.is_newcomer(author, None)

    @property
    def total_bytes(self) -> int:
        return self._total_bytes

    # -- reads ---------------------------------------------------------------

    @abstractmethod
    def get(self, author: bytes, key: str, now_ms: int) -> Record | None:
        """The live version of (author, key), tombstones included."""

    @abstractmethod
    def query(
        self,
        *,
        now_ms: int,
        author: bytes | None = None,
        prefix: str = "",
        min_seq: int = 0,
        limit: int | None = None,
        include_tombstones: bool = False,
    ) -> list[Record]:
        """Live records with ``seq >= min_seq``, ordered by (key, author).

        ``min_seq`` with an author asks "what has this author written since": seqs
        only grow, so a reader that remembers the highest seq it saw misses nothing.
        """

    @abstractmethod
    def items(self, now_ms: int) -> list[tuple[int, bytes]]:
        """Sorted (reconciliation timestamp, id) of every live record (``reconcile_timestamp``)."""

    @abstractmethod
    def raw_by_ids(
        self, ids: Sequence[bytes], now_ms: int, *, max_bytes: int | None = None
    ) -> list[bytes]:
        """The encodings of the live records among ``ids``; unknown ids are skipped.

        With ``max_bytes``, stops before the total would pass it.
        """

    @abstractmethod
    def served_page(
        self,
        *,
        now_ms: int,
        prefix: str = "",
        author: bytes | None = None,
        after: tuple[str, bytes] | None = None,
        limit: int,
        max_bytes: int,
    ) -> tuple[list[bytes], tuple[str, bytes] | None]:
        """A page of the served set (tombstones too, nothing dead), for an export.

        The encodings of records whose key starts with ``prefix`` (of ``author``,
        if given), in (key, author) order, strictly after the (key, author)
        ``after``: at most ``limit`` of them, and beyond the first no more than
        ``max_bytes`` in all. With them, where the next page starts (the last
        one's (key, author)), or None when no record follows. A key never comes
        twice: paging by (key, author) needs no snapshot of the store.
        """

    @abstractmethod
    def missing(self, ids: Sequence[bytes]) -> list[bytes]:
        """Those of ``ids`` that are not stored."""

    @abstractmethod
    def high_seq(self, author: bytes) -> int:
        """The highest seq this node has signed or stored of its own (0 if none), persisted.

        Kept for the store's owner only: nothing needs it for foreign authors, and
        keeping it for them would grow without bound.
        """

    @abstractmethod
    def stats(self, now_ms: int) -> StoreStats: ...

    @abstractmethod
    def close(self) -> None: ...

    # -- primitives for the rules above ---------------------------------------

    @abstractmethod
    def _transaction(self, durable: bool) -> AbstractContextManager[None]:
        """One transaction; ``durable`` ones survive a power cut once committed."""

    @abstractmethod
    def _current(self, author: bytes, key: str) -> Current | None: ...

    @abstractmethod
    def _insert(self, record: Record, dead_at: int | None, now_ms: int) -> None: ...

    @abstractmethod
    def _remove(self, author: bytes, key: str) -> None: ...

    @abstractmethod
    def _evict_lowest(self, author: bytes, spare_key: str | None) -> int | None:
        """Remove ``author``'s lowest-seq record (not ``spare_key``); its size, or None."""

    @abstractmethod
    def _delete_dead(self, now_ms: int) -> Iterator[tuple[bytes, int]]:
        """Remove records with ``dead_at <= now_ms``; yield (author, size) of each."""

    @abstractmethod
    def _raise_high_seq(self, author: bytes, seq: int) -> None: ...

    @abstractmethod
    def _scan_usage(self) -> Iterator[tuple[bytes, int, int]]:
        """(author, records, bytes) for every author, from storage."""

    @abstractmethod
    def _save_standing(self, author: bytes, standing: Standing) -> None: ...

    @abstractmethod
    def _drop_standing(self, author: bytes) -> None: ...

    @abstractmethod
    def _scan_standings(self) -> Iterator[tuple[bytes, Standing]]:
        """The standing of every foreign author that has one, from storage."""
