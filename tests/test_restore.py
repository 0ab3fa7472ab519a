"""Restoring a backup of the data dir loses nothing and never reuses a seq (records.md §7).

The campaign's case: a bulk publish runs for a while, the data dir is restored
from a backup taken before it, and the node publishes again. Its new seqs must
exceed every seq it signed before the restore, and on first contact it takes
back from its peers what the backup lacked.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshnode.engine.mesh import Mesh
from meshnode.engine.node import Node, Publication
from meshnode.store.sqlite import SQLiteStore
from tests.meshnet import Network

BULK = 6_000
RATE_PER_MS = 5  # group commit's pace: ~5,000 records a second


@pytest.fixture
def net() -> Iterator[Network]:
    """Nodes 0 and 1, not yet connected; every store is closed when the test ends."""
    net = Network()
    net.add(0)
    net.add(1)
    yield net
    for mesh in net.nodes:
        mesh.node.store.close()


def restart_alice(
    net: Network, data_dir: Path, restore: Path | None = None, *, offline: bool = False
) -> Mesh:
    """Node 0 stops, its store is copied to or from ``restore``, and it comes back.

    It runs on the SQLite store in ``data_dir``, like the daemon, and reconnects
    to node 1 (its only peer) unless it comes back ``offline``.
    """
    for link in list(net.links):
        net.disconnect(link)
    store = data_dir / "store.sqlite3"
    old = net.nodes[0]
    identity = old.node.identity
    old.node.store.close()
    if restore is not None and restore.exists():
        shutil.copy(restore, store)
    elif restore is not None:
        shutil.copy(store, restore)
    rng = random.Random(0)
    alice = Mesh(
        Node(identity, SQLiteStore(store, identity.public_key)),
        agent="test",
        nonce=lambda: rng.getrandbits(63),
    )
    net.nodes[0] = alice
    if not offline:
        net.connect(0, 1)
        net.settle()
    return alice


def bulk_publish(mesh: Mesh, net: Network, count: int) -> list[int]:
    """Publish ``count`` records in group commits at ~5,000 a second; their seqs."""
    seqs: list[int] = []
    for start in range(0, count, 500):
        batch = [Publication(f"bulk/{i}", i) for i in range(start, min(start + 500, count))]
        results, _ = mesh.publish_many(batch, now_ms=net.now_ms)
        seqs.extend(r.seq for r in results if not isinstance(r, Exception))
        net.settle()
        net.advance(500 / RATE_PER_MS / 1000)
    return seqs


def test_a_restore_after_a_bulk_publish_reuses_no_seq_and_loses_no_update(
    tmp_path: Path, net: Network
) -> None:
    alice = restart_alice(net, tmp_path)
    alice.publish("profile/name", "Ada", ttl_ms=None, now_ms=net.now_ms)
    net.settle()
    alice = restart_alice(net, tmp_path, restore=tmp_path / "backup.sqlite3")  # takes it

    signed = bulk_publish(alice, net, BULK)
    renamed, _ = alice.publish("profile/name", "Ada L.", ttl_ms=None, now_ms=net.now_ms)
    signed.append(renamed.seq)
    net.settle()

    net.advance(1.0)  # a restore and a restart take a moment, if not much more
    alice = restart_alice(net, tmp_path, restore=tmp_path / "backup.sqlite3", offline=True)
    after_restore, _ = alice.publish("offer/tea", "hot", ttl_ms=None, now_ms=net.now_ms)
    net.connect(0, 1)
    net.settle()

    assert after_restore.seq > max(signed)
    author = alice.node.identity.public_key
    for mesh in net.nodes:
        store = mesh.node.store
        name = store.get(author, "profile/name", net.now_ms)
        assert name is not None and name.value == "Ada L."
        assert store.get(author, "offer/tea", net.now_ms) == after_restore
        assert len(store.query(now_ms=net.now_ms, author=author, prefix="bulk/")) == BULK
    assert alice.node.store.high_seq(author) == after_restore.seq


def test_a_node_restored_from_before_its_clock_went_back_heals_on_first_contact(
    tmp_path: Path, net: Network
) -> None:
    alice = restart_alice(net, tmp_path)
    alice.publish("profile/name", "Ada", ttl_ms=None, now_ms=net.now_ms)
    alice = restart_alice(net, tmp_path, restore=tmp_path / "backup.sqlite3")  # takes it
    net.now_ms += 3_600_000
    renamed, _ = alice.publish("profile/name", "Ada L.", ttl_ms=None, now_ms=net.now_ms)
    net.settle()

    net.now_ms -= 3_600_000  # the restored machine's clock is an hour behind
    alice = restart_alice(net, tmp_path, restore=tmp_path / "backup.sqlite3")  # restores it

    author = alice.node.identity.public_key
    assert alice.node.store.get(author, "profile/name", net.now_ms) == renamed
    assert alice.node.store.high_seq(author) == renamed.seq
    after_contact, _ = alice.publish("offer/tea", "hot", ttl_ms=None, now_ms=net.now_ms)
    assert after_contact.seq > renamed.seq
