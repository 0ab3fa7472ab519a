"""Peer exchange (protocol/peer.md §5.9): what a node tells of others, to whom, and what it takes.

Each test drives one engine as the runtime would and reads what it sends. The
rules: only addresses this node dialled and completed a handshake on are shared,
never a peer's own, never link-local ones, loopback ones only over loopback;
what a peer shares is a hint under a quota, never trusted, and a peer that
floods is cut off; a peer that did not list ``peer-exchange`` neither gets nor
gives any.
"""

from __future__ import annotations

import pytest

from meshnode.core import messages as m
from meshnode.core.negentropy import SortedItems
from meshnode.core.session import PeerSession, SessionClosed
from meshnode.engine import exchange
from meshnode.engine.actions import Action, Dial, Send
from meshnode.engine.events import DialFailed, Hint, Received, Tick
from meshnode.engine.mesh import Mesh
from meshnode.engine.settings import PeerSettings, Settings
from tests.helpers import identity
from tests.meshnet import PlainChannel, at, closed, engine, hello, open_session, sent

DIALLED = "192.0.2.21:7744"  # a handshake completed here: shareable
FAILED = "192.0.2.22:7744"  # heard of by mDNS, never reached: not shareable
DIALLED_NODE = identity(121)
EXCHANGING = Settings(peers=PeerSettings(dial_sources=frozenset({"mdns", "exchange"})))


def exchanging_hello() -> bytes:
    return hello(features=[m.RETRY_AFTER, m.PEER_EXCHANGE])


def node_that_dialled_one_peer() -> Mesh:
    """An engine that reached DIALLED, failed to reach FAILED, and has a peer dialling in."""
    mesh = engine(EXCHANGING)
    for address in (DIALLED, FAILED):
        mesh.handle(Hint(address, "mdns"), at(0))
    assert mesh.handle(Tick(), at(0)) == [Dial(DIALLED), Dial(FAILED)]
    mesh.handle(DialFailed(FAILED), at(0.1))
    open_session(mesh, 1, remote=DIALLED_NODE, initiator=True, address=DIALLED)
    mesh.handle(Received(1, hello()), at(0.1))
    open_session(mesh, 2, remote=identity(122), address="192.0.2.23:40000")  # inbound
    mesh.handle(Received(2, hello(listen=["0.0.0.0:7744"])), at(0.1))
    return mesh


def peers_sent(actions: list[Action], conn: int) -> list[m.Peers]:
    return [x for x in sent(actions, conn) if isinstance(x, m.Peers)]


def test_a_new_peer_is_told_only_of_addresses_this_node_dialled_and_shook_hands_on() -> None:
    mesh = node_that_dialled_one_peer()
    open_session(mesh, 3, remote=identity(123), address="192.0.2.24:40000")
    actions = mesh.handle(Received(3, exchanging_hello()), at(1))
    assert peers_sent(actions, 3) == [m.Peers((DIALLED,))]


def test_a_peer_is_not_told_of_its_own_address_and_an_empty_sample_is_not_sent() -> None:
    mesh = node_that_dialled_one_peer()
    open_session(mesh, 3, remote=DIALLED_NODE, address="192.0.2.21:40000")
    actions = mesh.handle(Received(3, exchanging_hello()), at(1))
    assert peers_sent(actions, 3) == []


def test_a_peer_that_did_not_list_the_feature_gets_none_and_is_not_heard() -> None:
    """A node of 0.5.0 or before: it neither gets a peers message nor is one of its read."""
    mesh = node_that_dialled_one_peer()
    open_session(mesh, 3, remote=identity(123), address="192.0.2.24:40000")
    actions = mesh.handle(Received(3, hello()), at(1))
    assert peers_sent(actions, 3) == []
    told = m.encode(m.Peers(("198.51.100.9:7744",)))
    assert closed(mesh.handle(Received(3, told), at(2))) == []
    assert "198.51.100.9:7744" not in {v.address for v in mesh.addresses()}


def test_a_node_with_exchange_off_does_not_list_the_feature() -> None:
    mesh = engine(Settings(peers=PeerSettings(exchange=False)))
    actions = open_session(mesh, 1)
    (first,) = sent(actions, 1)
    assert isinstance(first, m.Hello) and m.PEER_EXCHANGE not in first.features


