"""The engine's contract with its driver: ``Mesh.handle`` turns events into actions.

Each test hands one engine events, as the trio runtime or the simulator would,
and reads only the actions it returns and its snapshots (``peers``,
``addresses``, ``next_timer``).
"""

from __future__ import annotations

import pytest

from meshnode.core import messages as m
from meshnode.engine.actions import Close, Dial, Ingested, Published, Send
from meshnode.engine.events import DialFailed, Lost, Publish, Received, Stop, Tick
from meshnode.engine.mesh import FULL
from meshnode.engine.node import Publication
from meshnode.engine.settings import PeerSettings, Settings
from tests.helpers import identity
from tests.meshnet import ME, PEER, at, closed, engine, hello, open_session, sent

STATIC = "192.0.2.1:7744"
STATIC_PEERS = Settings(peers=PeerSettings(peers=(("192.0.2.1", 7744),)))


def test_static_peers_are_dialled_on_the_first_tick() -> None:
    mesh = engine(STATIC_PEERS)
    assert mesh.next_timer() == 0.0
    assert mesh.handle(Tick(), at(0)) == [Dial(STATIC)]
    assert mesh.handle(Tick(), at(0)) == []  # one dial at a time


def test_a_failed_dial_is_retried_after_a_backoff_that_doubles() -> None:
    """Backoff starts at ``backoff_initial`` (1 s) and doubles, each drawn ±20 %."""
    mesh = engine(STATIC_PEERS)
    mesh.handle(Tick(), at(0))
    mesh.handle(DialFailed(STATIC), at(0))
    retry = mesh.next_timer()
    assert 0.8 <= retry <= 1.2
    assert mesh.handle(Tick(), at(retry / 2)) == []
    assert mesh.handle(Tick(), at(retry)) == [Dial(STATIC)]
    mesh.handle(DialFailed(STATIC), at(retry))
    assert 1.6 <= mesh.next_timer() - retry <= 2.4


def test_stop_says_goodbye_0_to_every_peer_and_closes_every_session() -> None:
    mesh = engine()
    open_session(mesh, 1, remote=identity(201))
    open_session(mesh, 2, remote=identity(202), initiator=True)
    mesh.handle(Received(1, hello()), at(0))
    actions = mesh.handle(Stop(), at(1))
    for conn in (1, 2):
        assert sent(actions, conn)[-1] == m.Goodbye(m.GoodbyeCode.NORMAL, m.Why.SHUTTING_DOWN)
        sends = [i for i, x in enumerate(actions) if isinstance(x, Send) and x.conn == conn]
        [close] = [i for i, x in enumerate(actions) if isinstance(x, Close) and x.conn == conn]
        assert max(sends) < close  # the goodbye goes out before the close
    assert closed(actions) == [(1, m.GoodbyeCode.NORMAL), (2, m.GoodbyeCode.NORMAL)]


def test_a_publish_with_no_peers_is_answered_and_stored_and_sends_nothing() -> None:
    mesh = engine()
    actions = mesh.handle(Publish([Publication("offer/tea", "hot")]), at(0))
    assert [type(x) for x in actions] == [Published, Ingested]
    published, ingested = actions
    assert isinstance(published, Published) and isinstance(ingested, Ingested)
    assert ingested.conn is None and ingested.stored == list(published.results)


def test_the_addresses_a_peer_announces_in_hello_are_learnt_as_hints() -> None:
    """An unspecified host (0.0.0.0) means the host the peer's connection came from."""
    mesh = engine()
    open_session(mesh, address="192.0.2.9:40001")
    listen = ("0.0.0.0:7744", "198.51.100.7:7745")
    mesh.handle(Received(1, hello(listen=listen)), at(0))
    learnt = {view.address: view.origin for view in mesh.addresses()}
    assert learnt == {"192.0.2.9:7744": "hello", "198.51.100.7:7745": "hello"}


def test_an_inbound_session_past_the_inbound_limit_gets_goodbye_0_too_many_peers() -> None:
    """Inbound sessions stop at ``max_peers - outbound_slots``; one that ends frees its place."""
    mesh = engine(Settings(peers=PeerSettings(max_peers=3, outbound_slots=1)))
    for conn in (1, 2):
        open_session(mesh, conn, remote=identity(200 + conn))
        assert closed(mesh.handle(Received(conn, hello()), at(0))) == []

    opened = open_session(mesh, 3, remote=identity(203))
    assert isinstance(sent(opened, 3)[0], m.Hello)  # the goodbye waits for its hello
    actions = mesh.handle(Received(3, hello()), at(0))
    assert sent(actions, 3) == [m.Goodbye(m.GoodbyeCode.NORMAL, FULL)]
    assert closed(actions) == [(3, m.GoodbyeCode.NORMAL)]

    mesh.handle(Lost(3), at(1))
    mesh.handle(Lost(1), at(1))
    open_session(mesh, 4, remote=identity(204), now=1)
    assert closed(mesh.handle(Received(4, hello()), at(1))) == []


@pytest.mark.parametrize("smaller", ["this node", "the peer"])
def test_a_session_being_refused_never_wins_the_duplicate_rule(smaller: str) -> None:
    """A refused session ends anyway: keeping it over a good one would leave none at all."""
    ordered = (ME, PEER) if ME.public_key < PEER.public_key else (PEER, ME)
    me, peer = ordered if smaller == "this node" else ordered[::-1]
    mesh = engine(Settings(peers=PeerSettings(max_peers=2, outbound_slots=1)), who=me)
    open_session(mesh, 1, remote=identity(102))  # takes the one inbound place
    assert closed(open_session(mesh, 2, remote=peer)) == []  # refused after its hello
    dialled = open_session(mesh, 3, remote=peer, initiator=True, address="192.0.2.10:7744")
    assert closed(dialled) == []
    assert closed(mesh.handle(Received(2, hello()), at(0.1))) == [(2, m.GoodbyeCode.NORMAL)]
    assert {v.conn: v.state for v in mesh.peers()}[3] != "closed"
