"""Who a full store evicts (protocol/records.md §7, "Quotas"): newcomers yield first.

The campaign's case: a peer with the network key floods the node with thousands
of new one-record authors. None of them holds many bytes, so evicting from the
biggest author pushed out every honest author instead. Newcomers now compete
with newcomers, the flooding peer's own first.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from meshnode.core.identity import Identity
from meshnode.core.record import Record
from meshnode.store import MemoryStore, Outcome, Store, StoreLimits
from meshnode.store.sqlite import SQLiteStore
from meshnode.store.standing import ESTABLISHING_SOURCES, HOUR_MS
from tests.helpers import T0, identity, record

OWNER = identity(0)
HONEST = identity(1)
NEWCOMER = identity(2)
HONEST_PEER = b"H" * 32
SYBIL_PEER = b"S" * 32
OTHER_PEER = b"O" * 32
VALUE = "x" * 200

MakeStore = Callable[[StoreLimits], Store]


@pytest.fixture(params=["memory", "sqlite"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeStore]:
    opened: list[Store] = []

    def make(limits: StoreLimits) -> Store:
        if request.param == "memory":
            store: Store = MemoryStore(OWNER.public_key, limits)
        else:
            store = SQLiteStore(tmp_path / f"store{len(opened)}.db", OWNER.public_key, limits)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


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


def test_a_newcomer_cannot_displace_an_established_author(make_store: MakeStore) -> None:
    honest = [record(HONEST, f"k{n}", value=VALUE) for n in range(20)]
    store = make_store(StoreLimits(max_total_bytes=size(honest)))
    store.ingest(honest, T0, source=HONEST_PEER)
    now = T0 + HOUR_MS
    result = store.ingest(sybils(5), now, source=SYBIL_PEER)
    assert result.outcomes == {Outcome.QUOTA: 5}
    assert held(store, HONEST, now) == 20


def test_an_established_author_displaces_the_biggest_established_one(
    make_store: MakeStore,
) -> None:
    honest = [record(HONEST, f"k{n}", value=VALUE) for n in range(15)]
    other = [record(NEWCOMER, f"k{n}", value=VALUE) for n in range(5)]
    store = make_store(StoreLimits(max_total_bytes=size(honest + other)))
    store.ingest(honest, T0, source=HONEST_PEER)
    store.ingest(other, T0, source=OTHER_PEER)
    now = T0 + HOUR_MS
    result = store.ingest([record(NEWCOMER, "k5", value=VALUE)], now, source=OTHER_PEER)
    assert result.outcomes == {Outcome.STORED: 1}
    assert held(store, HONEST, now) == 14 and held(store, NEWCOMER, now) == 6


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
    imported = [record(NEWCOMER, f"k{n}", value=VALUE) for n in range(10)]
    store = make_store(StoreLimits(max_total_bytes=size(imported)))
    store.ingest(imported, T0)
    assert store.ingest(sybils(3), T0, source=SYBIL_PEER).outcomes == {Outcome.QUOTA: 3}


def test_an_author_whose_records_are_all_gone_starts_over_as_a_newcomer(
    make_store: MakeStore,
) -> None:
    store = make_store(StoreLimits())
    store.ingest([record(NEWCOMER, "k", expires_ms=T0 + 10)], T0, source=SYBIL_PEER)
    store.purge(T0 + 10)
    store.ingest([record(NEWCOMER, "k2")], T0 + 20, source=OTHER_PEER)
    assert store.standing(NEWCOMER.public_key).sources == (OTHER_PEER,)


def test_standings_survive_a_restart(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db", OWNER.public_key)
    store.ingest([record(NEWCOMER, "k")], T0, source=SYBIL_PEER)
    store.ingest([record(NEWCOMER, "k2")], T0 + 5, source=OTHER_PEER)
    store.close()
    store = SQLiteStore(tmp_path / "s.db", OWNER.public_key)
    standing = store.standing(NEWCOMER.public_key)
    assert standing.first_seen_ms == T0 and standing.sources == (SYBIL_PEER, OTHER_PEER)
    store.close()


def test_a_store_of_schema_1_is_upgraded_and_its_authors_are_established(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    honest = [record(HONEST, f"k{n}", value=VALUE) for n in range(10)]
    limits = StoreLimits(max_total_bytes=size(honest))
    store = SQLiteStore(path, OWNER.public_key, limits)
    store.ingest(honest, T0, source=HONEST_PEER)
    store.close()
    db = sqlite3.connect(path)
    with db:
        db.execute("DELETE FROM authors WHERE author != ?", (OWNER.public_key,))
        db.execute("CREATE TABLE old (author BLOB PRIMARY KEY, high_seq INTEGER NOT NULL)")
        db.execute("INSERT INTO old SELECT author, high_seq FROM authors")
        db.execute("DROP TABLE authors")
        db.execute("ALTER TABLE old RENAME TO authors")
        db.execute("PRAGMA user_version = 1")
    db.close()
    store = SQLiteStore(path, OWNER.public_key, limits)
    assert store.ingest(sybils(2), T0, source=SYBIL_PEER).outcomes == {Outcome.QUOTA: 2}
    assert held(store, HONEST, T0) == 10
    store.close()
