"""Gossip between nodes (protocol/peer.md §5), on the deterministic in-memory network."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshnode.core import messages as m
from meshnode.core.channel import ChannelError
from meshnode.core.negentropy import INFINITY, Bound, IdListRange, encode_message
from meshnode.core.record import Invalid
from meshnode.core.session import REFUSAL_WAIT, SessionConfig, State
from meshnode.engine.mesh import WANT_REPLY_BUDGET, Mesh
from meshnode.store.base import MAX_CREATED_AHEAD_MS
from tests.helpers import T0, identity, record
from tests.meshnet import Network, PlainChannel


def hand_driven_session(
    net: Network,
    initiator: bool = False,
    channel: PlainChannel | None = None,
    banned_for: int | None = None,
) -> tuple[Mesh, int]:
    """Node 0 with a session to node 1 driven by hand (no bytes from node 1 yet)."""
    net.add(0)
    net.add(1)
    mesh = net.nodes[0]
    peer_id, _ = mesh.open(
        remote=net.nodes[1].node.identity.public_key,
        initiator=initiator,
        channel=channel or PlainChannel(),
        address="x",
        now=0,
        now_ms=net.now_ms,
        banned_for=banned_for,
    )
    return mesh, peer_id


def line(n: int) -> Network:
    net = Network()
    for i in range(n):
        net.add(i)
    for i in range(n - 1):
        net.connect(i, i + 1)
    net.settle()
    return net


def test_a_record_reaches_the_far_end_of_a_line_through_relays() -> None:
    net = line(5)
    record, _ = net.nodes[0].publish("offer/tea", "hot", ttl_ms=None, now_ms=net.now_ms)
    net.settle()
    for mesh in net.nodes:
        assert mesh.node.store.get(record.author, "offer/tea", net.now_ms) == record


def test_a_relayed_record_is_never_sent_back_nor_twice() -> None:
    net = line(3)
    net.nodes[0].publish("a", 1, ttl_ms=None, now_ms=net.now_ms)
    net.settle()
    middle = net.nodes[1]
    towards_start, towards_end = (p.session.stats for p in middle.peers.values())
    assert (towards_start.records_in, towards_start.records_out) == (1, 0)
    assert (towards_end.records_in, towards_end.records_out) == (0, 1)


def test_a_node_that_was_away_catches_up_when_it_returns() -> None:
    net = line(3)
    link = net.links[1]
    net.disconnect(link)
    net.nodes[0].publish("while/away", 1, ttl_ms=None, now_ms=net.now_ms)
    net.nodes[2].publish("meanwhile", 2, ttl_ms=None, now_ms=net.now_ms)
    net.nodes[2].publish("meanwhile", 3, ttl_ms=None, now_ms=net.now_ms + 1)
    net.settle()
    net.connect(1, 2)
    net.settle()
    assert net.keys(0) == net.keys(1) == net.keys(2)
    assert len(net.keys(2)) == 2
    latest = net.nodes[0].node.store.get(
        net.nodes[2].node.identity.public_key, "meanwhile", net.now_ms
    )
    assert latest is not None and latest.value == 3


def test_deletions_spread() -> None:
    net = line(3)
    net.nodes[2].publish("offer/x", "y", ttl_ms=None, now_ms=net.now_ms)
    net.settle()
    net.nodes[2].delete("offer/x", now_ms=net.now_ms + 1)
    net.settle()
    author = net.nodes[2].node.identity.public_key
    kept = net.nodes[0].node.store.get(author, "offer/x", net.now_ms)
    assert kept is not None and kept.is_tombstone


def test_nodes_in_sync_reconcile_in_one_round_trip_of_a_few_bytes() -> None:
    net = Network()
    a, b = net.add(0), net.add(1)
    shared = [record(identity(n % 10), f"k/{n}").raw for n in range(500)]
    a.ingest(shared, net.now_ms)
    b.ingest(shared, net.now_ms)
    net.connect(0, 1)
    net.settle()
    stats = next(iter(a.peers.values())).session.stats
    assert stats.reconcile_messages == 2
    assert stats.reconcile_bytes_in + stats.reconcile_bytes_out <= 40
    assert stats.records_in == stats.records_out == 0


@settings(max_examples=40)
@given(
    st.sets(st.integers(0, 59), max_size=60),
    st.sets(st.integers(0, 59), max_size=60),
    st.integers(0, 3),
)
def test_any_two_nodes_converge_to_the_union(mine: set[int], theirs: set[int], seed: int) -> None:
    pool = POOL
    net = Network(seed=seed)
    a, b = net.add(0), net.add(1)
    a.ingest([pool[i] for i in mine], net.now_ms)
    b.ingest([pool[i] for i in theirs], net.now_ms)
    net.connect(0, 1)
    net.settle()
    union = {(p.author, p.key) for p in (POOL_RECORDS[i] for i in mine | theirs)}
    assert net.keys(0) == net.keys(1) == union
    sent = sum(p.session.stats.records_out for mesh in net.nodes for p in mesh.peers.values())
    assert sent == len(mine ^ theirs)  # cost follows the difference


POOL_RECORDS = [
    record(identity(n % 7), f"pool/{n}", value=n, created_ms=1_790_000_000_000 + n * 997)
    for n in range(60)
]
POOL = [r.raw for r in POOL_RECORDS]


def test_a_peer_sending_an_invalid_record_is_cut_off_and_reported() -> None:
    net = line(2)
    forged = bytearray(record(identity(9), "x").raw)
    forged[-1] ^= 1
    victim = net.nodes[1]
    peer_id = next(iter(victim.peers))
    session = victim.peers[peer_id].session
    out = victim.receive(
        peer_id, PlainChannel().seal(m.encode(m.Records((bytes(forged),)))), net.now, net.now_ms
    )
    assert session.state is State.CLOSED
    assert out.misbehaved == [
        (
            net.nodes[0].node.identity.public_key,
            m.GoodbyeCode.INVALID_RECORD,
            "invalid record: bad-signature",
        )
    ]
    assert [closed.code for _, closed in out.closed] == [m.GoodbyeCode.INVALID_RECORD]
    assert b"\x07\x02" in victim.take_data(peer_id)  # goodbye, code 2


def test_garbage_from_a_peer_ends_the_session_as_a_protocol_violation_without_a_ban() -> None:
    net = line(2)
    victim = net.nodes[1]
    peer_id = next(iter(victim.peers))
    out = victim.receive(peer_id, b"\xc1\xc1\xc1", net.now, net.now_ms)
    assert [closed.code for _, closed in out.closed] == [m.GoodbyeCode.PROTOCOL]
    assert out.misbehaved == []  # an implementation under development is not locked out


def test_the_first_message_must_be_hello() -> None:
    net = Network()
    mesh, peer_id = hand_driven_session(net)
    out = mesh.receive(peer_id, m.encode(m.Ping(1)), 0, net.now_ms)
    assert [closed.code for _, closed in out.closed] == [m.GoodbyeCode.PROTOCOL]


def test_both_ends_keep_the_same_one_of_two_duplicate_connections() -> None:
    net = Network()
    net.add(0)
    net.add(1)
    first = net.connect(0, 1)
    second = net.connect(1, 0)
    kept = []
    for link in (first, second):
        a_open = not net.nodes[link.a].peers[link.a_peer].session.closed
        b_open = not net.nodes[link.b].peers[link.b_peer].session.closed
        assert a_open == b_open
        kept.append(a_open)
    assert sorted(kept) == [False, True]
    smaller = min(range(2), key=lambda i: net.nodes[i].node.identity.public_key)
    survivor = first if kept[0] else second
    assert survivor.a == smaller  # the survivor was dialed by the smaller key


def test_quiet_sessions_ping_and_silent_ones_close() -> None:
    net = line(2)
    net.advance(15)
    assert all(mesh.peers[next(iter(mesh.peers))].session.outbox_size for mesh in net.nodes)
    net.settle()  # pings and pongs flow: both stay open
    outs = net.advance(44)
    assert not any(o.closed for o in outs)
    net.links.clear()  # the wire goes dead: nothing is delivered any more
    outs = net.advance(46)
    assert {closed.code for o in outs for _, closed in o.closed} == {m.GoodbyeCode.IDLE}


def test_the_dialer_reconciles_periodically() -> None:
    net = line(2)
    dialer = next(iter(net.nodes[0].peers.values())).session
    assert dialer.stats.reconcile_rounds == 1
    for _ in range(4):
        net.advance(15)
        net.settle()
    assert dialer.stats.reconcile_rounds == 2


def test_a_slow_peer_loses_live_pushes_but_not_records() -> None:
    net = Network()
    net.add(0)
    net.add(1)
    link = net.connect(0, 1)
    net.settle()
    publisher = net.nodes[0]
    session = publisher.peers[link.a_peer].session
    object.__setattr__(session, "config", SessionConfig(max_outbox=2000))
    net.links.clear()  # the peer stops reading for a while
    for n in range(40):
        publisher.publish(f"burst/{n}", "x" * 100, ttl_ms=None, now_ms=net.now_ms + n)
    assert session.stats.pushes_dropped > 0
    net.links.append(link)
    net.settle()
    net.advance(1)  # the timer notices the drained outbox and reconciles
    net.settle()
    assert len(net.keys(1)) == 40


def test_records_from_outside_any_session_are_relayed_too() -> None:
    net = line(2)
    outside = record(identity(42), "sneakernet/bundle")
    out = net.nodes[0].ingest([outside.raw], net.now_ms)
    assert out.stored == [outside]
    net.settle()
    assert net.nodes[1].node.store.get(outside.author, outside.key, net.now_ms) == outside


@pytest.mark.parametrize("version", [0, -3])
def test_a_peer_without_a_common_version_is_told_so(version: int) -> None:
    net = Network()
    mesh, peer_id = hand_driven_session(net)
    out = mesh.receive(peer_id, m.encode(m.Hello(version, (), (), "old")), 0, net.now_ms)
    assert [closed.code for _, closed in out.closed] == [m.GoodbyeCode.VERSION]


# An id list of nothing over the whole range: the question that makes a responder list
# every id it has, as large a reply as a frame allows.
EVERYTHING_PLEASE = encode_message([IdListRange(Bound(INFINITY), ())])


def _hello_then(mesh: Mesh, peer_id: int, *messages: m.Message, now: float = 0) -> list:  # type: ignore[type-arg]
    hello = m.encode(m.Hello(1, (), (), "peer"))
    mesh.receive(peer_id, hello, now, T0)
    mesh.take_data(peer_id)
    return mesh.receive(peer_id, b"".join(m.encode(x) for x in messages), now, T0).closed


def test_a_reconcile_message_over_the_frame_limit_is_a_violation() -> None:
    mesh, peer_id = hand_driven_session(Network())
    closed = _hello_then(mesh, peer_id, m.Reconcile(m.Role.OPEN, b"\x61" + bytes(60_001)))
    assert [c.code for _, c in closed] == [m.GoodbyeCode.PROTOCOL]


def test_reconcile_messages_that_do_not_wait_for_replies_are_a_violation() -> None:
    mesh, peer_id = hand_driven_session(Network())
    closed = _hello_then(mesh, peer_id, *[m.Reconcile(m.Role.OPEN, EVERYTHING_PLEASE)] * 2)
    assert [c.code for _, c in closed] == [m.GoodbyeCode.PROTOCOL]


def test_a_want_for_everything_is_answered_within_a_budget() -> None:
    net = Network()
    mesh, peer_id = hand_driven_session(net)
    big = [record(identity(n % 50), f"big/{n}", value="x" * 16_000) for n in range(400)]
    mesh.ingest([r.raw for r in big], T0)
    _hello_then(mesh, peer_id, m.Want(tuple(r.id for r in big)))
    sent = mesh.take_data(peer_id)
    assert 0 < len(sent) <= WANT_REPLY_BUDGET + 64 * 1024


def test_a_peer_opening_rounds_back_to_back_gets_the_same_snapshot() -> None:
    net = Network()
    mesh, peer_id = hand_driven_session(net)
    builds = 0
    real_items = mesh.node.store.items

    def counting(now_ms: int) -> list[tuple[int, bytes]]:
        nonlocal builds
        builds += 1
        return real_items(now_ms)

    mesh.node.store.items = counting  # type: ignore[method-assign]
    opening = m.Reconcile(m.Role.OPEN, EVERYTHING_PLEASE)
    _hello_then(mesh, peer_id)
    for n in range(5):
        mesh.ingest([record(identity(7), f"new/{n}").raw], T0)  # every change would force a rebuild
        mesh.receive(peer_id, m.encode(opening), 0.1 * n, T0)
    assert builds == 1
    mesh.receive(peer_id, m.encode(opening), 5.0, T0)
    assert builds == 2


def test_a_round_the_peer_stops_answering_is_abandoned() -> None:
    mesh, peer_id = hand_driven_session(Network(), initiator=True)
    mesh.receive(peer_id, m.encode(m.Hello(1, (), (), "mute")), 0, T0)
    session = mesh.peers[peer_id].session
    assert session.stats.reconcile_rounds == 1
    for t in range(10, 130, 10):  # it pings, so it stays, but never answers a round
        mesh.receive(peer_id, m.encode(m.Ping(t)), t, T0)
        mesh.handle_timers(t, T0)
    assert not session.closed
    assert session.stats.reconcile_rounds == 3  # at 0, then 60 and 120 once each was abandoned


def test_a_peer_asking_too_fast_is_told_it_overloads_us() -> None:
    mesh, peer_id = hand_driven_session(Network())
    _hello_then(mesh, peer_id)
    closed: list = []  # type: ignore[type-arg]
    for n in range(200):  # one question per read, as the rules say, but 1,000 a second
        closed = mesh.receive(
            peer_id, m.encode(m.Reconcile(m.Role.OPEN, EVERYTHING_PLEASE)), n / 1000, T0
        ).closed
        if closed:
            break
    assert [c.code for _, c in closed] == [m.GoodbyeCode.OVERLOADED]
    assert 50 <= n < 60


def test_a_steady_questioner_within_the_rate_is_answered_forever() -> None:
    mesh, peer_id = hand_driven_session(Network())
    _hello_then(mesh, peer_id)
    for n in range(500):  # 10 a second for 50 seconds
        out = mesh.receive(
            peer_id, m.encode(m.Reconcile(m.Role.OPEN, EVERYTHING_PLEASE)), n / 10, T0
        )
        assert not out.closed


def _sent(mesh: Mesh, peer_id: int) -> list[m.Message]:
    return m.MessageDecoder().feed(mesh.take_data(peer_id))


@pytest.mark.parametrize(
    ("features", "retry_after"), [((), None), ((m.RETRY_AFTER,), 600)], ids=["0.1.0", "aware"]
)
def test_a_banned_node_gets_our_hello_then_goodbye_7_worded_for_its_features(
    features: tuple[str, ...], retry_after: int | None
) -> None:
    net = Network()
    mesh, peer_id = hand_driven_session(net, banned_for=600)
    [hello] = _sent(mesh, peer_id)
    assert isinstance(hello, m.Hello) and m.RETRY_AFTER in hello.features
    their_hello = m.encode(m.Hello(1, features, (), "them"))
    out = mesh.receive(peer_id, their_hello, 1, net.now_ms)
    assert _sent(mesh, peer_id) == [m.Goodbye(m.GoodbyeCode.BANNED, "banned", retry_after)]
    assert [closed.code for _, closed in out.closed] == [m.GoodbyeCode.BANNED]
    assert out.stored == [] and out.misbehaved == []


def test_a_banned_node_that_sends_no_hello_gets_goodbye_7_after_a_while() -> None:
    net = Network()
    mesh, peer_id = hand_driven_session(net, banned_for=600)
    mesh.take_data(peer_id)
    assert mesh.next_timer() == REFUSAL_WAIT
    out = mesh.handle_timers(REFUSAL_WAIT, net.now_ms)
    assert _sent(mesh, peer_id) == [m.Goodbye(m.GoodbyeCode.BANNED, "banned")]
    assert [closed.code for _, closed in out.closed] == [m.GoodbyeCode.BANNED]


def test_a_frame_that_does_not_decrypt_closes_without_a_goodbye() -> None:
    class Broken(PlainChannel):
        def open(self, data: bytes) -> bytes:
            raise ChannelError("tampered")

    net = Network()
    mesh, peer_id = hand_driven_session(net, channel=Broken())
    mesh.take_data(peer_id)
    out = mesh.receive(peer_id, b"garbage", 1, net.now_ms)
    assert mesh.take_data(peer_id) == b""
    assert [(c.code, c.reason) for _, c in out.closed] == [
        (m.GoodbyeCode.PROTOCOL, m.Why.UNDECRYPTABLE)
    ]
    assert out.misbehaved == []


_fields = st.one_of(
    st.integers(-3, 2**64 - 1),
    st.binary(max_size=40),
    st.text(max_size=8),
    st.none(),
    st.lists(st.one_of(st.integers(-(2**63), 2**64 - 1), st.binary(max_size=33)), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(0, 9), max_size=2),
)
_messages = st.tuples(st.integers(-2, 9), st.lists(_fields, max_size=4)).map(
    lambda t: msgpack.packb([t[0], *t[1]], use_bin_type=True)
)


@given(st.lists(st.one_of(st.binary(max_size=40), _messages), max_size=6))
@settings(max_examples=200, deadline=None)
def test_every_goodbye_reason_is_from_the_fixed_set(chunks: list[bytes]) -> None:
    net = Network()
    mesh, peer_id = hand_driven_session(net)
    mesh.take_data(peer_id)
    hello = m.encode(m.Hello(1, (), (), "fuzz"))
    for chunk in [hello, *chunks]:
        out = mesh.receive(peer_id, chunk, 1, net.now_ms)
        for _, closed in out.closed:
            assert closed.reason in FIXED_REASONS


FIXED_REASONS = set(m.Why) | {m.invalid_record_reason(r) for r in Invalid}


def test_records_a_session_delivers_are_credited_to_the_origin_the_runtime_named() -> None:
    net = Network()
    mesh, peer_id = hand_driven_session(net)
    mesh.drop(peer_id)
    origin = b"o" * 32
    peer_id, _ = mesh.open(
        remote=net.nodes[1].node.identity.public_key,
        initiator=False,
        channel=PlainChannel(),
        address="x",
        now=0,
        now_ms=net.now_ms,
        origin=origin,
    )
    author = identity(7)
    hello = m.encode(m.Hello(1, (), (), "peer"))
    mesh.receive(peer_id, hello + m.encode(m.Records((record(author).raw,))), 0, net.now_ms)
    assert mesh.node.store.standing(author.public_key).sources == (origin,)


def test_records_created_too_far_ahead_are_counted_for_the_runtime_to_say_so() -> None:
    net = Network()
    mesh, peer_id = hand_driven_session(net)
    ahead = record(identity(7), created_ms=net.now_ms + MAX_CREATED_AHEAD_MS + 1)
    hello = m.encode(m.Hello(1, (), (), "peer"))
    out = mesh.receive(peer_id, hello + m.encode(m.Records((ahead.raw,))), 0, net.now_ms)
    assert out.ahead_of_clock == 1 and out.stored == [] and out.misbehaved == []
