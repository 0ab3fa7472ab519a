"""Gossip between nodes (protocol/peer.md §5): on the simulator, and one engine by hand."""

from __future__ import annotations

import itertools

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec import structs

from meshnode.core import messages as m
from meshnode.core.channel import ChannelError
from meshnode.core.negentropy import INFINITY, Bound, IdListRange, encode_message
from meshnode.core.record import Invalid
from meshnode.core.session import REFUSAL_WAIT, SessionConfig
from meshnode.engine.actions import Action, AheadOfClock, Banned, Close, Dial, Ingested, Send
from meshnode.engine.events import (
    Congested,
    Delete,
    Drained,
    Hint,
    Ingest,
    Lost,
    Received,
    Tick,
)
from meshnode.engine.mesh import WANT_REPLY_BUDGET, Mesh, origin_of
from meshnode.engine.settings import PeerSettings, Settings
from meshnode.store.base import MAX_CREATED_AHEAD_MS
from tests.helpers import T0, identity, record
from tests.meshnet import (
    PEER,
    PlainChannel,
    at,
    closed,
    closes,
    encode,
    engine,
    hello,
    keys,
    line,
    network,
    open_session,
    publish,
    sent,
)

# -- relay and catch-up, on the simulator ------------------------------------------------


def test_a_record_reaches_the_far_end_of_a_line_through_relays() -> None:
    net = line(5)
    tea = publish(net, 0, "offer/tea", "hot")
    net.settle()
    for node in net.nodes:
        assert node.store.get(tea.author, "offer/tea", net.instant().wall_ms) == tea


def test_a_relayed_record_is_never_sent_back_nor_twice() -> None:
    net = line(3)
    publish(net, 0, "a", 1)
    net.settle()
    middle = net.nodes[1].mesh
    assert middle is not None
    by_direction = {view.initiator: view.stats for view in middle.peers()}
    towards_start, towards_end = by_direction[False], by_direction[True]
    assert (towards_start.records_in, towards_start.records_out) == (1, 0)
    assert (towards_end.records_in, towards_end.records_out) == (0, 1)


def test_a_node_that_was_away_catches_up_when_it_returns() -> None:
    net = line(3)
    net.disconnect(1, 2)
    publish(net, 0, "while/away", 1)
    publish(net, 2, "meanwhile", 2)
    net.run_until(net.now + 0.001)
    publish(net, 2, "meanwhile", 3)
    net.settle()
    net.connect(1, 2)
    net.settle()
    assert keys(net, 0) == keys(net, 1) == keys(net, 2)
    assert len(keys(net, 2)) == 2
    author = net.nodes[2].identity.public_key
    latest = net.nodes[0].store.get(author, "meanwhile", net.instant().wall_ms)
    assert latest is not None and latest.value == 3


def test_deletions_spread() -> None:
    net = line(3)
    publish(net, 2, "offer/x", "y")
    net.settle()
    net.run_until(net.now + 0.001)
    net.handle(2, Delete("offer/x"))
    net.settle()
    author = net.nodes[2].identity.public_key
    kept = net.nodes[0].store.get(author, "offer/x", net.instant().wall_ms)
    assert kept is not None and kept.is_tombstone


def test_records_from_outside_any_session_are_relayed_too() -> None:
    net = line(2)
    outside = record(identity(42), "sneakernet/bundle")
    [ingested] = [x for x in net.handle(0, Ingest([outside.raw])) if isinstance(x, Ingested)]
    assert ingested.conn is None and ingested.stored == [outside]
    net.settle()
    assert net.nodes[1].store.get(outside.author, outside.key, net.instant().wall_ms) == outside


# -- reconciliation ----------------------------------------------------------------------


def test_nodes_in_sync_reconcile_in_one_round_trip_of_a_few_bytes() -> None:
    net = network(2)
    shared = [record(identity(n % 10), f"k/{n}").raw for n in range(500)]
    net.handle(0, Ingest(shared))
    net.handle(1, Ingest(shared))
    net.connect(0, 1)
    net.settle()
    mesh = net.nodes[0].mesh
    assert mesh is not None
    [view] = mesh.peers()
    stats = view.stats
    assert stats.reconcile_messages == 2
    assert stats.reconcile_bytes_in + stats.reconcile_bytes_out <= 40
    assert stats.records_in == stats.records_out == 0


POOL_RECORDS = [
    record(identity(n % 7), f"pool/{n}", value=n, created_ms=T0 + n * 997) for n in range(60)
]
POOL = [r.raw for r in POOL_RECORDS]


