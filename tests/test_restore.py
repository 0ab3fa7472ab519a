"""Restoring a backup of the data dir loses nothing and never reuses a seq (records.md §7).

The campaign's case: a bulk publish runs for a while, the data dir is restored
from a backup taken before it, and the node publishes again. Its new seqs must
exceed every seq it signed before the restore, and on first contact it takes
back from its peers what the backup lacked.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshnode.core.record import Record
from meshnode.engine.actions import Published
from meshnode.engine.events import Instant, Publish
from meshnode.engine.node import Publication
from meshnode.sim.network import Network, SimNode
from meshnode.store.sqlite import SQLiteStore
from tests.meshnet import network, publish

BULK = 6_000
RATE_PER_MS = 5  # group commit's pace: ~5,000 records a second
HOUR_MS = 3_600_000


@pytest.fixture
def net() -> Iterator[Network]:
    """Alice (node 0, not started: she runs on SQLite) and Bob (node 1), not connected.

    Every store is closed when the test ends.
    """
    net = network()
    net.add_node(start=False)
    net.add_node()
    yield net
    for node in net.nodes:
        node.store.close()


def restart_alice(
    net: Network, data_dir: Path, restore: Path | None = None, *, offline: bool = False
) -> SimNode:
    """Alice stops, her store is copied to or from ``restore``, and she comes back.

    She runs on the SQLite store in ``data_dir``, like the daemon, and reconnects
    to Bob (her only peer) unless she comes back ``offline``.
    """
    alice = net.nodes[0]
    if alice.up:
        net.crash(0)
        net.settle()
    store = data_dir / "store.sqlite3"
    alice.store.close()
    if restore is not None and restore.exists():
        shutil.copy(restore, store)
    elif restore is not None:
        shutil.copy(store, restore)
    alice.store = SQLiteStore(store, alice.identity.public_key)
    net.start(0)
    if not offline:
        net.connect(0, 1)
        net.settle()
    return alice


def bulk_publish(net: Network, count: int) -> list[int]:
    """Alice publishes ``count`` records in group commits at ~5,000 a second; their seqs."""
    seqs: list[int] = []
    for start in range(0, count, 500):
        batch = [Publication(f"bulk/{i}", i) for i in range(start, min(start + 500, count))]
        for action in net.handle(0, Publish(batch)):
            if isinstance(action, Published):
                seqs.extend(r.seq for r in action.results if isinstance(r, Record))
        net.settle()
        net.run_until(net.now + 500 / RATE_PER_MS / 1000)
    return seqs


def test_a_restore_after_a_bulk_publish_reuses_no_seq_and_loses_no_update(
    tmp_path: Path, net: Network
) -> None:
    restart_alice(net, tmp_path)
    publish(net, 0, "profile/name", "Ada")
    net.settle()
    restart_alice(net, tmp_path, restore=tmp_path / "backup.sqlite3")  # takes it

    signed = bulk_publish(net, BULK)
    signed.append(publish(net, 0, "profile/name", "Ada L.").seq)
    net.settle()

    net.run_until(net.now + 1.0)  # a restore and a restart take a moment, if not much more
    alice = restart_alice(net, tmp_path, restore=tmp_path / "backup.sqlite3", offline=True)
    after_restore = publish(net, 0, "offer/tea", "hot")
    net.connect(0, 1)
    net.settle()

    assert after_restore.seq > max(signed)
    author = alice.identity.public_key
    now_ms = net.instant().wall_ms
    for node in net.nodes:
        name = node.store.get(author, "profile/name", now_ms)
        assert name is not None and name.value == "Ada L."
        assert node.store.get(author, "offer/tea", now_ms) == after_restore
        assert len(node.store.query(now_ms=now_ms, author=author, prefix="bulk/")) == BULK
    assert alice.store.high_seq(author) == after_restore.seq


def test_a_node_restored_from_before_its_clock_went_back_heals_on_first_contact(
    tmp_path: Path, net: Network
) -> None:
    """Alice signs a rename while her clock runs an hour fast, then is restored with it right.

    The simulator gives every node the same clock, so the fast one is handed to
    her engine by hand, while she has no session whose bytes would go unsent.
    """
    alice = restart_alice(net, tmp_path, offline=True)
    publish(net, 0, "profile/name", "Ada")
    restart_alice(net, tmp_path, restore=tmp_path / "backup.sqlite3", offline=True)  # takes it
    assert alice.mesh is not None
    fast = Instant(net.now, net.instant().wall_ms + HOUR_MS)
    actions = alice.mesh.handle(Publish([Publication("profile/name", "Ada L.")]), fast)
    [renamed] = next(x for x in actions if isinstance(x, Published)).results
    assert isinstance(renamed, Record)
    net.connect(0, 1)
    net.settle()  # Bob takes the rename

    alice = restart_alice(net, tmp_path, restore=tmp_path / "backup.sqlite3")  # restores it

    author = alice.identity.public_key
    assert alice.store.get(author, "profile/name", net.instant().wall_ms) == renamed
    assert alice.store.high_seq(author) == renamed.seq
    after_contact = publish(net, 0, "offer/tea", "hot")
    assert after_contact.seq > renamed.seq
