"""Records this node refused are not fetched again at every round.

A record refused for want of room (a quota), for being from the future, expired or
superseded would be refused again: each reconciliation round would find it missing,
want it, have it sent, verify its signature and refuse it once more. The engine keeps
the ids it declined, bounded in number and for a while, and wants none of them.
"""

from __future__ import annotations

import random

from msgspec import structs

from meshnode.engine.declined import DECLINE_FOR, MAX_DECLINED, Declined
from meshnode.engine.events import Publish
from meshnode.engine.mesh import Mesh
from meshnode.engine.node import Publication
from meshnode.engine.settings import Settings
from meshnode.sim.network import Network
from meshnode.store.base import StoreLimits

ROOM = 50  # records of one foreign author node 1 takes
OFFERED = 300


def refusing_pair() -> Network:
    """Node 0 holds ``OFFERED`` records of its own; node 1 takes ``ROOM`` of any author."""
    settings = structs.replace(Settings(), store=StoreLimits(max_author_records=ROOM))
    net = Network(random.Random(3), settings=settings)
    net.add_node()
    net.add_node()
    net.handle(0, Publish([Publication(f"offer/{i}", "x" * 40) for i in range(OFFERED)]))
    net.connect(1, 0)
    net.settle()
    return net


def records_in(net: Network, index: int) -> int:
    mesh = net.nodes[index].mesh
    assert isinstance(mesh, Mesh)
    [view] = mesh.peers(net.now)
    return view.stats.records_in


def test_records_refused_for_a_quota_are_fetched_once_not_every_round() -> None:
    net = refusing_pair()
    assert len(net.nodes[1].store.items(net.instant().wall_ms)) == ROOM
    first = records_in(net, 1)
    assert first == OFFERED  # each was fetched once, and the quota kept ROOM of them

    net.run_until(net.now + 5 * 60)  # five rounds of node 1's (reconcile_interval 60 s)
    assert records_in(net, 1) == first


def test_once_the_decline_has_run_out_the_records_are_asked_for_again() -> None:
    net = refusing_pair()
    first = records_in(net, 1)
    net.run_until(net.now + DECLINE_FOR + 2 * 60)
    assert records_in(net, 1) > first  # room may have been made meanwhile: ask again


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