@settings(max_examples=40, deadline=None)
@given(
    st.sets(st.integers(0, 59), max_size=60),
    st.sets(st.integers(0, 59), max_size=60),
    st.integers(0, 3),
)
def test_any_two_nodes_converge_to_the_union(mine: set[int], theirs: set[int], seed: int) -> None:
    net = network(2, seed=seed)
    net.handle(0, Ingest([POOL[i] for i in sorted(mine)]))
    net.handle(1, Ingest([POOL[i] for i in sorted(theirs)]))
    net.connect(0, 1)
    net.settle()
    union = {(r.author, r.key) for r in (POOL_RECORDS[i] for i in mine | theirs)}
    assert keys(net, 0) == keys(net, 1) == union
    views = [view for node in net.nodes if node.mesh for view in node.mesh.peers()]
    assert sum(view.stats.records_out for view in views) == len(mine ^ theirs)  # cost: the diff


def test_the_dialer_reconciles_periodically() -> None:
    net = line(2)
    dialer = net.nodes[0].mesh
    assert dialer is not None
    assert dialer.peers()[0].stats.reconcile_rounds == 1
    net.run_until(60)
    assert dialer.peers()[0].stats.reconcile_rounds == 2


def test_a_slow_peer_loses_live_pushes_but_not_records() -> None:
    net = line(2, settings=Settings(session=SessionConfig(max_outbox=2000)))
    publisher = net.nodes[0].mesh
    assert publisher is not None
    conn = publisher.peers()[0].conn
    net.handle(0, Congested(conn))  # the peer stops reading for a while
    for n in range(40):
        publish(net, 0, f"burst/{n}", "x" * 100)
    assert publisher.peers()[0].stats.pushes_dropped > 0
    net.handle(0, Drained(conn))
    net.settle()
    net.run_until(net.now + 1)  # the timer notices the drained outbox and reconciles
    net.settle()
    assert len(keys(net, 1)) == 40


# -- session lifetime ----------------------------------------------------------------------


def test_both_ends_keep_the_same_one_of_two_duplicate_connections() -> None:
    """Both keep the connection dialled by the node with the smaller public key."""
    net = network(2)
    ended = closes(net)
    net.connect(0, 1)
    net.connect(1, 0)
    net.settle()
    smaller = min(range(2), key=lambda i: net.nodes[i].identity.public_key)
    for node in net.nodes:
        assert node.mesh is not None
        [kept] = node.mesh.peers()
        assert kept.initiator == (node.index == smaller)
    assert {why.code for _, why in ended} == {m.GoodbyeCode.DUPLICATE}
    assert {index for index, _ in ended} == {0, 1}


def test_quiet_sessions_ping_and_silent_ones_close() -> None:
    net = line(2)
    ended = closes(net)
    net.run_until(59)  # pings and pongs flow: both stay open
    assert ended == []
    net.partition({1})  # the wire goes dead: nothing is delivered any more
    net.run_until(59 + 11)
    assert sorted((index, why.code) for index, why in ended) == [
        (0, m.GoodbyeCode.IDLE),
        (1, m.GoodbyeCode.IDLE),
    ]


def pushing_to_a_peer(
    mesh: Mesh, until: float, *, answer: bool, features: tuple[str, ...] = (m.PEER_EXCHANGE,)
) -> tuple[list[float], list[float]]:
    """A record pushed to the peer every 0.5 s, as in a bulk sync, while the peer says nothing
    but, if ``answer``, a pong to each ping; when the node pinged, and when it closed."""
    mesh.handle(Received(1, hello(features=features)), at(0))
    pings: list[float] = []
    closes: list[float] = []
    for step in range(1, int(until * 2) + 1):
        now = step / 2
        actions = mesh.handle(Ingest([record(identity(7), f"bulk/{step}").raw]), at(now))
        actions += mesh.handle(Tick(), at(now))
        for message in sent(actions):
            if isinstance(message, m.Ping):
                pings.append(now)
                if answer:
                    mesh.handle(Received(1, m.encode(m.Pong(message.nonce))), at(now + 0.01))
        closes += [now for _, code in closed(actions) if code == m.GoodbyeCode.IDLE]
    return pings, closes


def test_a_peer_that_only_reads_is_asked_after_5_s_and_closed_after_10_s_of_silence() -> None:
    pings, closes = pushing_to_a_peer(session(), until=12, answer=False)
    assert pings == [5.0]  # sending all along, the node asks instead of waiting
    assert closes == [10.0]


def test_a_peer_without_peer_exchange_is_given_the_20_s_of_before_0_6() -> None:
    pings, closes = pushing_to_a_peer(session(), until=25, answer=False, features=())
    assert pings == [5.0, 10.0, 15.0]
    assert closes == [20.0]


