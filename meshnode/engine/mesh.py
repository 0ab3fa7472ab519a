"""The node-level state machine: one node, its peer sessions, its policies; events in, actions out.

``Mesh.handle(event, now)`` is the whole contract (``meshnode.engine.events``
in, ``meshnode.engine.actions`` out). The engine verifies and stores what peers
send, asks its dissemination strategy (``meshnode.engine.dissemination``) what
to relay where, answers what peers want, keeps the Negentropy item set, bans
peers that send forged records (``meshnode.engine.bans``) and asks its peer
policy (``meshnode.engine.peering``) whom to dial and whom to let in. It never
touches a socket, a thread or a clock: the driver passes the time of every
event in one ``Instant``, and all randomness comes from the ``random.Random``
it was given. The trio daemon (``meshnode.runtime``) and the simulator
(``meshnode.sim``) drive it the same way, and read it only through the
snapshots ``peers``, ``bans_in_force`` and ``addresses`` return.

The store is the node's: the engine writes it only while handling an event,
and the driver may read it between events (queries, status) on the same thread.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from msgspec import Struct

from meshnode.core import messages as m
from meshnode.core.negentropy import ItemIndex, SortedItems
from meshnode.core.record import Record
from meshnode.core.session import (
    Event as SessionEvent,
)
from meshnode.core.session import (
    FetchView,
    HaveAnnounced,
    HelloReceived,
    PeerSession,
    PeersOffered,
    RecordsReceived,
    RecordsWanted,
    SessionClosed,
    SessionStats,
)
from meshnode.engine import actions as a
from meshnode.engine import events as e
from meshnode.engine import exchange
from meshnode.engine.bans import Ban, BanList
from meshnode.engine.declined import Declined
from meshnode.engine.dissemination import Arrival, Dissemination, EagerPush, Fate
from meshnode.engine.node import IngestReport, Node, NodeError
from meshnode.engine.peering import EXCHANGE, HELLO, AddressView, PeerPolicy
from meshnode.engine.settings import Settings
from meshnode.store.base import Outcome

if TYPE_CHECKING:
    import random

# What this node announces in hello (protocol/peer.md §4.3), peer-exchange if it is on.
FEATURES = (m.RETRY_AFTER, m.PEER_EXCHANGE)
# What one chunk of a peer's bytes may make us send in records. A want beyond it
# is answered in part; the peer asks again in its next round (protocol/peer.md §5).
WANT_REPLY_BUDGET = 4 * 1024 * 1024
FULL = "too many peers"  # goodbye 0's reason for an inbound session past the policy's limit
SWAPPED = "swapped for another peer"  # goodbye 0's reason for the neighbour a swap lets go
_FATES = {
    Outcome.STORED: Fate.NEW,
    Outcome.DUPLICATE: Fate.DUPLICATE,
    Outcome.STALE: Fate.SUPERSEDED,
}
# What the store would refuse again for a while: such records are not fetched again meanwhile.
_REFUSED = frozenset({Outcome.STALE, Outcome.DEAD, Outcome.QUOTA, Outcome.FUTURE})


class _Peer(Struct):
    conn: int
    node: bytes
    session: PeerSession
    address: str
    initiator: bool
    since_ms: int
    origin: bytes  # where its records come from, for the store's standing of their authors
    counted: bool = False  # the policy knows of it (it was not refused)
    congested: bool = False
    closing: bool = False  # ``Close`` was asked for
    why: SessionClosed | None = None
    timer: float = 0.0  # the session's next timer, as of the last event it saw


class PeerView(Struct, frozen=True):
    """One session as it stands, for ``meshnode peers`` and the simulator."""

    conn: int
    node: bytes
    address: str
    initiator: bool
    since_ms: int
    state: str
    stats: SessionStats
    outbox: int
    progress: FetchView  # what is still to fetch from it, and how fast it comes


class Mesh:
    def __init__(
        self,
        node: Node,
        *,
        agent: str,
        rng: random.Random,
        settings: Settings | None = None,
        dissemination: Dissemination | None = None,
        now: float = 0.0,
    ) -> None:
        """``now`` starts the static peers' dial clocks (monotonic seconds)."""
        self.node = node
        self.settings = settings or Settings()
        self._agent = agent
        self._rng = rng
        self._listen: tuple[str, ...] = ()
        self._dissemination = dissemination or EagerPush()
        self._policy = PeerPolicy(self.settings.peers, rng, now=now)
        self._bans = BanList()
        self._declined = Declined()  # records refused lately: not fetched again meanwhile
        self._peers: dict[int, _Peer] = {}
        self._items: SortedItems | None = None
        self._now = e.Instant(now, 0)  # the time of the event being handled
        self._actions: list[a.Action] = []
        self._dirty: dict[int, None] = {}  # sessions that may have bytes to send, in order
        self._relay_to: list[int] | None = None  # sessions records may go to; None: work it out
        self._soonest: float | None = None  # the earliest of the sessions' timers; None: find it
        exchanging = self.settings.peers.exchange
        self._features = FEATURES if exchanging else (m.RETRY_AFTER,)
        self._next_shuffle = exchange.next_shuffle(now, rng) if exchanging else math.inf
        self._news_at = math.inf  # when newly reached nodes are told of (inf: no news)

    # -- the contract ------------------------------------------------------------

    def handle(self, event: e.Event, now: e.Instant) -> list[a.Action]:
        """Apply one event at ``now``; the actions it calls for, in the order to take them."""
        self._now = now
        self._actions, self._dirty = [], {}
        match event:
            case e.Received(conn, data):
                peer = self._peers.get(conn)
                if peer is not None:
                    self._on_session(peer, peer.session.receive_data(data, now.mono))
            case e.Tick():
                self._on_tick()
            case e.Opened():
                self._open(event)
            case e.Lost(conn):
                self._lose(conn)
            case e.Congested(conn):
                if (peer := self._peers.get(conn)) is not None:
                    peer.congested = True
                    peer.session.stop_reading()
                    self._dirty[conn] = None  # its timer moved
            case e.Drained(conn):
                if (peer := self._peers.get(conn)) is not None:
                    peer.congested = False
                    peer.session.resume_reading(now.mono)
                    self._dirty[conn] = None
            case e.DialFailed(address, is_self, why):
                self._policy.failed(address, now=now.mono, is_self=is_self, why=why)
            case e.Hint() | e.Withdrawn():
                self._heard_of(event)
            case e.Listening(addresses):
                self._listen = addresses
            case _:
                self._command(event)
        self._flush()
        return self._actions

    def _command(self, event: e.Event) -> None:
        """The events of the node's own user and operator: records, bans, settings, stop."""
        match event:
            case e.Publish(publications):
                results = self.node.publish_many(publications, now_ms=self._now.wall_ms)
                self._actions.append(a.Published(tuple(results)))
                new = [r for r in results if isinstance(r, Record)]
                self._arrived([Arrival(r, Fate.NEW) for r in new], None)
            case e.Delete(key):
                self._delete(key)
            case e.Ingest(raws):
                report = self.node.ingest(raws, now_ms=self._now.wall_ms)
                self._arrived(self._arrivals(report.result.each), None)
                self._actions.append(a.Imported(verdicts(raws, report)))
            case e.Purge():
                freed = self.node.store.purge(self._now.wall_ms)
                if freed:
                    self._items = None
                self._actions.append(a.Purged(freed))
            case e.Unban(node):
                lifted = self._bans.lift(node)
                if lifted:
                    self._policy.unbanned(node, self._now.mono)
                self._actions.append(a.Unbanned(node, lifted))
            case e.Reconfigure(settings):
                self._reconfigure(settings)
            case e.SyncNow():
                self._declined.clear()  # asked for everything now: what was refused is asked again
                self._sync_now()
            case e.Stop():
                for peer in self._peers.values():
                    self._close(peer, m.GoodbyeCode.NORMAL, m.Why.SHUTTING_DOWN)

    def next_timer(self) -> float:
        """When the engine next wants a ``Tick`` (monotonic seconds; inf: never by itself)."""
        soonest = self._soonest
        if soonest is None:
            soonest = min([p.timer for p in self._peers.values()], default=math.inf)
            self._soonest = soonest
        due = min(self._policy.next_due(), self._next_shuffle)
        return soonest if soonest < due else due

    # -- snapshots ----------------------------------------------------------------

    def peers(self, now: float | None = None) -> list[PeerView]:
        """``now`` (monotonic seconds) is when rates are taken; None: the last event's time."""
        mono = self._now.mono if now is None else now
        return [
            PeerView(
                p.conn,
                p.node,
                p.address,
                p.initiator,
                p.since_ms,
                p.session.state.value,
                p.session.stats.snapshot(),
                p.session.outbox_size,
                p.session.progress.view(mono),
            )
            for p in self._peers.values()
        ]

    def bans_in_force(self, now: float) -> list[Ban]:
        return self._bans.active(now)

    def addresses(self) -> list[AddressView]:
        return self._policy.addresses()

    def sessions(self) -> tuple[int, int]:
        """(inbound, outbound) sessions the policy counts: the overlay's degree, both ways."""
        return self._policy.sessions()

    # -- sessions -----------------------------------------------------------------

    def _open(self, event: e.Opened) -> None:
        """Start a session over a finished handshake; keep one session per remote node.

        Two nodes that dial each other at once end up with two connections. Both
        keep the one dialed by the node with the smaller public key, so they agree
        without talking about it; with the same dialer, the older one stays.
        """
        now = self._now
        hello = m.Hello(m.PROTOCOL_VERSION, self._features, self._listen, self._agent)
        session = PeerSession(
            initiator=event.initiator,
            channel=event.channel,
            items=self._item_index,
            hello=hello,
            now=now.mono,
            nonce=lambda: self._rng.getrandbits(63),
            config=self.settings.session,
            takes=self._takes,
        )
        origin = origin_of(event.source)
        peer = _Peer(
            event.conn, event.remote, session, event.address, event.initiator, now.wall_ms, origin
        )
        self._peers[peer.conn] = peer
        self._dirty[peer.conn] = None
        self._soonest = None
        ban = self._bans.get(event.remote, now.mono)
        if ban is not None:
            session.refuse(m.GoodbyeCode.BANNED, m.Why.BANNED, ban.seconds_left(now.mono))
            return
        if not event.initiator and not self._policy.may_accept():
            session.refuse(m.GoodbyeCode.NORMAL, FULL)
            return
        peer.counted = True
        self._relay_to = None
        news = self._policy.opened(
            event.remote, event.address, initiator=event.initiator, now=now.mono
        )
        if news and self._news_at == math.inf and self.settings.peers.exchange:
            # A node newly reached: tell the peers soon, not at the next shuffle, so that
            # a mesh spans two subnets within seconds. Other news in that second waits too.
            self._news_at = now.mono + exchange.NEWS_DELAY
            self._next_shuffle = min(self._next_shuffle, self._news_at)
        for other in list(self._peers.values()):
            if other is peer or other.node != event.remote or other.session.closed:
                continue
            if not other.counted:  # being refused, so ending anyway: never kept over this one
                continue
            loser = peer if self._dialer(other) == self._dialer(peer) else None
            if loser is None:
                preferred = min(self.node.identity.public_key, event.remote)
                loser = peer if self._dialer(other) == preferred else other
            self._close(loser, m.GoodbyeCode.DUPLICATE, m.Why.DUPLICATE)

    def _reconfigure(self, settings: Settings) -> None:
        left = settings.peers.network_key != self.settings.peers.network_key
        if settings.store != self.settings.store:
            self._declined.clear()  # new quotas may have room for what was refused
        self.settings = settings
        self.node.store.limits = settings.store
        self._policy.reconfigure(settings.peers, now=self._now.mono)
        if left:
            for peer in self._peers.values():
                self._close(peer, m.GoodbyeCode.NORMAL, m.Why.LEFT_NETWORK)

    def _heard_of(self, event: e.Hint | e.Withdrawn) -> None:
        """Discovery's news of an address, for the policy to dial or forget."""
        if isinstance(event, e.Hint):
            self._policy.hint(event.address, event.source, now=self._now.mono, group=event.group)
        else:
            self._policy.withdraw(event.address, event.source)

    def _dialer(self, peer: _Peer) -> bytes:
        return self.node.identity.public_key if peer.initiator else peer.node

    def _lose(self, conn: int) -> None:
        peer = self._peers.pop(conn, None)
        if peer is None:
            return
        self._relay_to = None
        self._soonest = None
        self._dissemination.forget(conn)
        now = self._now.mono
        if peer.counted:
            self._policy.ended(peer.node, peer.address, initiator=peer.initiator, now=now)
        elif peer.initiator:  # a dial that reached a node refused at once: it came to nothing
            self._policy.failed(peer.address, now=now, node=peer.node, why=_refusal(peer.why))

    def _close(self, peer: _Peer, code: int, reason: str) -> None:
        closed = peer.session.close(code, reason)
        peer.why = peer.why or closed
        self._dirty[peer.conn] = None

    def _on_tick(self) -> None:
        now = self._now.mono
        for peer in list(self._peers.values()):
            if peer.timer <= now:
                self._on_session(peer, peer.session.handle_timer(now))
        if now >= self._next_shuffle:
            self._next_shuffle = exchange.next_shuffle(now, self._rng)
            self._shuffle(news=now >= self._news_at)
            self._news_at = math.inf
        for address in self._policy.due(now):
            self._actions.append(a.Dial(address))

    def _shuffle(self, *, news: bool) -> None:
        """Tell peers that take them of other nodes (peer exchange): all if there is news.

        Without news, one random peer, as HyParView's periodic shuffle does.
        """
        takers = [
            p
            for p in self._peers.values()
            if p.counted and not p.closing and p.session.in_force(m.PEER_EXCHANGE)
        ]
        for peer in takers if news else self._rng.sample(takers, min(len(takers), 1)):
            self._offer(peer)

    def _offer(self, peer: _Peer) -> None:
        if peer.congested:  # what it would send would only queue behind what waits
            return
        sample = exchange.sample_for(
            self._policy.shareable(), peer_node=peer.node, peer_address=peer.address, rng=self._rng
        )
        if peer.session.offer_peers(sample, self._now.mono):
            self._dirty[peer.conn] = None

    def _on_session(self, peer: _Peer, events: Sequence[SessionEvent]) -> None:
        self._dirty[peer.conn] = None
        received = [raw for ev in events if isinstance(ev, RecordsReceived) for raw in ev.raws]
        if received and not self._ingest_from(peer, received):
            return
        store = self.node.store
        budget = WANT_REPLY_BUDGET
        for event in events:
            match event:
                case RecordsReceived():
                    pass  # ingested above, all at once
                case RecordsWanted(ids):
                    raws = store.raw_by_ids(ids, self._now.wall_ms, max_bytes=max(budget, 0))
                    budget -= sum(len(raw) for raw in raws)
                    peer.session.send_records(raws)
                case HaveAnnounced(ids):
                    wanted = self._takes(store.missing(ids))
                    if wanted:
                        peer.session.want(wanted)
                case HelloReceived(hello):
                    for address in hello.listen:
                        self._policy.hint(
                            address, HELLO, now=self._now.mono, reached_at=peer.address
                        )
                    if peer.counted:
                        self._offer(peer)
                case PeersOffered(addresses):
                    for address in addresses:
                        if (hint := exchange.taken_as(address, via=peer.address)) is not None:
                            self._policy.hint(hint, EXCHANGE, now=self._now.mono)
                case SessionClosed() as closed:
                    peer.why = peer.why or closed
                    banned_us = closed.by_peer and closed.code == m.GoodbyeCode.BANNED
                    if banned_us and closed.retry_after is not None:
                        self._policy.held_off(peer.node, self._now.mono + closed.retry_after)
        if peer.node == self._policy.swapped_in and peer.session.progress.rounds_finished:
            self._let_go_for(peer)

    def _let_go_for(self, peer: _Peer) -> None:
        """A swap's session has answered a round, so it is taken: let another neighbour go.
        (Not at once: a node that is full refuses only after hellos.)"""
        gone = self._policy.to_let_go()
        for other in self._peers.values():
            if other.node == gone and other is not peer and not other.session.closed:
                self._close(other, m.GoodbyeCode.NORMAL, SWAPPED)

    def _takes(self, ids: Sequence[bytes]) -> list[bytes]:
        """Of ``ids`` this node lacks, those to want: not the ones it refused lately."""
        return self._declined.without(ids, self._now.mono)

    def _ingest_from(self, peer: _Peer, raws: list[bytes]) -> bool:
        """Verify and store, in one batch, everything one chunk of bytes brought.

        False if a record did not verify: the session is over and its sender banned.
        """
        report = self.node.ingest(raws, now_ms=self._now.wall_ms, source=peer.origin)
        each = report.result.each
        self._fetched(peer, [record.id for record, _ in each])
        refused = [record.id for record, outcome in each if outcome in _REFUSED]
        if refused:
            self._declined.add(refused, self._now.mono)
        self._arrived(self._arrivals(each), peer.conn)
        ahead = sum(1 for _, outcome in each if outcome is Outcome.FUTURE)
        if ahead:
            self._actions.append(a.AheadOfClock(ahead))
        if not report.rejected:
            return True
        reason = m.invalid_record_reason(report.rejected[0].reason)
        self._close(peer, m.GoodbyeCode.INVALID_RECORD, reason)
        ban = self._bans.ban(
            peer.node, m.GoodbyeCode.INVALID_RECORD, reason, self._now.mono, self._now.wall_ms
        )
        if ban is not None:
            self._policy.banned(peer.node, ban.until)
            self._actions.append(a.Banned(peer.node, ban))
        return False

    def _fetched(self, peer: _Peer, ids: list[bytes]) -> None:
        """Records came from ``peer``: fetched from it, no longer to fetch from the others."""
        peer.session.progress.received(ids, self._now.mono)
        for other in self._peers.values():
            if other is not peer:
                other.session.progress.arrived_elsewhere(ids)

    def _sync_now(self) -> None:
        """Each open session that takes bytes reconciles now, unless it did so lately."""
        for peer in self._peers.values():
            takes_bytes = peer.counted and not peer.closing and not peer.congested
            if takes_bytes and peer.session.resync(self._now.mono):
                self._dirty[peer.conn] = None

    # -- local records ------------------------------------------------------------

    def _delete(self, key: str) -> None:
        try:
            record = self.node.delete(key, now_ms=self._now.wall_ms)
        except NodeError as exc:
            self._actions.append(a.Published((exc,)))
            return
        self._actions.append(a.Published((record,)))
        self._arrived([Arrival(record, Fate.NEW)], None)

    # -- dissemination --------------------------------------------------------------

    @staticmethod
    def _arrivals(each: Sequence[tuple[Record, Outcome]]) -> list[Arrival]:
        return [Arrival(record, _FATES.get(outcome, Fate.REJECTED)) for record, outcome in each]

    def _arrived(self, arrivals: list[Arrival], source: int | None) -> None:
        if not arrivals:
            return
        self._actions.append(a.Ingested(source, tuple(arrivals)))
        for arrival in arrivals:
            if arrival.fate is Fate.NEW:
                self._items = None
                break
        # Duplicates too: a strategy that prunes (Plumtree) learns from them.
        relay_to = self._relay_to
        if relay_to is None:
            relay_to = [c for c, p in self._peers.items() if p.counted and not p.closing]
            self._relay_to = relay_to
        for conn, raws in self._dissemination.route(arrivals, source, relay_to).items():
            peer = self._peers.get(conn)
            if peer is not None and raws:
                peer.session.push(raws, self._now.mono)
                self._dirty[conn] = None

    def _item_index(self) -> ItemIndex:
        """The Negentropy item set of live records, rebuilt only after changes."""
        if self._items is None:
            self._items = SortedItems.from_sorted(self.node.store.items(self._now.wall_ms))
        return self._items

    def _set_timer(self, peer: _Peer, when: float) -> None:
        """Keep ``_soonest`` true without a walk over all sessions at every event."""
        soonest = self._soonest
        if soonest is not None:
            if when < soonest:
                self._soonest = when
            elif peer.timer == soonest and when != soonest:
                self._soonest = None  # the earliest may have moved later
        peer.timer = when

    def _flush(self) -> None:
        """Hand the driver the bytes each session has for its peer, and the closes."""
        for conn in self._dirty:
            peer = self._peers.get(conn)
            if peer is None or peer.closing:
                continue
            self._set_timer(peer, peer.session.next_timer())  # every change marks it dirty
            closed = peer.session.closed
            if peer.congested and not closed:
                continue  # the bytes wait in the session, which drops pushes past its limit
            data = peer.session.data_to_send()
            if data:
                self._actions.append(a.Send(conn, data))
            if closed:
                peer.closing = True
                self._relay_to = None
                why = peer.why or SessionClosed(m.GoodbyeCode.NORMAL, "", by_peer=False)
                self._actions.append(a.Close(conn, why))


