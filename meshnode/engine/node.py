"""A node's local operations: publish, delete, ingest and read records.

Sans-IO: the caller passes ``now_ms`` and owns the store's thread. The daemon
runs these methods on its store thread; the simulator calls them directly.

How the author's seq never repeats (``protocol/records.md``, "Sequence
numbers"): a new seq is ``max(high_seq + 1, now_ms * SEQS_PER_MS)``, where
``high_seq`` is the highest seq the store has ever held for this author,
persisted in the same transaction as the record. A thousand seqs per
millisecond is headroom no publisher uses up (group commit stores ~10 a
millisecond), so seqs never run ahead of the clock, and a restored backup,
whose ``high_seq`` is stale, still counts above every seq signed before the
restore. When a peer later hands the node one of its own newer records (a
restore from before a clock that went back), the store adopts it and
``high_seq`` rises past it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from msgspec import Struct, field

from meshnode.core.canonical import Value
from meshnode.core.durations import MAX_TTL_MS
from meshnode.core.identity import Identity
from meshnode.core.record import (
    CLOCK_FLOOR_MS,
    MAX_INT63,
    Record,
    RecordError,
    decode_many,
    sign_record,
)
from meshnode.store.base import IngestResult, Store

DecodeResult = tuple[list[Record], list[RecordError]]
Decode = Callable[[Sequence[bytes]], DecodeResult]

SEQS_PER_MS = 1000


def clock_seq(now_ms: int) -> int:
    """The lowest seq a publish at ``now_ms`` gets: the clock in thousandths of a millisecond."""
    return min(max(now_ms, 0), MAX_INT63 // SEQS_PER_MS) * SEQS_PER_MS


class NodeError(Exception):
    """A local operation that cannot be done; the message says why."""


class InvalidArgument(NodeError):
    pass


class NotFound(NodeError):
    pass


class QuotaExceeded(NodeError):
    pass


class ClockUnset(NodeError):
    pass


class Publication(Struct, frozen=True):
    key: str
    value: Value
    ttl_ms: int | None = None


class IngestReport(Struct):
    result: IngestResult
    rejected: list[RecordError] = field(default_factory=list)


MapFn = Callable[[Decode, Iterable[Sequence[bytes]]], Iterable[DecodeResult]]
PARALLEL_CHUNK = 128  # records per verification job when a map runs jobs in parallel


class Node:
    def __init__(
        self,
        identity: Identity,
        store: Store,
        *,
        parallel_map: MapFn | None = None,
        decode: Decode = decode_many,
    ) -> None:
        """``parallel_map``, if given, runs verification jobs concurrently (the runtime
        passes a thread pool's ``map``: libsodium releases the GIL while it verifies).
        ``decode`` verifies records; the simulator passes one that remembers the
        verdict on bytes it has seen, which a thousand nodes share.
        """
        self.identity = identity
        self.store = store
        self._parallel_map = parallel_map
        self._decode = decode

    def publish(self, key: str, value: Value, *, now_ms: int, ttl_ms: int | None = None) -> Record:
        """Sign and store a new version of one of this node's own keys."""
        [result] = self.publish_many([Publication(key, value, ttl_ms)], now_ms=now_ms)
        if isinstance(result, Exception):
            raise result
        return result

    def publish_many(
        self, publications: Sequence[Publication], *, now_ms: int
    ) -> list[Record | NodeError | RecordError]:
        """Sign and store several publications in one transaction: a group commit.

        Each gets its own result, a record or the error that refused it; one bad
        publication does not fail the others.
        """
        prepared: list[tuple[str, Value, int | None] | NodeError] = []
        for publication in publications:
            try:
                prepared.append(self._prepare(publication, now_ms))
            except NodeError as exc:
                prepared.append(exc)
        return self._store_own(prepared, now_ms)

    def _prepare(self, publication: Publication, now_ms: int) -> tuple[str, Value, int | None]:
        if publication.value is None:
            raise InvalidArgument("a nil value marks a deletion; delete the key instead")
        ttl_ms = publication.ttl_ms
        if ttl_ms is None:
            return publication.key, publication.value, None
        if type(ttl_ms) is not int or not 0 < ttl_ms <= MAX_TTL_MS:
            raise InvalidArgument(
                f"ttl must be a positive number of milliseconds up to 10 years, got {ttl_ms!r}"
            )
        if now_ms < CLOCK_FLOOR_MS:  # other nodes would judge the expiry by a real clock
            raise ClockUnset(
                "this node's clock is not set (it reads before 2026), so an expiry"
                " would be wrong on every other node; set the clock or publish"
                " without --ttl"
            )
        return publication.key, publication.value, now_ms + ttl_ms

    def delete(self, key: str, *, now_ms: int) -> Record:
        """Replace one of this node's records with a signed tombstone."""
        current = self.store.get(self.identity.public_key, key, now_ms)
        if current is None:
            raise NotFound(f"no record {key!r} to delete")
        if current.is_tombstone:
            raise NotFound(f"{key!r} is deleted already")
        [result] = self._store_own([(key, None, None)], now_ms)
        if isinstance(result, Exception):
            raise result
        return result

    def _store_own(
        self, prepared: Sequence[tuple[str, Value, int | None] | NodeError], now_ms: int
    ) -> list[Record | NodeError | RecordError]:
        seq = self.store.high_seq(self.identity.public_key)
        results: list[Record | NodeError | RecordError] = []
        for entry in prepared:
            if isinstance(entry, NodeError):
                results.append(entry)
                continue
            key, value, expires_ms = entry
            seq = max(seq + 1, clock_seq(now_ms))
            try:
                results.append(
                    sign_record(
                        self.identity,
                        seq=seq,
                        key=key,
                        value=value,
                        created_ms=max(now_ms, 0),
                        expires_ms=expires_ms,
                    )
                )
            except RecordError as exc:
                results.append(exc)
        records = [r for r in results if isinstance(r, Record)]
        stored = {r.id for r in self.store.ingest(records, now_ms, durable=True).stored}
        return [
            self._full() if isinstance(r, Record) and r.id not in stored else r for r in results
        ]

    def _full(self) -> QuotaExceeded:
        return QuotaExceeded(
            f"the store is full ({self.store.total_bytes} bytes of"
            f" {self.store.limits.max_total_bytes}) with this node's own records"
        )

    def ingest(
        self, raws: Sequence[bytes], *, now_ms: int, source: bytes | None = None
    ) -> IngestReport:
        """Verify foreign records, then store the valid ones in one batch.

        ``source`` is the peer that sent them (None: the user), for the store's
        standing of authors (``meshnode.store.standing``).
        """
        if self._parallel_map is None or len(raws) < 2 * PARALLEL_CHUNK:
            good, bad = self._decode(raws)
        else:
            chunks = [raws[i : i + PARALLEL_CHUNK] for i in range(0, len(raws), PARALLEL_CHUNK)]
            good, bad = [], []
            for chunk_good, chunk_bad in self._parallel_map(self._decode, chunks):
                good.extend(chunk_good)
                bad.extend(chunk_bad)
        return IngestReport(self.store.ingest(good, now_ms, source=source), bad)

    def get(self, key: str, *, now_ms: int, author: bytes | None = None) -> Record | None:
        return self.store.get(author or self.identity.public_key, key, now_ms)