def test_a_quiet_peer_of_0_5_that_answers_its_pings_stays_however_long_it_only_reads() -> None:
    pings, closes = pushing_to_a_peer(session(), until=60, answer=True, features=())
    assert closes == []
    gaps = [later - earlier for earlier, later in itertools.pairwise(pings)]
    assert pings[0] == 5.0 and len(gaps) == 10 and all(5.0 <= gap <= 5.5 for gap in gaps)


def test_a_pushed_record_counts_as_sending_at_the_time_it_was_pushed() -> None:
    mesh = session()
    mesh.handle(Received(1, hello(features=(m.PEER_EXCHANGE,))), at(0))
    mesh.handle(Ingest([record(identity(7), "ours").raw]), at(4.9))  # pushed to the peer
    theirs = m.Records((record(identity(9), "theirs").raw,))
    mesh.handle(Received(1, m.encode(theirs)), at(4.95))  # heard; nothing is sent back
    assert not any(isinstance(x, m.Ping) for x in sent(mesh.handle(Tick(), at(5.0))))
    assert any(isinstance(x, m.Ping) for x in sent(mesh.handle(Tick(), at(9.9))))


def test_silence_while_the_node_reads_nothing_of_a_congested_peer_counts_afresh_after() -> None:
    mesh = session()
    mesh.handle(Received(1, hello(features=(m.PEER_EXCHANGE,))), at(0))
    mesh.handle(Congested(1), at(1))  # the driver stops reading: the peer reads too slowly
    for t in range(2, 31):
        assert closed(mesh.handle(Tick(), at(t))) == []
    mesh.handle(Drained(1), at(30))
    assert closed(mesh.handle(Tick(), at(39.9))) == []
    assert closed(mesh.handle(Tick(), at(40))) == [(1, m.GoodbyeCode.IDLE)]


# -- one engine, a peer's bytes written by hand -----------------------------------------------

# An id list of nothing over the whole range: the question that makes a responder list
# every id it has, as large a reply as a frame allows.
EVERYTHING_PLEASE = encode_message([IdListRange(Bound(INFINITY), ())])
OPENING = m.Reconcile(m.Role.OPEN, EVERYTHING_PLEASE)


def session(*, initiator: bool = False, channel: PlainChannel | None = None) -> Mesh:
    """An engine with session 1 open to ``PEER``, whose bytes the test writes."""
    mesh = engine()
    open_session(mesh, initiator=initiator, channel=channel)
    return mesh


def hello_then(mesh: Mesh, *messages: m.Message, now: float = 0) -> list[Action]:
    """The peer's hello, then ``messages`` in one chunk; what the chunk made the engine do."""
    mesh.handle(Received(1, hello()), at(now))
    return mesh.handle(Received(1, encode(*messages)), at(now))


def forged() -> bytes:
    raw = bytearray(record(identity(9), "x").raw)
    raw[-1] ^= 1
    return bytes(raw)


def test_a_peer_sending_an_invalid_record_is_cut_off_with_goodbye_2_and_banned() -> None:
    mesh = session()
    actions = hello_then(mesh, m.Records((forged(),)))
    reason = "invalid record: bad-signature"
    assert m.Goodbye(m.GoodbyeCode.INVALID_RECORD, reason) in sent(actions)
    [close] = [x for x in actions if isinstance(x, Close)]
    assert (close.conn, close.why.code, close.why.reason) == (
        1,
        m.GoodbyeCode.INVALID_RECORD,
        reason,
    )
    [banned] = [x for x in actions if isinstance(x, Banned)]
    assert banned.node == PEER.public_key and banned.ban.reason == reason
    assert [ban.node for ban in mesh.bans_in_force(0)] == [PEER.public_key]


def test_garbage_from_a_peer_ends_the_session_as_a_protocol_violation_without_a_ban() -> None:
    mesh = session()
    mesh.handle(Received(1, hello()), at(0))
    actions = mesh.handle(Received(1, b"\xc1\xc1\xc1"), at(0))
    assert closed(actions) == [(1, m.GoodbyeCode.PROTOCOL)]
    assert not any(isinstance(x, Banned) for x in actions)  # a buggy implementation may retry
    assert mesh.bans_in_force(0) == []


def test_the_first_message_must_be_hello() -> None:
    mesh = session()
    actions = mesh.handle(Received(1, m.encode(m.Ping(1))), at(0))
    assert closed(actions) == [(1, m.GoodbyeCode.PROTOCOL)]