@pytest.mark.parametrize(
    ("address", "via", "taken"),
    [
        ("198.51.100.9:7744", "192.0.2.24:40000", True),
        ("[2001:db8::9]:7744", "192.0.2.24:40000", True),
        ("[fe80::9]:7744", "[fe80::24]:40000", False),  # its scope is the sender's link
        ("169.254.0.9:7744", "192.0.2.24:40000", False),
        ("127.0.0.1:7745", "192.0.2.24:40000", False),  # the sender's host, not ours
        ("127.0.0.1:7745", "127.0.0.1:40000", True),  # two nodes of one host
        ("0.0.0.0:7744", "192.0.2.24:40000", False),
        ("224.0.0.251:5353", "192.0.2.24:40000", False),
        ("255.255.255.255:7744", "192.0.2.24:40000", False),  # broadcast, in 240.0.0.0/4
        ("0.1.2.3:7744", "192.0.2.24:40000", False),  # "this network"
        ("[::ffff:127.0.0.1]:7745", "192.0.2.24:40000", False),  # loopback, spelt as IPv6
        ("[fec0::9]:7744", "192.0.2.24:40000", False),  # outside IPv6's unicast blocks
        ("[64:ff9b::c633:6409]:7744", "192.0.2.24:40000", False),
        ("[fd00::9]:7744", "192.0.2.24:40000", True),  # unique local
        ("[::1]:7745", "[::1]:40000", True),  # two nodes of one host
        ("node.local:7744", "192.0.2.24:40000", False),  # a name would be resolved for a stranger
        ("198.51.100.9", "192.0.2.24:40000", False),  # no port
    ],
)
def test_what_a_peer_shares_is_taken_as_an_exchange_hint_only_where_it_means_something(
    address: str, via: str, taken: bool
) -> None:
    mesh = engine(EXCHANGING)
    open_session(mesh, 1, address=via)
    mesh.handle(Received(1, exchanging_hello()), at(0))
    mesh.handle(Received(1, m.encode(m.Peers((address,)))), at(1))
    learnt = {v.address: v.origin for v in mesh.addresses()}
    assert (learnt.get(address) == "exchange") == taken


def test_an_address_spelt_another_way_is_taken_in_its_one_canonical_form() -> None:
    via = "192.0.2.24:40000"
    assert exchange.taken_as("[::ffff:198.51.100.9]:7744", via=via) == "198.51.100.9:7744"
    assert exchange.taken_as("[2001:0DB8:0:0::9]:7744", via=via) == "[2001:db8::9]:7744"
    assert exchange.taken_as("[2001:db8::9%eth0]:7744", via=via) is None  # a zone of its own


def test_exchanged_addresses_are_dialled_when_exchange_is_a_dial_source() -> None:
    mesh = engine(EXCHANGING)
    open_session(mesh, 1)
    mesh.handle(Received(1, exchanging_hello()), at(0))
    mesh.handle(Received(1, m.encode(m.Peers(("198.51.100.9:7744",)))), at(1))
    assert Dial("198.51.100.9:7744") in mesh.handle(Tick(), at(1))


def test_a_peer_that_floods_peers_messages_is_cut_off_with_goodbye_6() -> None:
    mesh = engine(EXCHANGING)
    open_session(mesh, 1)
    mesh.handle(Received(1, exchanging_hello()), at(0))
    flood = b"".join(m.encode(m.Peers((f"198.51.100.{n}:7744",))) for n in range(5))
    actions = mesh.handle(Received(1, flood), at(1))
    assert closed(actions) == [(1, m.GoodbyeCode.OVERLOADED)]
    assert sent(actions, 1)[-1] == m.Goodbye(m.GoodbyeCode.OVERLOADED, m.Why.TOO_MANY_EXCHANGES)


def test_peers_messages_at_the_rate_meshnode_sends_them_are_welcome() -> None:
    mesh = engine(EXCHANGING)
    open_session(mesh, 1)
    mesh.handle(Received(1, exchanging_hello()), at(0))
    for n in range(20):
        told = m.encode(m.Peers((f"198.51.100.{n + 1}:7744",)))
        assert closed(mesh.handle(Received(1, told), at(1 + n * 10.0))) == []


def test_a_malformed_peers_message_is_goodbye_1() -> None:
    mesh = engine(EXCHANGING)
    open_session(mesh, 1)
    mesh.handle(Received(1, exchanging_hello()), at(0))
    too_many = m.encode(m.Peers(tuple(f"198.51.100.{n}:7744" for n in range(33))))
    assert closed(mesh.handle(Received(1, too_many), at(1))) == [(1, m.GoodbyeCode.PROTOCOL)]


