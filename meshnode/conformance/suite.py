"""The cases: what a node of any implementation must do, each checked on its own connection.

Each case runs as a fresh throwaway identity, so the bans that some cases earn (an
invalid record) never block a later one. Cases that would store records store only
records signed by throwaway identities. The spec sections are in ``protocol/peer.md``
and ``protocol/records.md``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

from msgspec import Struct

from meshnode.conformance.link import Failure, Link, Target, fresh_identity
from meshnode.conformance.record_vectors import invalid_records
from meshnode.core import messages as m
from meshnode.core.channel import frame
from meshnode.core.handshake import PROLOGUE, PROTOCOL_NAME
from meshnode.core.identity import Identity
from meshnode.core.negentropy import Initiator, SortedItems
from meshnode.core.noise import HandshakeState
from meshnode.core.record import Record, decode_record, sign_record
from meshnode.core.session import STRATEGY
from meshnode.core.x25519 import KEY_SIZE, KeyPair
from meshnode.store.base import reconcile_timestamp

FRAME_SIZE_LIMIT = 60_000
HELLO = m.Hello(m.PROTOCOL_VERSION, (m.RETRY_AFTER,), (), "meshnode-conformance")
HELLO_EXCHANGE = m.Hello(
    m.PROTOCOL_VERSION, (m.RETRY_AFTER, m.PEER_EXCHANGE), (), "meshnode-conformance"
)


class Case(Struct, frozen=True):
    name: str
    run: Callable[[Target], str | None]  # None: passed; a string: skipped, and why
    slow: bool = False


CASES: list[Case] = []


def case(name: str, *, slow: bool = False) -> Callable[..., Callable[[Target], str | None]]:
    def register(fn: Callable[[Target], str | None]) -> Callable[[Target], str | None]:
        CASES.append(Case(name, fn, slow))
        return fn

    return register


def session(target: Target, identity: Identity | None = None, hello: m.Hello = HELLO) -> Link:
    """A connection past the handshake whose hello exchange is done."""
    link = Link(target, identity).handshake()
    link.send(hello)
    link.target_hello = link.hello()
    return link


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise Failure(what)


def expect_goodbye(link: Link, code: int) -> m.Goodbye:
    goodbye = link.goodbye()
    expect(goodbye.code == code, f"goodbye {goodbye.code} ({goodbye.reason!r}), not {code}")
    return goodbye


def still_talking(link: Link) -> None:
    """The session survived what came before: a ping is answered with its nonce."""
    nonce = int.from_bytes(os.urandom(8), "big")
    link.send(m.Ping(nonce))
    replies = link.receive_until(lambda x: isinstance(x, m.Pong | m.Goodbye))
    expect(bool(replies) and replies[-1] == m.Pong(nonce), f"ping got {replies[-1:]}, not pong")


def fresh_record(author: Identity, key: str, *, seq: int = 1, **fields: int | None) -> Record:
    now = int(time.time() * 1000)
    return sign_record(author, seq=seq, key=key, value="conformance", created_ms=now, **fields)


def push(target: Target, record: Record) -> None:
    """Push ``record`` on a session of its own, which must survive it."""
    with session(target) as link:
        link.send(m.Records((record.raw,)))
        still_talking(link)


def fetch(target: Target, ids: list[bytes]) -> list[bytes]:
    """The records the node answers a want for ``ids`` with (it may skip unknown ones)."""
    with session(target) as link:
        link.send(m.Want(tuple(ids)), m.Ping(1))
        # A pong may overtake the records of a want sent with it, not those of one sent
        # a round trip earlier: the second pong comes after every record of the answer.
        replies = link.receive_until(lambda x: x == m.Pong(1))
        link.send(m.Ping(2))
        replies += link.receive_until(lambda x: x == m.Pong(2))
        expect(replies[-1:] == [m.Pong(2)], "a want was not followed by pong")
        return [raw for r in replies if isinstance(r, m.Records) for raw in r.raws]


def reconcile(link: Link, items: list[tuple[int, bytes]]) -> tuple[set[bytes], set[bytes], int]:
    """Run one round as its initiator: (ids only we have, ids only the node has, round trips)."""
    round_ = Initiator(SortedItems(items), strategy=STRATEGY, frame_size_limit=FRAME_SIZE_LIMIT)
    have: set[bytes] = set()
    need: set[bytes] = set()
    message: bytes | None = round_.initiate()
    role, trips = m.Role.OPEN, 0
    while message is not None:
        link.send(m.Reconcile(role, message))
        replies = link.receive_until(lambda x: isinstance(x, m.Reconcile | m.Goodbye))
        reply = replies[-1] if replies else None
        expect(isinstance(reply, m.Reconcile), f"a reconcile message got {reply}")
        assert isinstance(reply, m.Reconcile)
        expect(reply.role is m.Role.REPLY, f"the node answered with role {reply.role}, not 1")
        step = round_.reconcile(reply.payload)
        have |= set(step.have_ids)
        need |= set(step.need_ids)
        message, role, trips = step.message, m.Role.CONTINUE, trips + 1
    return have, need, trips


# -- handshake (peer.md §2) ------------------------------------------------------------------


@case("handshake: the right network key completes it and the node says hello first")
def _right_key(target: Target) -> None:
    with Link(target).handshake() as link:
        hello = link.hello()
        expect(hello.version >= 1, f"hello.v is {hello.version}")


@case("handshake: a wrong network key is closed without a reply")
def _wrong_key(target: Target) -> None:
    with Link(target) as link:
        try:
            link.handshake(network_key=os.urandom(32))
        except Failure as exc:
            expect("closed the connection" in str(exc), str(exc))
            return
        raise Failure("the handshake completed with the wrong network key")


@case("handshake: a replayed message 1 is closed without a reply")
def _replay(target: Target) -> None:
    with Link(target).handshake() as first:
        recorded = first.first_message
    with Link(target) as link:
        link.sock.sendall(recorded)
        link.closed_silently()


def _message_one(target: Target, payload: bytes) -> bytes:
    noise = HandshakeState(
        PROTOCOL_NAME,
        initiator=True,
        prologue=PROLOGUE,
        s=KeyPair(os.urandom(KEY_SIZE)),
        psks=[target.network_key],
        rng=lambda: os.urandom(32),
    )
    return frame(noise.write_message(payload))


@case("handshake: a message 1 with a payload is closed without a reply")
def _message_one_payload(target: Target) -> None:
    with Link(target) as link:
        link.sock.sendall(_message_one(target, b"hello?"))
        link.closed_silently()


@case("handshake: an oversized message 1 (60 KB) is closed without a reply")
def _message_one_oversized(target: Target) -> None:
    with Link(target) as link:
        link.sock.sendall(_message_one(target, bytes(60_000)))
        link.closed_silently()


# -- hello and the rules for growth (peer.md §4, §5.1) -----------------------------------------


@case("hello: unknown keys and trailing elements are ignored")
def _extended_hello(target: Target) -> None:
    with Link(target).handshake() as link:
        link.send_raw([0, {"v": 1, "agent": "x", "from-the-future": [1, 2]}, "trailing"])
        link.hello()
        nonce = 99
        link.send_raw([5, nonce, "trailing"])
        replies = link.receive_until(lambda x: isinstance(x, m.Pong | m.Goodbye))
        expect(replies[-1:] == [m.Pong(nonce)], f"a ping with a trailing element got {replies}")


@case("messages: an unknown message type is ignored")
def _unknown_type(target: Target) -> None:
    with session(target) as link:
        link.send_raw([100, "from a later version"], [8, {"x": 1}])
        still_talking(link)


# -- peer exchange (peer.md §4.3, §5.9) --------------------------------------------------------


def exchange_session(target: Target) -> tuple[Link, str | None]:
    """A session where ``peer-exchange`` is in force, or why it cannot be (a skip)."""
    link = session(target, hello=HELLO_EXCHANGE)
    assert link.target_hello is not None
    if m.PEER_EXCHANGE not in link.target_hello.features:
        link.sock.close()
        return link, "the node does not list peer-exchange"
    return link, None


@case("peer-exchange: peers, with addresses of every form or none, is taken in")
def _peers(target: Target) -> str | None:
    link, skipped = exchange_session(target)
    if skipped:
        return skipped
    with link:
        addresses = ("192.0.2.1:7744", "[2001:db8::1]:7744", "not an address", "")
        link.send(m.Peers(addresses), m.Peers(()))
        still_talking(link)
    return None


@case("peer-exchange: peers of any shape from a peer that did not list it is ignored")
def _peers_unasked(target: Target) -> None:
    with session(target) as link:
        link.send_raw([8, "not a list"], [8, {"x": 1}], [8, ["192.0.2.1:7744"]])
        still_talking(link)


_BAD_PEERS: dict[str, list[object]] = {
    "more than 32 addresses": [8, [f"192.0.2.{n}:7744" for n in range(33)]],
    "an address over 256 bytes": [8, ["1" * 257]],
    "an address that is not a str": [8, [b"192.0.2.1:7744"]],
    "no list": [8],
    "not a list": [8, "192.0.2.1:7744"],
}


def _bad_peers_cases() -> Iterator[Case]:
    for what, message in _BAD_PEERS.items():

        def run(target: Target, message: list[object] = message) -> str | None:
            link, skipped = exchange_session(target)
            if skipped:
                return skipped
            with link:
                link.send_raw(message)
                expect_goodbye(link, m.GoodbyeCode.PROTOCOL)
            return None

        yield Case(f"peer-exchange: peers with {what} is goodbye 1", run)


CASES.extend(_bad_peers_cases())


@case("peer-exchange: a burst of 4 peers messages, as queued behind a slow link, is welcome")
def _peers_burst(target: Target) -> str | None:
    link, skipped = exchange_session(target)
    if skipped:
        return skipped
    with link:
        link.send(*[m.Peers((f"192.0.2.{n}:7744",)) for n in range(4)])
        still_talking(link)
    return None


@case("peer-exchange (optional): a peer that floods peers messages is cut off with goodbye 6")
def _peers_flood(target: Target) -> str | None:
    link, skipped = exchange_session(target)
    if skipped:
        return skipped
    with link:
        link.send(*[m.Peers((f"192.0.2.{n}:7744",)) for n in range(10)], m.Ping(9))
        replies = link.receive_until(lambda x: isinstance(x, m.Goodbye | m.Pong))
        if replies and replies[-1] == m.Pong(9):
            return "the node does not limit peers messages (a MAY)"
        last = replies[-1] if replies else None
        expect(isinstance(last, m.Goodbye), "a flood of peers closed without a goodbye")
        assert isinstance(last, m.Goodbye)
        expect(last.code == m.GoodbyeCode.OVERLOADED, f"goodbye {last.code}, not 6")
    return None


@case("ping: answered with pong carrying the same nonce")
def _ping(target: Target) -> None:
    with session(target) as link:
        still_talking(link)


# -- records, want, have, reconciliation (peer.md §5.2, §5.3) --------------------------------


@case("push: a valid record is stored and served to a want")
def _push(target: Target) -> None:
    pushed = fresh_record(fresh_identity(), "conformance/push")
    push(target, pushed)
    expect(fetch(target, [pushed.id]) == [pushed.raw], "the pushed record is not served")


@case("push: an expired record is dropped without a goodbye")
def _expired(target: Target) -> None:
    now = int(time.time() * 1000)
    author = fresh_identity()
    expired = sign_record(
        author, seq=1, key="conformance/expired", value="x", created_ms=now - 10_000,
        expires_ms=now - 5_000,
    )  # fmt: skip
    push(target, expired)
    expect(fetch(target, [expired.id]) == [], "an expired record is served")


@case("push: an older version is dropped without a goodbye")
def _older(target: Target) -> None:
    author = fresh_identity()
    newer = fresh_record(author, "conformance/version", seq=2)
    older = fresh_record(author, "conformance/version", seq=1)
    with session(target) as link:
        link.send(m.Records((newer.raw,)), m.Records((older.raw,)))
        still_talking(link)
    expect(fetch(target, [older.id, newer.id]) == [newer.raw], "the superseded version is served")


@case("want: unknown ids are skipped")
def _want_unknown(target: Target) -> None:
    expect(fetch(target, [os.urandom(32), os.urandom(32)]) == [], "records for unknown ids")


@case("have: answered with want for the ids the node lacks")
def _have(target: Target) -> None:
    known = fresh_record(fresh_identity(), "conformance/have")
    with session(target) as link:
        link.send(m.Records((known.raw,)))
        still_talking(link)
        unknown = os.urandom(32)
        link.send(m.Have((known.id, unknown)))
        replies = link.receive_until(lambda x: isinstance(x, m.Want | m.Goodbye))
        expect(replies[-1:] == [m.Want((unknown,))], f"have got {replies[-1:]}, not want")


@case("reconcile: a round finds what the node has, and a want fetches it byte for byte")
def _reconcile(target: Target) -> None:
    pushed = fresh_record(fresh_identity(), "conformance/reconcile")
    push(target, pushed)
    with session(target) as link:
        have, need, _ = reconcile(link, [])
        expect(not have, "a round with an empty set found ids only the suite has")
        expect(pushed.id in need, "the round did not list a record the node stored")
    sample = [pushed.id, *sorted(need - {pushed.id})[:99]]
    fetched = fetch(target, sample)
    by_id = {decode_record(raw).id: raw for raw in fetched}
    expect(set(by_id) == set(sample), "a want did not return every id the round listed")


@case("reconcile: a peer in sync settles in one round trip")
def _in_sync(target: Target) -> str | None:
    with session(target) as link:
        _, ids, _ = reconcile(link, [])
    if len(ids) > 5000:
        return f"the node holds {len(ids)} records; this case fetches at most 5,000"
    raws = fetch(target, sorted(ids))
    items = [(reconcile_timestamp(r.created_ms), r.id) for r in map(decode_record, raws)]
    with session(target) as link:
        have, need, trips = reconcile(link, items)
    expect(not have and not need, f"{len(have)} and {len(need)} ids differ after a full fetch")
    expect(trips == 1, f"{trips} round trips for sets in sync")
    return None


# -- goodbyes (peer.md §4.4, §5) --------------------------------------------------------------


@case("goodbye 0: the node closes the connection after ours")
def _goodbye_0(target: Target) -> None:
    with session(target) as link:
        link.send(m.Goodbye(m.GoodbyeCode.NORMAL, "leaving"))
        link.receive_until(lambda x: False)  # returns once the node has closed


@case("goodbye 1: a message before hello")
def _before_hello(target: Target) -> None:
    with Link(target).handshake() as link:
        link.send(m.Ping(1))
        expect_goodbye(link, m.GoodbyeCode.PROTOCOL)


@case("goodbye 1: a known message of the wrong shape")
def _wrong_shape(target: Target) -> None:
    with session(target) as link:
        link.send_raw([5, "not a nonce"])
        expect_goodbye(link, m.GoodbyeCode.PROTOCOL)


@case("goodbye 1: hello twice")
def _hello_twice(target: Target) -> None:
    with session(target) as link:
        link.send(HELLO)
        expect_goodbye(link, m.GoodbyeCode.PROTOCOL)


@case("goodbye 1: a message nested deeper than 3 levels")
def _too_deep(target: Target) -> None:
    with session(target) as link:
        link.send_raw([5, [[[1]]]])
        expect_goodbye(link, m.GoodbyeCode.PROTOCOL)


@case("goodbye 1: a message over 2 MiB")
def _too_large(target: Target) -> None:
    with session(target) as link:
        link.send(m.Reconcile(m.Role.OPEN, bytes(m.MAX_MESSAGE_BYTES)))
        expect_goodbye(link, m.GoodbyeCode.PROTOCOL)


@case("goodbye 1: a reconcile reply to no round")
def _unasked(target: Target) -> None:
    with session(target) as link:
        link.send(m.Reconcile(m.Role.REPLY, b"\x61"))
        expect_goodbye(link, m.GoodbyeCode.PROTOCOL)


@case("goodbye 1: a reason is a short text, not an exception's words")
def _reason(target: Target) -> None:
    with session(target) as link:
        link.send_raw([3, "not a list"])
        goodbye = expect_goodbye(link, m.GoodbyeCode.PROTOCOL)
        expect("Error" not in goodbye.reason and "(" not in goodbye.reason, goodbye.reason)


def _invalid_record_cases() -> Iterator[Case]:
    for name, reason, raw in invalid_records():

        def run(target: Target, raw: bytes = raw, reason: str = reason) -> None:
            with session(target) as link:
                link.send(m.Records((raw,)))
                goodbye = expect_goodbye(link, m.GoodbyeCode.INVALID_RECORD)
                # The reason is free text, but one that names a code must name this one.
                named = goodbye.reason.startswith("invalid record: ")
                expected = m.invalid_record_reason(reason)
                expect(
                    not named or goodbye.reason == expected, f"{goodbye.reason!r}, not {expected!r}"
                )

        yield Case(f"goodbye 2: invalid record, {name} ({reason})", run)


CASES.extend(_invalid_record_cases())


@case("goodbye 3: a second connection of the same node and dialer")
def _duplicate(target: Target) -> None:
    identity = fresh_identity()
    with session(target, identity) as first:
        with session(target, identity) as second:
            expect_goodbye(second, m.GoodbyeCode.DUPLICATE)
        still_talking(first)


@case("goodbye 4: silence for 10 s, while the node pings after 5 s of its own", slow=True)
def _idle(target: Target) -> None:
    slow = Target(target.host, target.port, target.network_key, timeout=15)
    # Listing peer-exchange says this side pings after 5 s (§5.5): 10 s of silence is enough.
    with session(slow, hello=HELLO_EXCHANGE) as link:
        started = time.monotonic()
        replies = link.receive_until(lambda x: isinstance(x, m.Ping | m.Goodbye))
        expect(isinstance(replies[-1:][0], m.Ping) if replies else False, "no ping when idle")
        expect(time.monotonic() - started < 7, "the node pinged only after 7 s of silence")
        expect_goodbye(link, m.GoodbyeCode.IDLE)
        waited = time.monotonic() - started
        expect(waited >= 9.5, "closed for idleness too soon")
        expect(waited < 13, f"closed for idleness only after {waited:.0f} s, not 10 s")


@case("goodbye 5: a hello with version 0")
def _version(target: Target) -> None:
    with Link(target).handshake() as link:
        link.send(m.Hello(0, (), (), "the past"))
        expect_goodbye(link, m.GoodbyeCode.VERSION)


@case("goodbye 6 (optional): many rounds in a second are answered or refused with 6")
def _overloaded(target: Target) -> None:
    with session(target) as link:
        for _ in range(120):
            link.send(m.Reconcile(m.Role.OPEN, Initiator(SortedItems([])).initiate()))
            replies = link.receive_until(lambda x: isinstance(x, m.Reconcile | m.Goodbye))
            last = replies[-1] if replies else None
            if isinstance(last, m.Goodbye):
                expect(last.code == m.GoodbyeCode.OVERLOADED, f"goodbye {last.code}, not 6")
                return
            expect(isinstance(last, m.Reconcile), "a round was neither answered nor refused")


@case("goodbye 7: a banned node is told so, with retry_after, after its hello")
def _banned(target: Target) -> str | None:
    identity = fresh_identity()
    _, _, forged = invalid_records()[0]
    with session(target, identity) as link:
        link.send(m.Records((forged,)))
        expect_goodbye(link, m.GoodbyeCode.INVALID_RECORD)
    with Link(target, identity).handshake() as link:
        link.send(HELLO, m.Ping(5))
        replies = link.receive_until(lambda x: isinstance(x, m.Goodbye | m.Pong))
        goodbyes = [x for x in replies if isinstance(x, m.Goodbye)]
        if replies and replies[-1] == m.Pong(5):
            return "the node does not ban (bans are a SHOULD)"
        expect(bool(goodbyes), "a banned node was closed without a goodbye")
        expect(goodbyes[0].code == m.GoodbyeCode.BANNED, f"goodbye {goodbyes[0].code}, not 7")
        retry = goodbyes[0].retry_after
        expect(retry is not None and retry > 0, "no retry_after for a peer with retry-after")
    return None


@case("transport: a frame that does not decrypt closes the connection without a goodbye")
def _tampered(target: Target) -> None:
    with session(target) as link:
        assert link.channel is not None
        sealed = bytearray(link.channel.seal(m.encode(m.Ping(1))))
        sealed[-1] ^= 1
        link.sock.sendall(bytes(sealed))
        link.closed_silently()
