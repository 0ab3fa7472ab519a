"""Records this node refused are not fetched again at every round.

A record refused for want of room (a quota), for being from the future, expired or
superseded would be refused again: each reconciliation round would find it missing,
want it, have it sent, verify its signature and refuse it once more. The engine keeps
the ids it declined, bounded in number and for a while, and wants none of them; a
reload that changes the quotas, or a sync asked for, asks for them again.
"""

from __future__ import annotations

import random

from msgspec import structs

from meshnode.core.session import RESYNC_INTERVAL
from meshnode.engine.declined import DECLINE_FOR, MAX_DECLINED, Declined
from meshnode.engine.events import Publish, Reconfigure, SyncNow
from meshnode.engine.mesh import Mesh
from meshnode.engine.node import Publication
from meshnode.engine.settings import Settings
from meshnode.sim.network import Network
from meshnode.store.base import StoreLimits

ROOM = 50  # records of one foreign author node 1 takes
OFFERED = 300


def refusing_pair(*, dialler: int = 1) -> Network:
    """Node 0 holds ``OFFERED`` records of its own; node 1 takes ``ROOM`` of any author."""
    settings = structs.replace(Settings(), store=StoreLimits(max_author_records=ROOM))
    net = Network(random.Random(3), settings=settings)
    net.add_node()
    net.add_node()
    net.handle(0, Publish([Publication(f"offer/{i}", "x" * 40) for i in range(OFFERED)]))
    net.connect(dialler, 1 - dialler)
    net.settle()
    return net


def held(net: Network, index: int) -> int:
    return len(net.nodes[index].store.items(net.instant().wall_ms))


def records_in(net: Network, index: int) -> int:
    mesh = net.nodes[index].mesh
    assert isinstance(mesh, Mesh)
    [view] = mesh.peers(net.now)
    return view.stats.records_in


def test_records_refused_for_a_quota_are_fetched_once_not_every_round() -> None:
    net = refusing_pair()
    assert held(net, 1) == ROOM
    first = records_in(net, 1)
    assert first == OFFERED  # each was fetched once, and the quota kept ROOM of them

    net.run_until(net.now + 5 * 60)  # five rounds of node 1's (reconcile_interval 60 s)
    assert records_in(net, 1) == first


def test_once_the_decline_has_run_out_the_records_are_asked_for_again() -> None:
    net = refusing_pair()
    first = records_in(net, 1)
    net.run_until(net.now + DECLINE_FOR + 2 * 60)
    assert records_in(net, 1) > first  # room may have been made meanwhile: ask again


def test_room_made_by_a_reload_is_filled_at_the_next_sync_not_ten_minutes_later() -> None:
    net = refusing_pair()
    net.handle(1, Reconfigure(Settings()))  # the default quotas take all of them
    net.run_until(net.now + RESYNC_INTERVAL)
    net.handle(1, SyncNow())
    net.settle()
    assert held(net, 1) == OFFERED


def test_a_sync_asked_for_asks_for_the_refused_records_again() -> None:
    net = refusing_pair()
    first = records_in(net, 1)
    net.run_until(net.now + RESYNC_INTERVAL)
    net.handle(1, SyncNow())
    net.settle()
    assert records_in(net, 1) == first + OFFERED - ROOM


def test_a_peer_that_dialled_still_pushes_them_once_a_round_of_its_own() -> None:
    # Only the dialler of a session runs rounds, and it pushes what it found the other
    # lacks, unasked: there is no word on the wire to say "not these". This holds down
    # what this node's own rounds fetch, not what a peer's rounds push.
    net = refusing_pair(dialler=0)
    first = records_in(net, 1)
    net.run_until(net.now + 2 * 60 + 1)
    assert records_in(net, 1) == first + 2 * (OFFERED - ROOM)


# -- the set itself ---------------------------------------------------------------------


def ids(n: int, start: int = 0) -> list[bytes]:
    return [i.to_bytes(32, "big") for i in range(start, start + n)]


def test_declined_ids_are_left_out_of_what_is_wanted_until_they_run_out() -> None:
    declined = Declined()
    declined.add(ids(3), now=0.0)
    assert declined.without(ids(5), now=1.0) == ids(2, start=3)
    assert declined.without(ids(5), now=DECLINE_FOR + 1) == ids(5)
    assert len(declined) == 0


def test_the_set_is_bounded_and_forgets_the_oldest_first() -> None:
    declined = Declined()
    declined.add(ids(MAX_DECLINED + 10), now=0.0)
    assert len(declined) == MAX_DECLINED
    assert declined.without(ids(10), now=1.0) == ids(10)  # the first ten made room
    assert declined.without(ids(10, start=10), now=1.0) == []


def test_declining_again_starts_the_wait_again() -> None:
    declined = Declined()
    declined.add(ids(1), now=0.0)
    declined.add(ids(1), now=DECLINE_FOR - 1)
    assert declined.without(ids(1), now=DECLINE_FOR + 1) == []