def test_every_shuffle_interval_one_random_peer_is_told_of_others() -> None:
    """About one peers message per ``SHUFFLE_INTERVAL`` (±20 %), each to a random peer."""
    mesh = node_that_dialled_one_peer()
    for conn in (3, 4):
        open_session(mesh, conn, remote=identity(120 + conn), address=f"192.0.2.{conn}:40000")
        mesh.handle(Received(conn, exchanging_hello()), at(1))
    told: list[int] = []
    now, end = 1.0, 1.0 + 20 * exchange.SHUFFLE_INTERVAL
    while now < end:
        now = max(mesh.next_timer(), now)
        actions = mesh.handle(Tick(), at(now))
        told += [conn for conn in (3, 4) if peers_sent(actions, conn)]
        for conn in (1, 2, 3, 4):  # every peer keeps talking
            mesh.handle(Received(conn, m.encode(m.Ping(1))), at(now))
        now += 0.001
    most = 20 / (1 - exchange.JITTER)
    least = 20 / (1 + exchange.JITTER)
    assert least - 1 <= len(told) <= most + 1
    assert set(told) == {3, 4}


def reach(mesh: Mesh, conn: int, address: str, now: float) -> list[Action]:
    """This node dials ``address``, a hint heard just now, and completes a handshake there."""
    mesh.handle(Hint(address, "mdns"), at(now))
    actions = mesh.handle(Tick(), at(now))
    assert Dial(address) in actions
    actions += open_session(
        mesh, conn, remote=identity(conn), initiator=True, address=address, now=now
    )
    return actions + mesh.handle(Received(conn, hello()), at(now))


def test_a_node_newly_reached_is_told_of_to_every_peer_within_a_second() -> None:
    """News travels at once, so a mesh spans two subnets within seconds, not shuffles."""
    mesh = engine(EXCHANGING)
    for conn in (1, 2):
        open_session(mesh, conn, remote=identity(150 + conn), address=f"192.0.2.{conn}:40000")
        mesh.handle(Received(conn, exchanging_hello()), at(0))
    reach(mesh, 3, "198.51.100.3:7744", now=5.0)
    told: dict[int, list[m.Peers]] = {1: [], 2: []}
    now = 5.0
    while now <= 5.0 + exchange.NEWS_DELAY:
        now = max(mesh.next_timer(), now)
        actions = mesh.handle(Tick(), at(now))
        for conn in told:
            told[conn] += peers_sent(actions, conn)
        now += 0.01
    assert told == {1: [m.Peers(("198.51.100.3:7744",))], 2: [m.Peers(("198.51.100.3:7744",))]}


def test_this_node_never_sends_peers_faster_than_a_peer_takes_them() -> None:
    """However much news there is, what this node sends a peer, fed to a real receiving
    session as it was sent, or in bunches of 10 s (a slow link), is never cut off."""
    room = PeerSettings(dial_sources=frozenset({"mdns"}), target_degree=40, outbound_slots=40)
    mesh = engine(Settings(peers=room))
    wire: list[tuple[float, bytes]] = []  # what conn 1 was sent, and when

    def keep(actions: list[Action], now: float) -> None:
        wire.extend((now, x.data) for x in actions if isinstance(x, Send) and x.conn == 1)

    keep(open_session(mesh, 1, address="192.0.2.1:40000"), 0.0)
    keep(mesh.handle(Received(1, exchanging_hello()), at(0)), 0.0)
    now = 0.0
    for n in range(30):  # a node reached every second, for 30 s
        now = float(n)
        keep(reach(mesh, 10 + n, f"198.51.100.{n + 1}:7744", now), now)
        for conn in (1, *range(10, 11 + n)):  # every peer keeps talking
            keep(mesh.handle(Received(conn, m.encode(m.Ping(1))), at(now)), now)
        while (now := max(mesh.next_timer(), now)) < n + 1:
            keep(mesh.handle(Tick(), at(now)), now)
            now += 0.001
    told = sum(isinstance(x, m.Peers) for _, data in wire for x in sent([Send(1, data)], 1))
    assert told >= 3  # news is told, paced
    for bunch in (0.0, 10.0):
        receiver = receiving_session()
        for when, data in wire:
            delivered = when if not bunch else (when // bunch + 1) * bunch
            events = receiver.receive_data(data, delivered)
            assert not [e for e in events if isinstance(e, SessionClosed)], (bunch, when)


def receiving_session() -> PeerSession:
    """A peer with peer-exchange, reading over a plain channel what this node sends it."""
    return PeerSession(
        initiator=False,
        channel=PlainChannel(),
        items=lambda: SortedItems([]),
        hello=m.Hello(m.PROTOCOL_VERSION, (m.RETRY_AFTER, m.PEER_EXCHANGE), (), "peer"),
        now=0.0,
        nonce=lambda: 1,
    )