# What became of a record given to ``Ingest``, in a word (protocol/control.md, ``import``);
# a record that did not verify gets its ``Invalid`` reason instead.
VERDICTS = {
    Outcome.STORED: "new",
    Outcome.DUPLICATE: "known",
    Outcome.STALE: "superseded",
    Outcome.DEAD: "expired",
    Outcome.QUOTA: "quota",
    Outcome.FUTURE: "future",
}


def verdicts(raws: Sequence[bytes], report: IngestReport) -> tuple[str, ...]:
    """One verdict per record of ``raws``, in order: what the store did, or why it was rejected.

    ``Node.ingest`` keeps the order of the records that verified and of those that
    did not, and the same bytes always get the same verdict, so one walk pairs them.
    Each rejection is let go of the frames that raised it: they hold the whole batch,
    in a reference cycle the collector frees late, and a bundle of garbage would
    pile up megabytes of them.
    """
    stored = iter(report.result.each)
    rejected = iter(report.rejected)
    pending = next(stored, None)
    found = []
    for raw in raws:
        if pending is not None and pending[0].raw == raw:
            found.append(VERDICTS[pending[1]])
            pending = next(stored, None)
        else:
            error = next(rejected)
            error.__traceback__ = error.__context__ = None
            found.append(error.reason.value)
    return tuple(found)


def origin_of(source: str) -> bytes:
    """The name the store gives a peer's source for its authors' standing: 32 bytes.

    A source (an IPv4 address, an IPv6 /64) rather than a node id, since ids
    cost an attacker nothing, so that one host relaying through many
    identities counts as one source (``meshnode.store.standing``).
    """
    return hashlib.sha256(b"meshnode/source/" + source.encode()).digest()


def _refusal(closed: SessionClosed | None) -> str:
    """Why a node this one dialled ended the session before it counted, for ``peers --all``."""
    if closed is None or not closed.by_peer:
        return "the session ended before it began"
    said = f": {closed.reason}" if closed.reason else ""
    return f"the node refused the session (goodbye {closed.code}{said})"
