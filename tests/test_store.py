"""Store semantics (protocol/records.md §7), the same for every store implementation."""

from __future__ import annotations

import os
from contextlib import closing
from pathlib import Path

import pytest
from msgspec import structs

from meshnode.core.record import Record
from meshnode.store import Outcome, Store, StoreError, StoreLimits
from meshnode.store.base import DAY_MS, MAX_CREATED_AHEAD_MS
from meshnode.store.sqlite import SQLiteStore
from tests.helpers import STORE_OWNER, T0, MakeStore, identity, record

OWNER = STORE_OWNER  # the owner of the stores make_store makes
ALICE = identity(1)
BOB = identity(2)
NOW = T0 + 1000


def stored(store: Store, records: list[Record], now: int = NOW) -> list[Outcome]:
    outcomes = []
    for r in records:
        result = store.ingest([r], now)
        outcomes.extend(result.outcomes.elements())
    return outcomes


def test_the_highest_seq_wins_whatever_the_arrival_order(make_store: MakeStore) -> None:
    v1, v2, v3 = (record(ALICE, "profile/name", f"v{n}", seq=n) for n in (1, 2, 3))
    forward, backward = make_store(), make_store()
    assert stored(forward, [v1, v2, v3]) == [Outcome.STORED] * 3
    assert stored(backward, [v3, v1, v2]) == [Outcome.STORED, Outcome.STALE, Outcome.STALE]
    for store in (forward, backward):
        assert store.get(ALICE.public_key, "profile/name", NOW) == v3
        assert store.usage(ALICE.public_key) == (1, len(v3.raw))


def test_a_duplicate_is_recognised(make_store: MakeStore) -> None:
    store = make_store()
    r = record(ALICE)
    assert stored(store, [r, r]) == [Outcome.STORED, Outcome.DUPLICATE]


def test_equal_seqs_are_broken_by_the_higher_id(make_store: MakeStore) -> None:
    a, b = record(ALICE, value="a", seq=5), record(ALICE, value="b", seq=5)
    winner = max(a, b, key=lambda r: r.id)
    for order in ([a, b], [b, a]):
        store = make_store()
        stored(store, order)
        assert store.get(ALICE.public_key, "k", NOW) == winner


def test_a_tombstone_replaces_the_value_and_is_kept(make_store: MakeStore) -> None:
    store = make_store()
    stored(store, [record(ALICE, value="x", seq=1), record(ALICE, value=None, seq=2)])
    kept = store.get(ALICE.public_key, "k", NOW)
    assert kept is not None and kept.is_tombstone
    assert store.query(now_ms=NOW) == []
    assert store.query(now_ms=NOW, include_tombstones=True) == [kept]
    assert stored(store, [record(ALICE, value="x", seq=1)]) == [Outcome.STALE]


def test_a_tombstone_is_purged_after_its_retention(make_store: MakeStore) -> None:
    store = make_store(StoreLimits(tombstone_retention_ms=10_000))
    tombstone = record(ALICE, value=None, created_ms=T0)
    stored(store, [tombstone], now=T0)
    assert store.get(ALICE.public_key, "k", T0 + 9_999) == tombstone
    assert store.get(ALICE.public_key, "k", T0 + 10_000) is None
    assert store.purge(T0 + 10_000) == len(tombstone.raw)
    assert store.stats(T0).records == 0 and store.total_bytes == 0
    assert stored(store, [tombstone], now=T0 + 10_000) == [Outcome.DEAD]


def test_expired_records_are_never_served_nor_stored(make_store: MakeStore) -> None:
    store = make_store()
    fresh = record(ALICE, "a", expires_ms=NOW + 10)
    stale = record(ALICE, "b", expires_ms=NOW)
    assert stored(store, [fresh, stale]) == [Outcome.STORED, Outcome.DEAD]
    assert store.query(now_ms=NOW) == [fresh]
    assert store.query(now_ms=NOW + 10) == []
    assert store.get(ALICE.public_key, "a", NOW + 10) is None
    assert store.stats(NOW + 10).records == 0
    store.purge(NOW + 10)
    assert store.usage(ALICE.public_key) == (0, 0)


