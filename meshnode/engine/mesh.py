"""A node and its peer sessions: reconciliation, live push and relay, sans-IO.

``Mesh`` is the node-level state machine. It owns the node's sessions and
answers their events against the store: it verifies and stores what peers
send, pushes every newly stored record to every other session (so records
travel through relays to nodes their author never met), looks up what peers
want, and keeps the Negentropy item set. It never touches a socket or a clock:
the daemon's runtime calls it on its store thread with ``now`` (monotonic
seconds, for session timers) and ``now_ms`` (wall clock, for expiry); a
simulator can call it directly.

Every call returns an ``Output``: the sessions that have bytes to send, the
records newly stored (for ``watch``), the sessions that ended, the peers that
sent invalid records (for the runtime's ban list, ``meshnode.engine.bans``), and how
many records were not stored for claiming a creation far ahead of the clock
(so the runtime can say that this node's clock may be wrong).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from meshnode.core import messages as m
from meshnode.core.canonical import Value
from meshnode.core.negentropy import ItemIndex, SortedItems
from meshnode.core.record import Record, RecordError
from meshnode.core.session import (
    Channel,
    Event,
    HaveAnnounced,
    PeerSession,
    RecordsReceived,
    RecordsWanted,
    SessionClosed,
    SessionConfig,
)
from meshnode.engine.node import Node, NodeError, Publication
from meshnode.store.base import Outcome

# What this node announces in hello (protocol/peer.md §4.3).
FEATURES = (m.RETRY_AFTER,)
# What one chunk of a peer's bytes may make us send in records. A want beyond it
# is answered in part; the peer asks again in its next round (protocol/peer.md §5).
WANT_REPLY_BUDGET = 4 * 1024 * 1024


@dataclass(slots=True)
class Output:
    dirty: set[int] = field(default_factory=set)  # sessions with bytes to send
    stored: list[Record] = field(default_factory=list)
    closed: list[tuple[int, SessionClosed]] = field(default_factory=list)
    misbehaved: list[tuple[bytes, int, str]] = field(default_factory=list)  # node, code, reason
    ahead_of_clock: int = 0  # records not stored: created too far ahead of this node's clock


@dataclass(slots=True)
class Peer:
    """A session and what the runtime knows of the connection under it."""

    id: int
    node: bytes
    session: PeerSession
    address: str
    since_ms: int
    origin: bytes  # where its records come from, for the store's standing of their authors


class Mesh:
    def __init__(
        self,
        node: Node,
        *,
        agent: str,
        listen: Sequence[str] = (),
        nonce: Callable[[], int],
        config: SessionConfig | None = None,
    ) -> None:
        self.node = node
        self.agent = agent
        self.listen = tuple(listen)
        self.config = config or SessionConfig()
        self.peers: dict[int, Peer] = {}
        self._nonce = nonce
        self._ids = itertools.count(1)
        self._items: SortedItems | None = None
        self._items_now_ms = 0

    # -- sessions -----------------------------------------------------------------

    def open(
        self,
        *,
        remote: bytes,
        initiator: bool,
        channel: Channel,
        address: str,
        now: float,
        now_ms: int,
        banned_for: int | None = None,
        origin: bytes | None = None,
    ) -> tuple[int, Output]:
        """Start a session over a finished handshake; keep one session per remote node.

        Two nodes that dial each other at once end up with two connections. Both
        keep the one dialed by the node with the smaller public key, so they agree
        without talking about it; with the same dialer, the older one stays.
        A node banned for ``banned_for`` more seconds gets goodbye 7 after its hello.
        ``origin`` names where the connection comes from (the runtime: its network
        source); the remote node's key if not given.
        """
        self._items_now_ms = now_ms
        hello = m.Hello(m.PROTOCOL_VERSION, FEATURES, self.listen, self.agent)
        session = PeerSession(
            initiator=initiator,
            channel=channel,
            items=self.items,
            hello=hello,
            now=now,
            nonce=self._nonce,
            config=self.config,
        )
        peer = Peer(next(self._ids), remote, session, address, now_ms, origin or remote)
        self.peers[peer.id] = peer
        out = Output(dirty={peer.id})
        if banned_for is not None:
            session.refuse(m.GoodbyeCode.BANNED, m.Why.BANNED, banned_for)
            return peer.id, out
        for other in list(self.peers.values()):
            if other is peer or other.node != remote or other.session.closed:
                continue
            loser = peer if self._dialer(other) == self._dialer(peer) else None
            if loser is None:
                preferred = min(self.node.identity.public_key, remote)
                loser = peer if self._dialer(other) == preferred else other
            out.closed.append(
                (loser.id, loser.session.close(m.GoodbyeCode.DUPLICATE, m.Why.DUPLICATE))
            )
            out.dirty.add(loser.id)
        return peer.id, out

    def _dialer(self, peer: Peer) -> bytes:
        return self.node.identity.public_key if peer.session.initiator else peer.node

    def receive(self, peer_id: int, data: bytes, now: float, now_ms: int) -> Output:
        out = Output()
        peer = self.peers.get(peer_id)
        if peer is None:
            return out
        self._items_now_ms = now_ms
        self._handle(peer, peer.session.receive_data(data, now), now_ms, out)
        return out

    def drop(self, peer_id: int) -> None:
        """The connection is gone; forget the session."""
        self.peers.pop(peer_id, None)

    def take_data(self, peer_id: int) -> bytes:
        peer = self.peers.get(peer_id)
        return b"" if peer is None else peer.session.data_to_send()

    def is_closed(self, peer_id: int) -> bool:
        peer = self.peers.get(peer_id)
        return peer is None or peer.session.closed

    def close_all(self, code: int, reason: str) -> Output:
        out = Output()
        for peer in self.peers.values():
            out.closed.append((peer.id, peer.session.close(code, reason)))
            out.dirty.add(peer.id)
        return out

    def next_timer(self) -> float:
        return min((p.session.next_timer() for p in self.peers.values()), default=float("inf"))

    def handle_timers(self, now: float, now_ms: int) -> Output:
        out = Output()
        self._items_now_ms = now_ms
        for peer in list(self.peers.values()):
            if peer.session.next_timer() <= now:
                self._handle(peer, peer.session.handle_timer(now), now_ms, out)
                out.dirty.add(peer.id)
        return out

    # -- local records ------------------------------------------------------------

    def publish(
        self, key: str, value: Value, *, ttl_ms: int | None, now_ms: int
    ) -> tuple[Record, Output]:
        record = self.node.publish(key, value, now_ms=now_ms, ttl_ms=ttl_ms)
        return record, self._stored([record], source=None)

    def publish_many(
        self, publications: Sequence[Publication], *, now_ms: int
    ) -> tuple[list[Record | NodeError | RecordError], Output]:
        """Group commit: sign and store all in one transaction, push them in one message."""
        results = self.node.publish_many(publications, now_ms=now_ms)
        return results, self._stored([r for r in results if isinstance(r, Record)], source=None)

    def delete(self, key: str, *, now_ms: int) -> tuple[Record, Output]:
        record = self.node.delete(key, now_ms=now_ms)
        return record, self._stored([record], source=None)

    def ingest(self, raws: Sequence[bytes], now_ms: int) -> Output:
        """Records from outside any session (a bundle, a test): verify, store, relay."""
        report = self.node.ingest(raws, now_ms=now_ms)
        return self._stored(report.result.stored, source=None)

    def items(self) -> ItemIndex:
        """The Negentropy item set of live records, rebuilt only after changes."""
        if self._items is None:
            self._items = SortedItems.from_sorted(self.node.store.items(self._items_now_ms))
        return self._items

    def forget_items(self) -> None:
        """Records were removed behind our back (a purge): rebuild the set when next needed."""
        self._items = None

    # -- events -------------------------------------------------------------------

    def _handle(self, peer: Peer, events: Sequence[Event], now_ms: int, out: Output) -> None:
        out.dirty.add(peer.id)
        store = self.node.store
        received = [
            raw for event in events if isinstance(event, RecordsReceived) for raw in event.raws
        ]
        if received:
            # Everything one chunk of bytes brought is verified and stored in one batch.
            report = self.node.ingest(received, now_ms=now_ms, source=peer.origin)
            self._merge(out, self._stored(report.result.stored, source=peer.id))
            out.ahead_of_clock += report.result.outcomes[Outcome.FUTURE]
            if report.rejected:
                reason = m.invalid_record_reason(report.rejected[0].reason)
                out.closed.append(
                    (peer.id, peer.session.close(m.GoodbyeCode.INVALID_RECORD, reason))
                )
                out.misbehaved.append((peer.node, m.GoodbyeCode.INVALID_RECORD, reason))
                return
        budget = WANT_REPLY_BUDGET
        for event in events:
            match event:
                case RecordsWanted(ids):
                    raws = store.raw_by_ids(ids, now_ms, max_bytes=max(budget, 0))
                    budget -= sum(len(raw) for raw in raws)
                    peer.session.send_records(raws)
                case HaveAnnounced(ids):
                    wanted = store.missing(ids)
                    if wanted:
                        peer.session.want(wanted)
                case SessionClosed() as closed:
                    out.closed.append((peer.id, closed))

    def _stored(self, records: list[Record], source: int | None) -> Output:
        out = Output(stored=list(records))
        if not records:
            return out
        self._items = None
        raws = [r.raw for r in records]
        for peer in self.peers.values():
            if peer.id != source and not peer.session.closed:
                peer.session.push(raws)
                out.dirty.add(peer.id)
        return out

    @staticmethod
    def _merge(into: Output, other: Output) -> None:
        into.dirty |= other.dirty
        into.stored.extend(other.stored)
        into.closed.extend(other.closed)
        into.misbehaved.extend(other.misbehaved)
        into.ahead_of_clock += other.ahead_of_clock
