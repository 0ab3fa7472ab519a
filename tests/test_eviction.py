"""Who a full store evicts (protocol/records.md §7, "Quotas"): newcomers yield first.

The campaign's case: a peer with the network key floods the node with thousands
of new one-record authors. None of them holds many bytes, so evicting from the
biggest author pushed out every honest author instead. Newcomers now compete
with newcomers, the flooding peer's own first.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from meshnode.core.identity import Identity
from meshnode.core.record import Record
from meshnode.store import Outcome, Store, StoreLimits
from meshnode.store.sqlite import SQLiteStore
from meshnode.store.standing import ESTABLISHING_SOURCES, HOUR_MS
from tests.helpers import STORE_OWNER, T0, MakeStore, identity, record

OWNER = STORE_OWNER  # the owner of the stores make_store makes
HONEST = identity(1)
NEWCOMER = identity(2)
HONEST_PEER = b"H" * 32
SYBIL_PEER = b"S" * 32
OTHER_PEER = b"O" * 32
VALUE = "x" * 200


def sybils(count: int, first: int = 1000) -> list[Record]:
    """One record each from ``count`` fresh authors."""
    return [record(identity(first + n), "spam", value=VALUE) for n in range(count)]


def size(records: list[Record]) -> int:
    return sum(len(r.raw) for r in records)


def held(store: Store, author: Identity, now: int) -> int:
    return len(store.query(now_ms=now, author=author.public_key))


def test_a_sybil_flood_keeps_every_record_of_an_author_held_before_it(
    make_store: MakeStore,
) -> None:
    before = [record(HONEST, f"before/{n}", value=VALUE) for n in range(200)]
    during = [record(HONEST, f"during/{n}", value=VALUE) for n in range(60)]
    flood = sybils(600)
    store = make_store(StoreLimits(max_total_bytes=size(before + during + flood[:40])))
    store.ingest(before, T0, source=HONEST_PEER)
    now = T0 + 2 * HOUR_MS
    for start in range(0, 600, 50):
        store.ingest(flood[start : start + 50], now, source=SYBIL_PEER)
        store.ingest(during[start // 10 : start // 10 + 5], now, source=HONEST_PEER)
    assert held(store, HONEST, now) == 260
    assert store.total_bytes <= store.limits.max_total_bytes


def test_an_honest_newcomer_displaces_the_flooding_peers_newcomers(
    make_store: MakeStore,
) -> None:
    flood = sybils(100)
    store = make_store(StoreLimits(max_total_bytes=size(flood)))
    store.ingest(flood, T0, source=SYBIL_PEER)
    fresh = [record(NEWCOMER, f"k{n}", value=VALUE) for n in range(10)]
    result = store.ingest(fresh, T0, source=OTHER_PEER)
    assert result.outcomes[Outcome.STORED] == 10
    assert held(store, NEWCOMER, T0) == 10
    # The flooding peer's newest authors went first.
    assert store.usage(identity(1099).public_key) == (0, 0)
    assert store.usage(identity(1000).public_key) == (1, size(flood[:1]))


def test_newcomers_take_at_most_an_eighth_of_a_full_store_from_the_newest_authors(
    make_store: MakeStore,
) -> None:
    oldest = [record(HONEST, f"k{n:02d}", value=VALUE) for n in range(16)]
    newer = [record(NEWCOMER, f"k{n:02d}", value=VALUE) for n in range(16)]
    store = make_store(StoreLimits(max_total_bytes=size(oldest + newer)))
    store.ingest(oldest, T0, source=HONEST_PEER)
    store.ingest(newer, T0 + HOUR_MS, source=OTHER_PEER)
    now = T0 + 3 * HOUR_MS
    flood = [record(identity(1000 + n), "k00", value=VALUE) for n in range(20)]
    result = store.ingest(flood, now, source=SYBIL_PEER)
    assert result.outcomes == {Outcome.STORED: 20}  # a full store still lets new authors in
    assert held(store, HONEST, now) == 16
    assert held(store, NEWCOMER, now) == 12  # 4 of 32 went: the reserve is an eighth
    assert sum(store.usage(r.author)[0] for r in flood) == 4


def test_an_established_authors_record_evicts_newcomers_then_the_newest_established(
    make_store: MakeStore,
) -> None:
    oldest = [record(HONEST, f"k{n:02d}", value=VALUE) for n in range(10)]
    newer = [record(NEWCOMER, f"k{n:02d}", value=VALUE) for n in range(5)]
    flood = [record(identity(1000 + n), "k00", value=VALUE) for n in range(5)]
    store = make_store(StoreLimits(max_total_bytes=size(oldest + newer + flood)))
    store.ingest(oldest, T0, source=HONEST_PEER)
    store.ingest(newer, T0 + HOUR_MS // 2, source=OTHER_PEER)
    now = T0 + 2 * HOUR_MS
    store.ingest(flood, now, source=SYBIL_PEER)
    more = [record(HONEST, f"k{n:02d}", value=VALUE) for n in range(10, 16)]
    assert store.ingest(more, now, source=HONEST_PEER).outcomes == {Outcome.STORED: 6}
    assert held(store, HONEST, now) == 16 and held(store, NEWCOMER, now) == 4
    assert all(store.usage(r.author) == (0, 0) for r in flood)


def test_one_batch_makes_room_for_each_record_in_it(make_store: MakeStore) -> None:
    small = record(HONEST, "k", value="x" * 100)
    filler = [record(NEWCOMER, f"f{n}", value="x" * 100) for n in range(4)]
    store = make_store(StoreLimits(max_total_bytes=size([small, *filler])))
    store.ingest([small, *filler], T0)
    bigger = record(HONEST, "k", value="x" * 150, seq=2)
    third = record(OWNER, "mine", value="x" * 100)
    assert store.ingest([bigger, third], T0).outcomes == {Outcome.STORED: 2}
    assert store.total_bytes <= store.limits.max_total_bytes


def test_an_author_delivered_by_several_peers_is_established_at_once(
    make_store: MakeStore,
) -> None:
    store = make_store(StoreLimits())
    peers = [bytes([n]) * 32 for n in range(ESTABLISHING_SOURCES)]
    for n, peer in enumerate(peers):
        store.ingest([record(NEWCOMER, f"k{n}")], T0, source=peer)
    standing = store.standing(NEWCOMER.public_key)
    assert standing.sources == tuple(peers) and standing.first_seen_ms == T0


def test_records_the_user_imported_are_established(make_store: MakeStore) -> None:
    store = make_store(StoreLimits())
    store.ingest([record(NEWCOMER, "k")], T0)
    assert store.standing(NEWCOMER.public_key).sources == ()
    assert not store.is_newcomer(NEWCOMER.public_key, T0)


def test_an_author_whose_records_are_all_gone_starts_over_as_a_newcomer(
    make_store: MakeStore,
) -> None:
    store = make_store(StoreLimits())
    store.ingest([record(NEWCOMER, "k", expires_ms=T0 + 10)], T0, source=SYBIL_PEER)
    store.purge(T0 + 10)
    store.ingest([record(NEWCOMER, "k2")], T0 + 20, source=OTHER_PEER)
    assert store.standing(NEWCOMER.public_key).sources == (OTHER_PEER,)


def test_standings_survive_a_restart(tmp_path: Path) -> None:
    with closing(SQLiteStore(tmp_path / "s.db", OWNER.public_key)) as store:
        store.ingest([record(NEWCOMER, "k")], T0, source=SYBIL_PEER)
        store.ingest([record(NEWCOMER, "k2")], T0 + 5, source=OTHER_PEER)
    with closing(SQLiteStore(tmp_path / "s.db", OWNER.public_key)) as store:
        standing = store.standing(NEWCOMER.public_key)
        assert standing.first_seen_ms == T0 and standing.sources == (SYBIL_PEER, OTHER_PEER)


def test_a_store_of_schema_1_is_upgraded_and_its_authors_are_established(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    honest = [record(HONEST, f"k{n}", value=VALUE) for n in range(10)]
    limits = StoreLimits(max_total_bytes=size(honest))
    with closing(SQLiteStore(path, OWNER.public_key, limits)) as store:
        store.ingest(honest, T0, source=HONEST_PEER)
    with closing(sqlite3.connect(path)) as db, db:  # closed, after one transaction
        db.execute("DELETE FROM authors WHERE author != ?", (OWNER.public_key,))
        db.execute("CREATE TABLE old (author BLOB PRIMARY KEY, high_seq INTEGER NOT NULL)")
        db.execute("INSERT INTO old SELECT author, high_seq FROM authors")
        db.execute("DROP TABLE authors")
        db.execute("ALTER TABLE old RENAME TO authors")
        db.execute("PRAGMA user_version = 1")
    with closing(SQLiteStore(path, OWNER.public_key, limits)) as store:
        assert not store.is_newcomer(HONEST.public_key, T0)
        assert held(store, HONEST, T0) == 10


def test_authors_established_before_a_restart_on_an_unset_clock_stay_established(
    tmp_path: Path,
) -> None:
    honest = [record(HONEST, f"k{n:02d}", value=VALUE) for n in range(16)]
    limits = StoreLimits(max_total_bytes=size(honest))
    with closing(SQLiteStore(tmp_path / "s.db", OWNER.public_key, limits)) as store:
        store.ingest(honest, T0, source=HONEST_PEER)
    booted_in_1970 = 120_000
    with closing(SQLiteStore(tmp_path / "s.db", OWNER.public_key, limits)) as store:
        flood = [record(identity(1000 + n), "k00", value=VALUE) for n in range(40)]
        store.ingest(flood, booted_in_1970, source=SYBIL_PEER)
        assert held(store, HONEST, booted_in_1970) == 14  # the newcomers' reserve, no more
        assert store.is_newcomer(flood[-1].author, booted_in_1970)


def test_the_nodes_own_records_are_never_evicted_even_if_they_once_came_from_a_peer(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    mine = [record(OWNER, f"k{n:02d}", value=VALUE, seq=10) for n in range(4)]
    mine_now = [*mine, record(OWNER, "new", value=VALUE, seq=11)]
    with closing(SQLiteStore(path, NEWCOMER.public_key)) as store:  # the data dir's old identity
        store.ingest(mine, T0, source=OTHER_PEER)
    flood = [record(identity(1000 + n), "k00", value=VALUE) for n in range(8)]
    limits = StoreLimits(max_total_bytes=size(mine_now + flood[:2]))
    with closing(SQLiteStore(path, OWNER.public_key, limits)) as store:
        store.ingest([record(OWNER, "new", value=VALUE, seq=11)], T0, durable=True)
        store.ingest(flood, T0, source=SYBIL_PEER)
        assert store.usage(OWNER.public_key)[0] == 5
        store.purge(T0)
        assert store.high_seq(OWNER.public_key) == 11