def test_queries_filter_by_author_and_prefix_in_key_order(make_store: MakeStore) -> None:
    store = make_store()
    records = [
        record(ALICE, "offer/b"),
        record(ALICE, "offer/a"),
        record(BOB, "offer/a"),
        record(ALICE, "offers"),
        record(ALICE, "profile/name"),
        record(BOB, "offer/\U0010ffff"),
    ]
    stored(store, records)
    found = store.query(now_ms=NOW, prefix="offer/")
    assert [(r.key, r.author) for r in found] == sorted(
        [(r.key, r.author) for r in records if r.key.startswith("offer/")]
    )
    assert store.query(now_ms=NOW, prefix="offer/", author=BOB.public_key) == [
        records[2],
        records[5],
    ]
    assert len(store.query(now_ms=NOW, limit=2)) == 2
    assert store.query(now_ms=NOW, prefix="nothing/") == []


def test_high_seq_remembers_the_nodes_highest_seq_ever(make_store: MakeStore) -> None:
    store = make_store(StoreLimits(tombstone_retention_ms=1))
    stored(store, [record(OWNER, seq=7), record(OWNER, value=None, seq=9, created_ms=NOW)])
    store.purge(NOW + 1)
    assert store.stats(NOW).records == 0
    assert store.high_seq(OWNER.public_key) == 9


def test_foreign_authors_leave_no_trace_beyond_their_records(make_store: MakeStore) -> None:
    store = make_store()
    stored(store, [record(identity(1000 + n), expires_ms=T0 + 1) for n in range(20)])
    assert store.stats(NOW).records == 0 and store.total_bytes == 0
    assert store.high_seq(identity(1000).public_key) == 0


def test_making_room_that_purges_the_stored_version_keeps_the_books_right(
    make_store: MakeStore,
) -> None:
    old = record(ALICE, "k", value="x" * 100, seq=1, expires_ms=NOW + 5)
    filler = record(BOB, "f", value="x" * 100)
    store = make_store(StoreLimits(max_total_bytes=len(old.raw) + len(filler.raw)))
    stored(store, [old, filler])
    newer = record(ALICE, "k", value="y" * 150, seq=2)
    assert stored(store, [newer], now=NOW + 5) == [Outcome.STORED]
    assert store.usage(ALICE.public_key) == (1, len(newer.raw))
    assert store.total_bytes == sum(len(r.raw) for r in store.query(now_ms=NOW + 5))
    assert store.total_bytes <= store.limits.max_total_bytes


def test_a_record_created_more_than_30_days_ahead_of_the_clock_is_refused(
    make_store: MakeStore,
) -> None:
    ahead = NOW + MAX_CREATED_AHEAD_MS
    assert stored(store := make_store(), [record(ALICE, "k", created_ms=ahead + 1)]) == [
        Outcome.FUTURE
    ]
    assert stored(store, [record(ALICE, "k", created_ms=ahead)]) == [Outcome.STORED]
    assert stored(store, [record(BOB, "k", value=None, created_ms=2**63 - 2)]) == [Outcome.FUTURE]


def test_a_tombstone_claiming_a_later_creation_is_kept_for_the_retention_after_arrival(
    make_store: MakeStore,
) -> None:
    limits = StoreLimits(tombstone_retention_ms=1000)
    ahead = record(ALICE, "k", value=None, created_ms=NOW + 10 * DAY_MS)
    store = make_store(limits)
    assert stored(store, [ahead]) == [Outcome.STORED]
    assert store.get(ALICE.public_key, "k", NOW + 999) == ahead
    store.purge(NOW + 1000)
    assert store.get(ALICE.public_key, "k", NOW + 1000) is None


def test_a_node_whose_clock_is_unset_judges_no_creation_time(make_store: MakeStore) -> None:
    booted_in_1970 = 5_000
    far = record(ALICE, value=None, created_ms=2**63 - 2)
    outcomes = stored(store := make_store(), [far, record(ALICE, "other")], now=booted_in_1970)
    assert outcomes == [Outcome.STORED] * 2
    assert store.get(ALICE.public_key, "k", booted_in_1970) == far