@pytest.mark.parametrize("version", [0, -3])
def test_a_peer_without_a_common_version_is_told_so(version: int) -> None:
    mesh = session()
    actions = mesh.handle(Received(1, m.encode(m.Hello(version, (), (), "old"))), at(0))
    assert closed(actions) == [(1, m.GoodbyeCode.VERSION)]


def test_a_reconcile_message_over_the_frame_limit_is_a_violation() -> None:
    actions = hello_then(session(), m.Reconcile(m.Role.OPEN, b"\x61" + bytes(60_001)))
    assert closed(actions) == [(1, m.GoodbyeCode.PROTOCOL)]


def test_reconcile_messages_that_do_not_wait_for_replies_are_a_violation() -> None:
    actions = hello_then(session(), OPENING, OPENING)
    assert closed(actions) == [(1, m.GoodbyeCode.PROTOCOL)]


def test_a_want_for_everything_is_answered_within_a_budget() -> None:
    mesh = engine()
    big = [record(identity(n % 50), f"big/{n}", value="x" * 16_000) for n in range(400)]
    mesh.handle(Ingest([r.raw for r in big]), at(0))
    open_session(mesh)
    actions = hello_then(mesh, m.Want(tuple(r.id for r in big)))
    answer = sum(len(x.data) for x in actions if isinstance(x, Send))
    assert 0 < answer <= WANT_REPLY_BUDGET + 64 * 1024


def test_a_peer_opening_rounds_back_to_back_gets_the_same_snapshot() -> None:
    mesh = session()
    builds = 0
    real_items = mesh.node.store.items

    def counting(now_ms: int) -> list[tuple[int, bytes]]:
        nonlocal builds
        builds += 1
        return real_items(now_ms)

    mesh.node.store.items = counting  # type: ignore[method-assign]
    hello_then(mesh)
    for n in range(5):
        # every change would force a rebuild
        mesh.handle(Ingest([record(identity(7), f"new/{n}").raw]), at(0.1 * n))
        mesh.handle(Received(1, m.encode(OPENING)), at(0.1 * n))
    assert builds == 1
    mesh.handle(Received(1, m.encode(OPENING)), at(5.0))
    assert builds == 2


def test_a_round_the_peer_stops_answering_is_abandoned() -> None:
    mesh = session(initiator=True)
    mesh.handle(Received(1, hello("mute")), at(0))
    assert mesh.peers()[0].stats.reconcile_rounds == 1
    for t in range(10, 130, 10):  # it pings, so it stays, but never answers a round
        mesh.handle(Received(1, m.encode(m.Ping(t))), at(t))
        mesh.handle(Tick(), at(t))
    [view] = mesh.peers()
    assert view.state != "closed"
    assert view.stats.reconcile_rounds == 3  # at 0, then 60 and 120 once each was abandoned


def test_a_peer_asking_too_fast_is_told_it_overloads_us() -> None:
    mesh = session()
    hello_then(mesh)
    for n in range(200):  # one question per read, as the rules say, but 1,000 a second
        actions = mesh.handle(Received(1, m.encode(OPENING)), at(n / 1000))
        if closed(actions):
            break
    assert closed(actions) == [(1, m.GoodbyeCode.OVERLOADED)]
    assert 50 <= n < 60


def test_a_steady_questioner_within_the_rate_is_answered_forever() -> None:
    mesh = session()
    hello_then(mesh)
    for n in range(500):  # 10 a second for 50 seconds
        actions = mesh.handle(Received(1, m.encode(OPENING)), at(n / 10))
        assert closed(actions) == []


def banned_peer_reconnects(now: float = 0.0) -> tuple[Mesh, list[Action]]:
    """``PEER`` was banned for a forged record, and connects again on session 2 at ``now``."""
    mesh = session()
    hello_then(mesh, m.Records((forged(),)))
    mesh.handle(Lost(1), at(0))
    return mesh, open_session(mesh, 2, now=now)


@pytest.mark.parametrize(
    ("features", "retry_after"), [((), None), ((m.RETRY_AFTER,), 600)], ids=["0.1.0", "aware"]
)
def test_a_banned_node_gets_our_hello_then_goodbye_7_worded_for_its_features(
    features: tuple[str, ...], retry_after: int | None
) -> None:
    mesh, opened = banned_peer_reconnects()
    [ours] = sent(opened, 2)
    assert isinstance(ours, m.Hello) and m.RETRY_AFTER in ours.features
    actions = mesh.handle(Received(2, hello("them", features=features)), at(1))
    assert sent(actions, 2) == [m.Goodbye(m.GoodbyeCode.BANNED, "banned", retry_after)]
    assert closed(actions) == [(2, m.GoodbyeCode.BANNED)]
    assert not any(isinstance(x, Ingested | Banned) for x in actions)


