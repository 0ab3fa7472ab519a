"""The store interface and the acceptance rules every store shares.

Rules (``protocol/records.md``, "Store semantics"):

1. Per (author, key) one record is kept: the one that ``supersedes`` the others
   (highest seq, then highest id). Older versions are dropped.
2. A record past its ``dead_at`` (expiry, or a tombstone's retention) is never
   stored or served, and is purged.
3. Each foreign author is held to ``max_author_records`` and
   ``max_author_bytes``; a record that would exceed them is refused. The node's
   own records are exempt.
4. The whole store is held to ``max_total_bytes``. To make room, dead records
   are purged first; then, one at a time, the lowest-seq record of the foreign
   author holding the most bytes is evicted. The node's own records are never
   evicted; if they alone fill the store, a new record is refused.

Subclasses provide storage primitives only; ``ingest`` is not overridden.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field

from meshnode.core.record import Record

MIB = 1024 * 1024
DAY_MS = 24 * 3600 * 1000
# A bound's timestamp goes on the wire as 1 + its delta to the previous bound, and the
# JavaScript reference reads varints with 32-bit signed arithmetic: 2^31 - 2 is the
# largest timestamp whose encoding (2^31 - 1) it reads back right (protocol/peer.md §5.2).
MAX_RECONCILE_TIMESTAMP = 2**31 - 2


def reconcile_timestamp(created_ms: int) -> int:
    """A record's Negentropy timestamp: creation time in whole seconds, at most 2^31 - 2."""
    return min(created_ms // 1000, MAX_RECONCILE_TIMESTAMP)


class StoreError(Exception):
    """The store cannot be opened or used (corrupt file, disk full, closed)."""


@dataclass(frozen=True, slots=True)
class StoreLimits:
    max_total_bytes: int = 256 * MIB
    max_author_records: int = 10_000
    max_author_bytes: int = 8 * MIB
    tombstone_retention_ms: int = 30 * DAY_MS


class Outcome(enum.StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    STALE = "stale"  # an equal or newer version is already stored
    DEAD = "dead"  # expired, or a tombstone past retention
    QUOTA = "quota"  # refused by a per-author quota or the total cap


@dataclass(slots=True)
class IngestResult:
    stored: list[Record] = field(default_factory=list)
    outcomes: Counter[Outcome] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class StoreStats:
    records: int
    tombstones: int
    authors: int
    own_records: int
    record_bytes: int


@dataclass(frozen=True, slots=True)
class Current:
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

    # -- the shared rules ---------------------------------------------------

    def ingest(self, records: Sequence[Record], now_ms: int) -> IngestResult:
        """Store verified records in one transaction; say what became of each."""
        result = IngestResult()
        with self._atomic():
            own_high = 0
            for record in records:
                outcome = self._ingest_one(record, now_ms)
                result.outcomes[outcome] += 1
                if outcome is Outcome.STORED:
                    result.stored.append(record)
                if record.author == self.owner:
                    # Every own seq in the batch, stored or not, so none is ever reused.
                    own_high = max(own_high, record.seq)
            if own_high:
                self._raise_high_seq(self.owner, own_high)
        return result

    def _ingest_one(self, record: Record, now_ms: int) -> Outcome:
        dead_at = record.dead_at(self.limits.tombstone_retention_ms)
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
        if record.author != self.owner:
            count, nbytes = self._usage.get(record.author, (0, 0))
            if current is None:
                count += 1
            if (
                count > self.limits.max_author_records
                or nbytes + size - old_size > self.limits.max_author_bytes
            ):
                return Outcome.QUOTA
        overflow = self._total_bytes + size - old_size - self.limits.max_total_bytes
        if overflow > 0:
            if not self._make_room(overflow, record, now_ms):
                return Outcome.QUOTA
            # Making room purges dead records, perhaps the stored version of this key.
            current = self._current(record.author, record.key)
            old_size = current.size if current is not None else 0
        if current is not None:
            self._remove(record.author, record.key)
            self._account(record.author, -1, -old_size)
        self._insert(record, dead_at, now_ms)
        self._account(record.author, 1, size)
        return Outcome.STORED

    def _make_room(self, need: int, incoming: Record, now_ms: int) -> bool:
        need -= self._purge_dead(now_ms)
        while need > 0:
            foreign = [(usage[1], a) for a, usage in self._usage.items() if a != self.owner]
            candidates = sorted(foreign, reverse=True)
            for _, author in candidates:
                spare = incoming.key if author == incoming.author else None
                evicted = self._evict_lowest(author, spare)
                if evicted is not None:
                    self._account(author, -1, -evicted)
                    need -= evicted
                    break
            else:
                return False
        return True

    def _account(self, author: bytes, records: int, nbytes: int) -> None:
        usage = self._usage.setdefault(author, [0, 0])
        usage[0] += records
        usage[1] += nbytes
        self._total_bytes += nbytes
        if usage[0] == 0:
            del self._usage[author]

    @contextmanager
    def _atomic(self) -> Iterator[None]:
        """A storage transaction; on failure the usage counters are re-read."""
        try:
            with self._transaction():
                yield
        except BaseException:
            self._rebuild_usage()
            raise

    def _rebuild_usage(self) -> None:
        self._usage = {author: [count, nbytes] for author, count, nbytes in self._scan_usage()}
        self._total_bytes = sum(nbytes for _, nbytes in self._usage.values())

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
    def _transaction(self) -> AbstractContextManager[None]: ...

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