def test_a_foreign_author_is_held_to_its_record_quota(make_store: MakeStore) -> None:
    store = make_store(StoreLimits(max_author_records=2))
    first = [record(ALICE, f"k{n}") for n in range(3)]
    assert stored(store, first) == [Outcome.STORED, Outcome.STORED, Outcome.QUOTA]
    # Replacing an existing key does not add a record, so it is still allowed.
    assert stored(store, [record(ALICE, "k0", seq=2)]) == [Outcome.STORED]
    assert stored(store, [record(BOB, "k0")]) == [Outcome.STORED]


def test_a_foreign_author_is_held_to_its_byte_quota(make_store: MakeStore) -> None:
    small = record(ALICE, "a", value="x")
    store = make_store(StoreLimits(max_author_bytes=2 * len(small.raw) + 10))
    assert stored(store, [small, record(ALICE, "b", value="y")]) == [Outcome.STORED] * 2
    assert stored(store, [record(ALICE, "c", value="z" * 100)]) == [Outcome.QUOTA]


def test_the_node_itself_is_exempt_from_author_quotas(make_store: MakeStore) -> None:
    store = make_store(StoreLimits(max_author_records=1))
    assert stored(store, [record(OWNER, f"k{n}") for n in range(3)]) == [Outcome.STORED] * 3


def test_the_total_cap_evicts_the_biggest_foreign_author_lowest_seq_first(
    make_store: MakeStore,
) -> None:
    size = len(record(ALICE, "k0", value="x" * 50).raw)
    store = make_store(StoreLimits(max_total_bytes=5 * size))
    alice = [record(ALICE, f"k{n}", value="x" * 50, seq=10 - n) for n in range(3)]
    bob = [record(BOB, "k0", value="x" * 50)]
    own = [record(OWNER, "mine", value="x" * 50)]
    assert stored(store, alice + bob + own) == [Outcome.STORED] * 5
    newcomer = record(BOB, "k1", value="x" * 50)
    assert stored(store, [newcomer]) == [Outcome.STORED]
    # Alice held the most bytes; her lowest seq (k2, seq 8) went first.
    assert store.get(ALICE.public_key, "k2", NOW) is None
    assert store.get(ALICE.public_key, "k0", NOW) is not None
    assert store.get(OWNER.public_key, "mine", NOW) is not None
    assert store.total_bytes <= 5 * size


def test_dead_records_are_purged_before_anything_is_evicted(make_store: MakeStore) -> None:
    short = record(ALICE, "k1", value="x" * 50, expires_ms=NOW + 5)
    keep = record(ALICE, "k2", value="x" * 50, expires_ms=NOW + 10_000)
    store = make_store(StoreLimits(max_total_bytes=len(short.raw) + len(keep.raw)))
    assert stored(store, [short, keep]) == [Outcome.STORED] * 2
    newcomer = record(BOB, "k3", value="x" * 50, expires_ms=NOW + 10_000)
    assert stored(store, [newcomer], now=NOW + 5) == [Outcome.STORED]
    assert store.get(ALICE.public_key, "k2", NOW + 5) == keep


def test_own_records_are_never_evicted_and_a_full_store_refuses(make_store: MakeStore) -> None:
    one = len(record(OWNER, "a", value="x" * 50).raw)
    store = make_store(StoreLimits(max_total_bytes=2 * one))
    assert stored(store, [record(OWNER, k, value="x" * 50) for k in "abc"]) == [
        Outcome.STORED,
        Outcome.STORED,
        Outcome.QUOTA,
    ]
    assert stored(store, [record(ALICE, "z", value="x" * 50)]) == [Outcome.QUOTA]


def test_a_batch_reports_each_outcome(make_store: MakeStore) -> None:
    store = make_store()
    good = record(ALICE, "a")
    result = store.ingest([good, good, record(ALICE, "b", expires_ms=T0 + 1)], NOW)
    assert result.stored == [good]
    assert result.outcomes == {Outcome.STORED: 1, Outcome.DUPLICATE: 1, Outcome.DEAD: 1}