def test_a_banned_node_that_sends_no_hello_gets_goodbye_7_after_a_while() -> None:
    mesh, _ = banned_peer_reconnects(now=10.0)
    assert mesh.next_timer() == 10.0 + REFUSAL_WAIT
    actions = mesh.handle(Tick(), at(10.0 + REFUSAL_WAIT))
    assert sent(actions, 2) == [m.Goodbye(m.GoodbyeCode.BANNED, "banned")]
    assert closed(actions) == [(2, m.GoodbyeCode.BANNED)]


def test_a_frame_that_does_not_decrypt_closes_without_a_goodbye() -> None:
    class Broken(PlainChannel):
        def open(self, data: bytes) -> bytes:
            raise ChannelError("tampered")

    mesh = session(channel=Broken())
    actions = mesh.handle(Received(1, b"garbage"), at(1))
    assert sent(actions) == []
    assert [(x.why.code, x.why.reason) for x in actions if isinstance(x, Close)] == [
        (m.GoodbyeCode.PROTOCOL, m.Why.UNDECRYPTABLE)
    ]
    assert mesh.bans_in_force(1) == []


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
FIXED_REASONS = set(m.Why) | {m.invalid_record_reason(r) for r in Invalid}


@given(st.lists(st.one_of(st.binary(max_size=40), _messages), max_size=6))
@settings(max_examples=200, deadline=None)
def test_every_goodbye_reason_is_from_the_fixed_set(chunks: list[bytes]) -> None:
    mesh = session()
    for chunk in [hello("fuzz"), *chunks]:
        actions = mesh.handle(Received(1, chunk), at(1))
        for action in actions:
            if isinstance(action, Close) and not action.why.by_peer:  # the peer's are its own
                assert action.why.reason in FIXED_REASONS


def test_records_a_session_delivers_are_credited_to_the_source_the_driver_named() -> None:
    mesh = engine()
    open_session(mesh, source="198.51.100.4")
    author = identity(7)
    mesh.handle(Received(1, hello() + m.encode(m.Records((record(author).raw,)))), at(0))
    assert mesh.node.store.standing(author.public_key).sources == (origin_of("198.51.100.4"),)


def test_records_created_too_far_ahead_are_counted_for_the_driver_to_say_so() -> None:
    mesh = session()
    ahead = record(identity(7), created_ms=T0 + MAX_CREATED_AHEAD_MS + 1)
    actions = mesh.handle(Received(1, hello() + m.encode(m.Records((ahead.raw,)))), at(0))
    assert [x for x in actions if isinstance(x, AheadOfClock)] == [AheadOfClock(1)]
    assert all(x.stored == [] for x in actions if isinstance(x, Ingested))
    assert not any(isinstance(x, Banned) for x in actions)


def swapping_engine() -> tuple[Mesh, list[str]]:
    """An engine at its target of one neighbour (session 1), past its first swap's pause,
    which has dialled one more address: the mesh, and what it dialled."""
    mdns = frozenset({"mdns"})
    peers = structs.replace(PeerSettings(), target_degree=1, min_outbound=1, dial_sources=mdns)
    mesh = engine(structs.replace(Settings(), peers=peers))
    addresses = ["192.0.2.21:7744", "192.0.2.22:7744"]
    first = mesh.handle(Hint(addresses[0], "mdns"), at(0)) + mesh.handle(Tick(), at(0))
    assert [x.address for x in first if isinstance(x, Dial)] == [addresses[0]]
    open_session(mesh, 1, initiator=True, address=addresses[0])
    mesh.handle(Received(1, hello(features=(m.PEER_EXCHANGE,))), at(0))
    mesh.handle(Hint(addresses[1], "mdns"), at(0))
    dialled: list[str] = []
    for t in range(1, 15):
        dialled += [x.address for x in mesh.handle(Tick(), at(t)) if isinstance(x, Dial)]
        mesh.handle(Received(1, m.encode(m.Ping(t))), at(t))  # the neighbour stays
    return mesh, dialled


def test_a_swap_the_far_side_refuses_lets_no_neighbour_go() -> None:
    mesh, dialled = swapping_engine()
    assert dialled == ["192.0.2.22:7744"]
    open_session(mesh, 2, remote=identity(102), initiator=True, address=dialled[0], now=15)
    refusal = hello() + m.encode(m.Goodbye(m.GoodbyeCode.NORMAL, "too many peers"))
    actions = mesh.handle(Received(2, refusal), at(15))
    assert closed(actions) == [(2, m.GoodbyeCode.NORMAL)]  # only the refused one ends
    assert [view.state for view in mesh.peers() if view.conn == 1] == ["open"]
