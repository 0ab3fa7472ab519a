"""An in-memory store: the same rules as SQLite, for tests and the simulator.

A failed batch is not rolled back (the simulator treats any exception as a
bug); the usage counters are still re-derived from what is held.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from meshnode.core.record import Record
from meshnode.store.base import Current, Store, StoreLimits, StoreStats, reconcile_timestamp
from meshnode.store.standing import Standing


class MemoryStore(Store):
    def __init__(self, owner: bytes, limits: StoreLimits | None = None) -> None:
        super().__init__(owner, limits or StoreLimits())
        self._records: dict[tuple[bytes, str], tuple[Record, int | None]] = {}
        self._versions: dict[tuple[bytes, str], Current] = {}  # made once, asked for often
        self._high: dict[bytes, int] = {}
        self._by_id: dict[bytes, tuple[bytes, str]] = {}
        self._saved_standings: dict[bytes, Standing] = {}

    def get(self, author: bytes, key: str, now_ms: int) -> Record | None:
        entry = self._records.get((author, key))
        if entry is None or _dead(entry[1], now_ms):
            return None
        return entry[0]

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
        found = [
            record
            for (rec_author, key), (record, dead_at) in self._records.items()
            if (author is None or rec_author == author)
            and key.startswith(prefix)
            and record.seq >= min_seq
            and not _dead(dead_at, now_ms)
            and (include_tombstones or not record.is_tombstone)
        ]
        found.sort(key=lambda r: (r.key.encode(), r.author))
        return found if limit is None else found[:limit]

    def items(self, now_ms: int) -> list[tuple[int, bytes]]:
        return sorted(
            (reconcile_timestamp(record.created_ms), record.id)
            for record, dead_at in self._records.values()
            if not _dead(dead_at, now_ms)
        )

    def raw_by_ids(
        self, ids: Sequence[bytes], now_ms: int, *, max_bytes: int | None = None
    ) -> list[bytes]:
        found = []
        total = 0
        for record_id in ids:
            author_key = self._by_id.get(record_id)
            if author_key is not None:
                record, dead_at = self._records[author_key]
                if not _dead(dead_at, now_ms):
                    total += len(record.raw)
                    if max_bytes is not None and total > max_bytes:
                        break
                    found.append(record.raw)
        return found

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
        start = None if after is None else (after[0].encode(), after[1])
        found = sorted(
            ((key.encode(), rec_author), key, record.raw)
            for (rec_author, key), (record, dead_at) in self._records.items()
            if (author is None or rec_author == author)
            and key.startswith(prefix)
            and not _dead(dead_at, now_ms)
            and (start is None or (key.encode(), rec_author) > start)
        )
        raws: list[bytes] = []
        total = 0
        last: tuple[str, bytes] | None = None
        for (_, rec_author), key, raw in found:
            if len(raws) == limit or (raws and total + len(raw) > max_bytes):
                return raws, last
            raws.append(raw)
            total += len(raw)
            last = key, rec_author
        return raws, None

    def missing(self, ids: Sequence[bytes]) -> list[bytes]:
        return [record_id for record_id in ids if record_id not in self._by_id]

    def high_seq(self, author: bytes) -> int:
        return self._high.get(author, 0)

    def stats(self, now_ms: int) -> StoreStats:
        live = [r for r, dead_at in self._records.values() if not _dead(dead_at, now_ms)]
        return StoreStats(
            records=len(live),
            tombstones=sum(r.is_tombstone for r in live),
            authors=len({r.author for r in live}),
            own_records=sum(r.author == self.owner for r in live),
            record_bytes=self.total_bytes,
        )

    def close(self) -> None:
        self._records.clear()
        self._versions.clear()
        self._by_id.clear()

    def _transaction(self, durable: bool) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def _current(self, author: bytes, key: str) -> Current | None:
        return self._versions.get((author, key))

    def _insert(self, record: Record, dead_at: int | None, now_ms: int) -> None:
        where = record.author, record.key
        self._records[where] = (record, dead_at)
        self._versions[where] = Current(record.id, record.seq, len(record.raw))
        self._by_id[record.id] = where

    def _remove(self, author: bytes, key: str) -> None:
        record, _ = self._records.pop((author, key))
        del self._versions[(author, key)]
        del self._by_id[record.id]

    def _evict_lowest(self, author: bytes, spare_key: str | None) -> int | None:
        owned = [r for (a, k), (r, _) in self._records.items() if a == author and k != spare_key]
        if not owned:
            return None
        lowest = min(owned, key=lambda r: r.seq)
        self._remove(author, lowest.key)
        return len(lowest.raw)

    def _delete_dead(self, now_ms: int) -> Iterator[tuple[bytes, int]]:
        dead = [k for k, (_, dead_at) in self._records.items() if _dead(dead_at, now_ms)]
        for author, key in dead:
            record, _ = self._records[(author, key)]
            self._remove(author, key)
            yield author, len(record.raw)

    def _raise_high_seq(self, author: bytes, seq: int) -> None:
        if seq > self._high.get(author, 0):
            self._high[author] = seq

    def _scan_usage(self) -> Iterator[tuple[bytes, int, int]]:
        usage: dict[bytes, list[int]] = {}
        for record, _ in self._records.values():
            entry = usage.setdefault(record.author, [0, 0])
            entry[0] += 1
            entry[1] += len(record.raw)
        for author, (count, nbytes) in usage.items():
            yield author, count, nbytes

    def _save_standing(self, author: bytes, standing: Standing) -> None:
        self._saved_standings[author] = standing

    def _drop_standing(self, author: bytes) -> None:
        self._saved_standings.pop(author, None)

    def _scan_standings(self) -> Iterator[tuple[bytes, Standing]]:
        yield from list(self._saved_standings.items())


def _dead(dead_at: int | None, now_ms: int) -> bool:
    return dead_at is not None and dead_at <= now_ms