def test_stats_count_live_records(make_store: MakeStore) -> None:
    store = make_store()
    stored(store, [record(ALICE, "a"), record(BOB, "b", value=None), record(OWNER, "c")])
    stats = store.stats(NOW)
    assert (stats.records, stats.tombstones, stats.authors, stats.own_records) == (3, 1, 3, 1)
    assert stats.record_bytes == store.total_bytes > 0


# -- SQLite only ----------------------------------------------------------------


def test_sqlite_keeps_records_usage_and_high_seq_across_reopening(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with closing(SQLiteStore(path, OWNER.public_key)) as store:
        stored(store, [record(ALICE, "a", seq=3), record(OWNER, "b", seq=5)])
        usage = store.usage(ALICE.public_key)
    with closing(SQLiteStore(path, OWNER.public_key)) as reopened:
        assert reopened.usage(ALICE.public_key) == usage
        assert reopened.high_seq(OWNER.public_key) == 5
        assert [r.key for r in reopened.query(now_ms=NOW)] == ["a", "b"]
        assert reopened.file_bytes() > 0


def test_sqlite_uses_write_ahead_logging(tmp_path: Path) -> None:
    import sqlite3

    SQLiteStore(tmp_path / "s.db", OWNER.public_key).close()
    # A connection's own "with" ends a transaction; closing() closes it.
    with closing(sqlite3.connect(tmp_path / "s.db")) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize(
    "content",
    [
        b"this is not a database at all" * 100,
        b"SQLite format 3\x00" + os.urandom(4000),
        b"\x00" * 8192,
    ],
)
def test_a_damaged_database_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "store.db"
    path.write_bytes(content)
    with pytest.raises(StoreError, match="store"):
        SQLiteStore(path, OWNER.public_key)


def test_a_database_from_a_newer_meshnode_is_refused(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "store.db"
    SQLiteStore(path, OWNER.public_key).close()
    with closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="schema version 99"):
        SQLiteStore(path, OWNER.public_key)


def test_a_failed_batch_is_rolled_back_whole(tmp_path: Path) -> None:
    bad = record(ALICE, "b")
    structs.force_setattr(bad, "raw", None)  # makes the INSERT fail halfway through the batch
    with closing(SQLiteStore(tmp_path / "s.db", OWNER.public_key)) as store:
        with pytest.raises((StoreError, TypeError, AttributeError)):
            store.ingest([record(ALICE, "a"), bad], NOW)
        assert store.query(now_ms=NOW) == []
        assert store.usage(ALICE.public_key) == (0, 0)


def test_items_are_the_live_records_sorted_for_reconciliation(make_store: MakeStore) -> None:
    store = make_store()
    records = [
        record(ALICE, "a", created_ms=T0 + 5000),
        record(BOB, "b", created_ms=T0),
        record(ALICE, "c", created_ms=2**62),  # far future: clamped to 2^31 - 2 seconds
        record(BOB, "gone", created_ms=T0, expires_ms=T0 + 1),
    ]
    stored(store, records[2:3], now=5_000)  # only a node with an unset clock stores it
    stored(store, records[:2] + records[3:], now=T0)
    expected = sorted((min(r.created_ms // 1000, 2**31 - 2), r.id) for r in records[:3])
    assert store.items(T0 + 1) == expected
    found = store.raw_by_ids([r.id for r in records] + [b"\0" * 32], T0 + 1)
    assert sorted(found) == sorted(r.raw for r in records[:3])  # unknown and expired: skipped
    assert store.missing([records[0].id, b"\1" * 32]) == [b"\1" * 32]


def test_queries_by_seq_return_what_an_author_wrote_since(make_store: MakeStore) -> None:
    store = make_store()
    stored(store, [record(ALICE, f"k{n}", seq=n) for n in range(1, 6)] + [record(BOB, "b", seq=9)])
    since = store.query(now_ms=NOW, author=ALICE.public_key, min_seq=4)
    assert [r.seq for r in since] == [4, 5]
    assert len(store.query(now_ms=NOW, min_seq=5)) == 2
