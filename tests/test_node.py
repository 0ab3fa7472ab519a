"""A node's local operations: how seqs are chosen, what publish and delete refuse."""

from __future__ import annotations

import pytest

from meshnode.core.record import CLOCK_FLOOR_MS, MAX_INT63, RecordError
from meshnode.engine.node import (
    SEQS_PER_MS,
    ClockUnset,
    InvalidArgument,
    Node,
    NotFound,
    QuotaExceeded,
    clock_seq,
)
from meshnode.store import MemoryStore, Outcome, StoreLimits
from tests.helpers import T0, identity, record

ME = identity(0)


def node(limits: StoreLimits | None = None) -> Node:
    return Node(ME, MemoryStore(ME.public_key, limits))


def test_seqs_follow_the_clock_in_thousandths_of_a_ms_and_never_repeat_or_go_back() -> None:
    n = node()
    first = n.publish("a", 1, now_ms=T0)
    assert first.seq == T0 * SEQS_PER_MS
    same_ms = n.publish("b", 2, now_ms=T0)
    clock_went_back = n.publish("c", 3, now_ms=T0 - 60_000)
    later = n.publish("d", 4, now_ms=T0 + 60_000)
    assert [first.seq, same_ms.seq, clock_went_back.seq, later.seq] == [
        T0 * SEQS_PER_MS,
        T0 * SEQS_PER_MS + 1,
        T0 * SEQS_PER_MS + 2,
        (T0 + 60_000) * SEQS_PER_MS,
    ]


def test_bulk_publishing_never_runs_seqs_ahead_of_the_clock() -> None:
    # 20,000 publishes in 2 s, ten times faster than group commit goes.
    n = node()
    last = None
    for i in range(20_000):
        last = n.publish(f"k/{i % 100}", i, now_ms=T0 + i // 10)
    assert last is not None and last.seq < clock_seq(T0 + 2_000)


def test_a_restored_backup_keeps_counting_above_seqs_it_never_saw() -> None:
    # The backup was taken at T0; after it, the node published 5,000 records in a second.
    n = node()
    n.publish("a", 1, now_ms=T0)
    backup = MemoryStore(ME.public_key)
    backup.ingest(n.store.query(now_ms=T0), T0)
    signed_after_backup = [n.publish(f"k/{i}", i, now_ms=T0 + i // 5) for i in range(5_000)]
    restored = Node(ME, backup)
    after_restore = restored.publish("a", 2, now_ms=T0 + 1_001)
    assert after_restore.seq > max(r.seq for r in signed_after_backup)


def test_a_node_adopts_its_own_newer_records_from_elsewhere() -> None:
    n = node()
    mine_from_a_peer = record(ME, "a", seq=clock_seq(T0) + 10**9)
    n.store.ingest([mine_from_a_peer], T0)
    assert n.publish("b", 1, now_ms=T0).seq == clock_seq(T0) + 10**9 + 1


def test_seqs_stop_growing_with_the_clock_at_the_largest_seq() -> None:
    assert clock_seq(MAX_INT63) == MAX_INT63 // SEQS_PER_MS * SEQS_PER_MS
    assert clock_seq(-5) == 0


def test_a_node_with_an_unset_clock_publishes_without_expiry_only() -> None:
    n = node()
    boot_in_1970 = 5_000
    assert n.publish("a", 1, now_ms=boot_in_1970).seq == clock_seq(boot_in_1970)
    with pytest.raises(ClockUnset):
        n.publish("b", 1, now_ms=boot_in_1970, ttl_ms=1000)
    assert n.publish("c", 1, now_ms=CLOCK_FLOOR_MS, ttl_ms=1000).expires_ms == CLOCK_FLOOR_MS + 1000


@pytest.mark.parametrize("ttl", [0, -1, 10 * 366 * 24 * 3600 * 1000])
def test_a_ttl_must_be_positive_and_at_most_ten_years(ttl: int) -> None:
    with pytest.raises(InvalidArgument):
        node().publish("a", 1, now_ms=T0, ttl_ms=ttl)


def test_publish_refuses_invalid_records_and_stores_nothing() -> None:
    n = node()
    with pytest.raises(RecordError):
        n.publish("bad//key", 1, now_ms=T0)
    with pytest.raises(InvalidArgument):
        n.publish("a", None, now_ms=T0)
    assert n.store.stats(T0).records == 0


def test_delete_writes_a_signed_tombstone() -> None:
    n = node()
    n.publish("offer/x", "y", now_ms=T0)
    tombstone = n.delete("offer/x", now_ms=T0 + 1)
    assert tombstone.is_tombstone and tombstone.author == ME.public_key
    assert n.get("offer/x", now_ms=T0 + 1) == tombstone
    with pytest.raises(NotFound, match="'offer/x' is deleted already"):
        n.delete("offer/x", now_ms=T0 + 2)
    with pytest.raises(NotFound, match="no record 'never/was' to delete"):
        n.delete("never/was", now_ms=T0 + 2)


def test_a_full_store_refuses_the_nodes_own_records() -> None:
    n = node(StoreLimits(max_total_bytes=300))
    n.publish("a", "x", now_ms=T0)
    with pytest.raises(QuotaExceeded):
        n.publish("b", "x" * 200, now_ms=T0)


def test_ingest_verifies_then_stores_and_reports() -> None:
    n = node()
    alice = identity(1)
    good = record(alice, "a")
    tampered = bytearray(record(alice, "b").raw)
    tampered[-1] ^= 1
    report = n.ingest([good.raw, bytes(tampered), b"\x00"], now_ms=T0)
    assert report.result.stored == [good]
    assert report.result.outcomes[Outcome.STORED] == 1
    assert [e.reason for e in report.rejected] == ["bad-signature", "not-a-record"]


def test_a_parallel_map_verifies_in_chunks_with_the_same_result() -> None:
    from concurrent.futures import ThreadPoolExecutor

    alice = identity(1)
    raws = [record(alice, f"k/{n}").raw for n in range(700)]
    forged = bytearray(raws[500])
    forged[-1] ^= 1
    raws[500] = bytes(forged)
    with ThreadPoolExecutor(2) as pool:
        parallel = Node(ME, MemoryStore(ME.public_key), parallel_map=pool.map)
        report = parallel.ingest(raws, now_ms=T0)
    serial = node().ingest(raws, now_ms=T0)
    assert [r.id for r in report.result.stored] == [r.id for r in serial.result.stored]
    assert len(report.result.stored) == 699
    assert [e.reason for e in report.rejected] == ["bad-signature"]
