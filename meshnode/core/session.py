"""A gossip session with one peer, after the handshake: a sans-IO state machine.

Specification: ``protocol/peer.md`` §5. Bytes from the peer go in through
``receive_data``; bytes for the peer come out of ``data_to_send``; time comes
in as ``now`` (seconds, any monotonic origin) and leaves as ``next_timer``.
Work that needs the store is handed to the driver as events:

- ``RecordsReceived``: verify and store these, then hand what was new to
  the other sessions with ``push`` (never back to this one);
- ``RecordsWanted``: look these ids up and give the records to ``send_records``;
- ``HaveAnnounced``: find which of these ids we lack and ``want`` them.

Each session also keeps its ``progress`` (``FetchProgress``): the ids this
node wanted from the peer and has not received yet, and how fast they come,
so that a node catching up can say how much is left (``meshnode status``,
``meshnode sync --wait``). The driver reports arrivals with ``received``.

Flow: both sides send ``hello`` first. The side that dialed then runs a
Negentropy round at once and every ``reconcile_interval`` after; either side
runs one when it had to drop live pushes because the peer was slow. From each
round's have/need ids the initiator pushes what the peer lacks and wants what
it lacks and will take (``takes``). Live records are pushed as they are stored.
A side pings when it has sent nothing, or heard nothing, for ``ping_interval``; a
session that hears nothing for ``idle_timeout`` while it reads closes (protocol/peer.md §5.5).
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from msgspec import Struct, field, structs

from meshnode.core import messages as m
from meshnode.core.channel import ChannelError
from meshnode.core.messages import GoodbyeCode, PeerProtocolError
from meshnode.core.negentropy import (
    Initiator,
    ItemIndex,
    NegentropyError,
    Responder,
    Strategy,
)

RECORD_BATCH_BYTES = 256 * 1024

# Open with one fingerprint over everything (peers in sync settle in one round
# trip), then split a mismatched range in 4, listing ids below 4 items. Measured
# at n = 100,000 with 10 differences: 16-way splits (the reference's) cost
# 2.3 KB per difference, 8-way 0.94 KB, 4-way 0.68 KB, for one or two more
# round trips. The spec leaves splitting to the sender, so any peer copes.
STRATEGY = Strategy(open_with_single_fingerprint=True, buckets=4, id_list_below=4)
REFUSAL_WAIT = 5.0  # a refused peer's hello is awaited this long, to word the goodbye for it
LAG_CHECK_INTERVAL = 1.0  # how often a lagging session looks whether it may reconcile
SNAPSHOT_REUSE = 1.0  # a peer opening rounds faster than this gets the same item snapshot
ROUND_TIMEOUT = 60.0  # a round of ours the peer stopped answering is abandoned
# Negentropy questions a peer may ask: a bucket of 50 that refills at 20 a second. A full
# sync of 100,000 records asks about 5 a second; answering one can cost a tenth of a
# second of the store thread, which all peers share.
QUESTION_BURST = 50.0
QUESTION_RATE = 20.0
# peers messages (peer-exchange): a node sends at most a burst of 2, then one per 10 s, and
# takes a burst of 4: slack for messages that queued behind a slow link arriving together.
EXCHANGE_BURST = 4.0
EXCHANGE_RATE = 0.1
OFFER_BURST = 2.0
# Catching up (``FetchProgress``): the ids of one session kept as wanted and not yet
# received (about 100 bytes each); wants past them are only counted, up to a bound, so a
# peer that announces ids without end grows a number, never a set. The rate is taken over
# the last RATE_WINDOW whole seconds. A user's ``resync`` starts a round no sooner than
# RESYNC_INTERVAL after the last one began, nor while the last one's records still arrive.
MAX_TRACKED = 2_048  # ids kept per session: ~250 KB, so 128 sessions hold at most ~32 MB
MAX_UNTRACKED = 4_000_000  # what a peer can make the figure say, at most
RATE_WINDOW = 5  # seconds
RATE_FLOOR = 0.25  # seconds: a rate is never taken over less
RESYNC_INTERVAL = 3.0


class Channel(Protocol):
    """What a session needs of its transport: ``SecureChannel``, or a plain one in tests."""

    def seal(self, plaintext: bytes) -> bytes: ...

    def open(self, data: bytes) -> bytes: ...


class SessionConfig(Struct, frozen=True):
    # A side pings after 5 s of sending nothing, so a peer of 0.6.0 or later (it lists
    # peer-exchange, which came with that rule) that is silent for 10 s, twice that, is
    # gone: unplugged, asleep or out of range, and is replaced within seconds. A node of
    # 0.5.0 or before pings only after 15 s, and when we are the ones sending, its pong
    # may queue behind our data: it gets the 20 s it always had. A side also asks with a
    # ping after 5 s of hearing nothing, so a quiet peer answers rather than waits.
    ping_interval: float = 5.0
    idle_timeout: float = 10.0
    idle_timeout_before_0_6: float = 20.0
    reconcile_interval: float = 60.0
    frame_size_limit: int = 60_000  # of one Negentropy message
    max_outbox: int = 8 * 1024 * 1024  # unsent bytes before live pushes are dropped


class HelloReceived(Struct, frozen=True):
    hello: m.Hello


class RecordsReceived(Struct, frozen=True):
    raws: tuple[bytes, ...]


class RecordsWanted(Struct, frozen=True):
    ids: tuple[bytes, ...]


class HaveAnnounced(Struct, frozen=True):
    ids: tuple[bytes, ...]


class PeersOffered(Struct, frozen=True):
    """The peer shared addresses of other nodes: hints, never trusted (peer-exchange)."""

    addresses: tuple[str, ...]


class ReconcileFinished(Struct, frozen=True):
    have: int
    need: int


class SessionClosed(Struct, frozen=True):
    code: int
    reason: str
    by_peer: bool
    retry_after: int | None = None  # what a peer's goodbye asked us to wait, in seconds


Event = (
    HelloReceived
    | RecordsReceived
    | RecordsWanted
    | HaveAnnounced
    | PeersOffered
    | ReconcileFinished
    | SessionClosed
)


class State(enum.Enum):
    AWAITING_HELLO = "awaiting-hello"
    OPEN = "open"
    CLOSED = "closed"


class SessionStats(Struct):
    bytes_in: int = 0
    bytes_out: int = 0
    records_in: int = 0
    records_out: int = 0
    reconcile_bytes_in: int = 0
    reconcile_bytes_out: int = 0
    reconcile_rounds: int = 0
    reconcile_messages: int = 0
    pushes_dropped: int = 0
    last_reconcile: tuple[int, int] = field(default=(0, 0))  # (have, need) of the last round

    def snapshot(self) -> SessionStats:
        """A copy, for readers outside the engine."""
        return structs.replace(self)


class FetchView(Struct, frozen=True):
    """A session's catch-up as it stands, for readers outside the engine.

    ``to_fetch``: records wanted from the peer, not yet received; ``fetched``: those
    received since the catch-up began (when ``to_fetch`` last rose from 0); ``rate``:
    records per second over the last ``RATE_WINDOW`` seconds; ``reconciling``: a round
    of this node's runs, so more may be found missing; ``eta_s``: when what is known to
    be missing will be in, 0 when nothing is left, None while a round runs (the rest is
    not known yet) or nothing comes; ``rounds_finished``: rounds of this node's that
    finished; ``synced``: one did, and nothing is left to fetch.

    A round finds what is missing a frame of ids at a time (about 1,900), each reply
    queued behind the records wanted before it on the one stream, so ``to_fetch`` is
    what was found and not yet received: while a round runs, typically a frame or two
    of ids, not the total. Records the peer pushes unasked (its own round's) are not
    counted: this node did not know it lacked them.
    """

    to_fetch: int
    fetched: int
    rate: float
    reconciling: bool
    eta_s: float | None
    rounds_finished: int
    synced: bool


class FetchProgress:
    """What this node asked one peer for and has not received yet, and how fast it comes.

    Every id wanted is kept with the round of this node's in which it was last
    wanted (its generation), up to ``MAX_TRACKED`` ids; wants past those are
    only counted. An id leaves when its record arrives, from this peer
    (``received``: it counts as fetched) or another (``arrived_elsewhere``).
    When a round finishes, ids of older generations that it did not find
    missing again leave too: this node holds them by now, or the peer no
    longer does (superseded, expired), or its answer was cut short and the
    round wanted them again. So a figure that a lost answer left wrong is
    right again after the next round. Time comes in as ``now`` (seconds).
    """

    __slots__ = (
        "_began",
        "_buckets",
        "_generation",
        "_pending",
        "_untracked",
        "fetched",
        "last_fetched",
        "reconciling",
        "rounds_finished",
    )

    def __init__(self, now: float) -> None:
        self._pending: dict[bytes, int] = {}  # id -> generation
        self._untracked = [0, 0]  # wanted past MAX_TRACKED: in earlier generations, this one
        self._generation = 0  # rounds of this node's begun
        self._began = now  # when the current catch-up began
        self._buckets: deque[list[int]] = deque()  # [second, records fetched in it]
        self.fetched = 0
        self.last_fetched = float("-inf")
        self.reconciling = False  # a round of this node's runs (the session says)
        self.rounds_finished = 0

    @property
    def to_fetch(self) -> int:
        return len(self._pending) + self._untracked[0] + self._untracked[1]

    def asked(self, ids: Iterable[bytes], now: float) -> None:
        """``ids`` were wanted from the peer."""
        if not self.to_fetch:  # a new catch-up
            self.fetched = 0
            self._began = now
            self._buckets.clear()
        pending, generation, untracked = self._pending, self._generation, 0
        for record_id in ids:
            if record_id in pending or len(pending) < MAX_TRACKED:
                pending[record_id] = generation
            else:
                untracked += 1
        if untracked:
            self._untracked[1] = min(self._untracked[1] + untracked, MAX_UNTRACKED)

    def round_began(self) -> None:
        self.reconciling = True
        self._generation += 1
        self._untracked = [self._untracked[0] + self._untracked[1], 0]

    def round_finished(self) -> None:
        self.reconciling = False
        self.rounds_finished += 1
        generation = self._generation
        self._pending = {i: g for i, g in self._pending.items() if g == generation}
        self._untracked[0] = 0

    def received(self, ids: Sequence[bytes], now: float) -> None:
        """Records with these ids came from the peer."""
        if not self.to_fetch:
            return
        pending, untracked, fetched = self._pending, self._untracked, 0
        for record_id in ids:
            if pending.pop(record_id, None) is not None:
                fetched += 1
            elif untracked[0] or untracked[1]:
                # Past the ids kept, any record may be one that was wanted.
                untracked[0 if untracked[0] else 1] -= 1
                fetched += 1
        if not fetched:
            return
        self.fetched += fetched
        self.last_fetched = now
        second = math.floor(now)
        buckets = self._buckets
        if buckets and buckets[-1][0] == second:
            buckets[-1][1] += fetched
        else:
            buckets.append([second, fetched])
            while buckets[0][0] <= second - RATE_WINDOW:
                buckets.popleft()

    def arrived_elsewhere(self, ids: Iterable[bytes]) -> None:
        """Records with these ids came from another peer: no longer to fetch from this one."""
        if self._pending:
            for record_id in ids:
                self._pending.pop(record_id, None)

    def rate(self, now: float) -> float:
        """Records fetched per second: this second's and the ``RATE_WINDOW - 1`` before."""
        start = math.floor(now) - (RATE_WINDOW - 1)
        count = sum(n for second, n in self._buckets if second >= start)
        if not count:
            return 0.0
        return count / max(now - max(start, self._began), RATE_FLOOR)

    def view(self, now: float) -> FetchView:
        to_fetch, rate, reconciling = self.to_fetch, self.rate(now), self.reconciling
        if not to_fetch:
            eta: float | None = 0.0
        else:
            eta = to_fetch / rate if rate and not reconciling else None
        synced = self.rounds_finished > 0 and not to_fetch
        return FetchView(
            to_fetch, self.fetched, rate, reconciling, eta, self.rounds_finished, synced
        )


class PeerSession:
    def __init__(
        self,
        *,
        initiator: bool,
        channel: Channel,
        items: Callable[[], ItemIndex],
        hello: m.Hello,
        now: float,
        nonce: Callable[[], int],
        config: SessionConfig | None = None,
        takes: Callable[[Sequence[bytes]], Sequence[bytes]] = tuple,
    ) -> None:
        """``takes``: of the ids a round finds missing, those to want (not ones the node
        refused lately, which it would refuse again); by default all of them."""
        self.initiator = initiator
        self.config = config or SessionConfig()
        self.state = State.AWAITING_HELLO
        self.stats = SessionStats()
        self.progress = FetchProgress(now)
        self.peer_hello: m.Hello | None = None
        self._channel = channel
        self._items = items
        self._takes = takes
        self._nonce = nonce
        self._decoder = m.MessageDecoder()
        self._outbox = bytearray()
        self._round: Initiator | None = None
        self._responding: ItemIndex | None = None  # our snapshot for the peer's round
        self._responding_since = float("-inf")
        self._questions = QUESTION_BURST  # tokens left in the bucket
        self._questions_at = now
        self._peer_asked = float("-inf")  # when the peer last asked a Negentropy question
        self._exchanges = EXCHANGE_BURST
        self._exchanges_at = now
        self._offers = OFFER_BURST
        self._offers_at = now
        self._round_started = float("-inf")
        self._round_found = [0, 0]  # have, need so far in the running round
        self._lagging = False
        self._clock = now  # the latest time the driver told us; stamps what we send
        self._last_received = now
        self._last_sent = now
        self._asked = now  # when this side last pinged
        self._reading = True  # False while the driver reads nothing of the peer (congested)
        self._next_reconcile = now if initiator else float("inf")
        self._refusal: m.Goodbye | None = None
        self._refused_at = now
        self._features = frozenset(hello.features)
        self._send(hello)

    # -- driver API -------------------------------------------------------------

    def data_to_send(self) -> bytes:
        if not self._outbox:
            return b""
        data = bytes(self._outbox)
        self._outbox.clear()
        return data

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    @property
    def outbox_size(self) -> int:
        return len(self._outbox)

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        if self.state is State.CLOSED:
            return []
        self.stats.bytes_in += len(data)
        self._clock = self._last_received = now
        try:
            plaintext = self._channel.open(data)
        except ChannelError:
            # The channel is dead both ways: nothing can be sent on it, not even goodbye.
            self.state = State.CLOSED
            return [SessionClosed(GoodbyeCode.PROTOCOL, m.Why.UNDECRYPTABLE, by_peer=False)]
        try:
            events: list[Event] = []
            messages = self._decoder.feed(plaintext)
            if len(messages) > 1 and self._asks(messages) > 1:
                # A round's initiator waits for each reply before it sends again.
                raise PeerProtocolError(m.Why.RECONCILE_NOT_WAITING)
            for message in messages:
                events.extend(self._on_message(message, now))
                if self.closed:
                    break
            return events
        except PeerProtocolError as exc:
            return [self.close(GoodbyeCode.PROTOCOL, exc.why)]
        except NegentropyError:
            return [self.close(GoodbyeCode.PROTOCOL, m.Why.NEGENTROPY)]

    @staticmethod
    def _asks(messages: list[m.Message | m.Deferred]) -> int:
        return sum(isinstance(x, m.Reconcile) and x.role is not m.Role.REPLY for x in messages)

    def push(self, raws: Sequence[bytes], now: float) -> bool:
        """Push newly stored records; False (and a later reconcile) if the peer is too slow."""
        self._clock = now
        if self.state is not State.OPEN:
            return False
        if len(self._outbox) > self.config.max_outbox:
            self.stats.pushes_dropped += len(raws)
            self._lagging = True
            return False
        self.send_records(raws)
        return True

    def send_records(self, raws: Sequence[bytes]) -> None:
        if self.state is State.CLOSED:
            return
        if len(raws) == 1:  # a pushed record, the usual case
            self._send(m.Records((raws[0],)))
            self.stats.records_out += 1
            return
        batch: list[bytes] = []
        size = 0
        for raw in raws:
            if batch and (
                len(batch) >= m.MAX_RECORDS_PER_MESSAGE or size + len(raw) > RECORD_BATCH_BYTES
            ):
                self._send(m.Records(tuple(batch)))
                batch, size = [], 0
            batch.append(raw)
            size += len(raw)
        if batch:
            self._send(m.Records(tuple(batch)))
        self.stats.records_out += len(raws)

    def want(self, ids: Sequence[bytes]) -> None:
        self.progress.asked(ids, self._clock)
        for start in range(0, len(ids), m.MAX_IDS_PER_MESSAGE):
            self._send(m.Want(tuple(ids[start : start + m.MAX_IDS_PER_MESSAGE])))

    def reconcile(self, now: float) -> bool:
        """Start a Negentropy round now, unless one is running."""
        self._clock = now
        if self.state is not State.OPEN or self._round is not None:
            return False
        self._round_found = [0, 0]
        self._round_started = now
        self._round = Initiator(
            self._items(), strategy=STRATEGY, frame_size_limit=self.config.frame_size_limit
        )
        self.stats.reconcile_rounds += 1
        self.progress.round_began()
        self._lagging = False
        self._send_reconcile(m.Role.OPEN, self._round.initiate())
        if self.initiator:
            self._next_reconcile = now + self.config.reconcile_interval
        return True

    def resync(self, now: float) -> bool:
        """Start a round now because a user waits to be caught up; False if not started.

        Not while a round runs, nor sooner than ``RESYNC_INTERVAL`` after the
        last one began, nor while records the last one wanted still arrive, nor
        while the peer runs a round of its own (it asked within that time) and
        sends what it found we lack: a round now would want those again. So a
        client asking in a loop cannot make the node reconcile in one.
        """
        if max(self._round_started, self._peer_asked) + RESYNC_INTERVAL > now:
            return False
        if self.progress.to_fetch and self.progress.last_fetched + RESYNC_INTERVAL > now:
            return False
        return self.reconcile(now)

    def close(self, code: int, reason: str, retry_after: int | None = None) -> SessionClosed:
        """Say goodbye (the bytes are still in ``data_to_send``) and stop.

        ``retry_after`` goes on the wire only to a peer that announced the
        ``retry-after`` feature; a node of 0.1.0 would take it for a violation.
        """
        if self.state is not State.CLOSED:
            if not self.peer_has(m.RETRY_AFTER):
                retry_after = None
            self._send(m.Goodbye(code, reason, retry_after))
            self.state = State.CLOSED
        return SessionClosed(code, reason, by_peer=False)

    def refuse(self, code: int, reason: str, retry_after: int | None = None) -> list[Event]:
        """Close as soon as the peer's hello is in, so the goodbye can use its features.

        A refused session never opens: nothing is reconciled or pushed. A peer that
        sends no hello within ``REFUSAL_WAIT`` gets the goodbye without them.
        """
        if self.state is State.OPEN:
            return [self.close(code, reason, retry_after)]
        self._refusal = m.Goodbye(code, reason, retry_after)
        self._refused_at = self._clock
        return []

    def peer_has(self, feature: str) -> bool:
        """Whether the peer's hello listed ``feature`` (never before its hello)."""
        return self.peer_hello is not None and feature in self.peer_hello.features

    def in_force(self, feature: str) -> bool:
        """Whether both hellos listed ``feature``, so its messages may flow (§4.3)."""
        return feature in self._features and self.peer_has(feature)

    def offer_peers(self, addresses: Sequence[str], now: float) -> bool:
        """Share addresses of other nodes; False if not sent.

        Not sent unless ``peer-exchange`` is in force, nor faster than a burst of
        ``OFFER_BURST`` then one per 10 s, so that the peer's limit is never reached
        (the driver offers nothing while the link is congested, so that messages do
        not bunch up behind it).
        """
        if self.state is not State.OPEN or not addresses or not self.in_force(m.PEER_EXCHANGE):
            return False
        self._clock = now
        refill = (now - self._offers_at) * EXCHANGE_RATE
        offers = min(OFFER_BURST, self._offers + refill)
        self._offers_at = now
        if offers < 1:
            self._offers = offers
            return False
        self._offers = offers - 1
        self._send(m.Peers(tuple(addresses[: m.MAX_EXCHANGED])))
        return True

    def next_timer(self) -> float:
        if self.state is State.CLOSED:
            return float("inf")
        if self._refusal is not None:
            return self._refused_at + REFUSAL_WAIT
        return min(
            self._idle_deadline(),
            self._ping_due(),
            self._next_reconcile,
            self._clock + LAG_CHECK_INTERVAL if self._lagging else float("inf"),
            self._round_started + ROUND_TIMEOUT if self._round is not None else float("inf"),
        )

    def handle_timer(self, now: float) -> list[Event]:
        if self.state is State.CLOSED:
            return []
        self._clock = now
        if self._refusal is not None:
            if now < self._refused_at + REFUSAL_WAIT:
                return []
            refusal = self._refusal
            return [self.close(refusal.code, refusal.reason, refusal.retry_after)]
        if now >= self._idle_deadline():
            return [self.close(GoodbyeCode.IDLE, m.Why.IDLE)]
        if self._round is not None and now >= self._round_started + ROUND_TIMEOUT:
            self._round = None  # the peer stopped answering; a later round starts afresh
            self.progress.reconciling = False
        if now >= self._next_reconcile and not self.reconcile(now):
            self._next_reconcile = now + self.config.reconcile_interval
        if self._lagging and not self._outbox:
            self.reconcile(now)
        if now >= self._ping_due():
            self._asked = now
            self._send(m.Ping(self._nonce()))
        return []

    def stop_reading(self) -> None:
        """The driver reads nothing of the peer for now (it does not read what we send): its
        silence meanwhile is ours, and a peer that reads nothing at all is the driver's to
        drop (a write timeout)."""
        self._reading = False

    def resume_reading(self, now: float) -> None:
        """The driver reads again: silence counts afresh from ``now``."""
        self._reading = True
        self._last_received = max(self._last_received, now)

    def _idle_deadline(self) -> float:
        if not self._reading:
            return math.inf
        hello = self.peer_hello
        older = hello is not None and m.PEER_EXCHANGE not in hello.features
        timeout = self.config.idle_timeout_before_0_6 if older else self.config.idle_timeout
        return self._last_received + timeout

    def _ping_due(self) -> float:
        """When a ping is next due: after ``ping_interval`` of sending nothing, or of hearing
        nothing since the last ping asked (a peer busy only reading is asked, not waited for)."""
        interval = self.config.ping_interval
        return min(self._last_sent, max(self._last_received, self._asked)) + interval

    # -- the protocol -----------------------------------------------------------

    def _send(self, message: m.Message) -> None:
        encoded = m.encode(message)
        sealed = self._channel.seal(encoded)
        self._outbox += sealed
        self.stats.bytes_out += len(sealed)
        if isinstance(message, m.Reconcile):
            self.stats.reconcile_bytes_out += len(encoded)
        self._last_sent = self._clock

    def _send_reconcile(self, role: m.Role, payload: bytes) -> None:
        self.stats.reconcile_messages += 1
        self._send(m.Reconcile(role, payload))

    def _on_message(self, message: m.Message | m.Deferred, now: float) -> list[Event]:
        if isinstance(message, m.Deferred):
            if self.state is State.AWAITING_HELLO:
                raise PeerProtocolError(m.Why.HELLO_FIRST)
            if not self.in_force(m.FEATURE_OF_TYPE[message.kind]):
                return []  # a feature one of us did not list: ignored unread
            message = m.parse_deferred(message)
        if self.state is State.AWAITING_HELLO:
            if not isinstance(message, m.Hello):
                raise PeerProtocolError(m.Why.HELLO_FIRST)
            self.peer_hello = message
            if message.version < m.PROTOCOL_VERSION:
                return [self.close(GoodbyeCode.VERSION, m.Why.NO_COMMON_VERSION)]
            if self._refusal is not None:
                refusal = self._refusal
                return [self.close(refusal.code, refusal.reason, refusal.retry_after)]
            self.state = State.OPEN
            if self.initiator:
                self.reconcile(now)
            return [HelloReceived(message)]
        match message:  # the most frequent first
            case m.Records(raws):
                self.stats.records_in += len(raws)
                return [RecordsReceived(raws)]
            case m.Hello():
                raise PeerProtocolError(m.Why.HELLO_TWICE)
            case m.Reconcile(role, payload):
                if len(payload) > self.config.frame_size_limit:
                    raise PeerProtocolError(m.Why.RECONCILE_TOO_LARGE)
                self.stats.reconcile_bytes_in += len(m.encode(message))
                self.stats.reconcile_messages += 1
                return self._on_reconcile(role, payload, now)
            case m.Want(ids):
                return [RecordsWanted(ids)]
            case m.Have(ids):
                return [HaveAnnounced(ids)]
            case m.Ping(nonce):
                self._send(m.Pong(nonce))
            case m.Pong():
                pass
            case m.Goodbye(code, reason, retry_after):
                self.state = State.CLOSED
                return [SessionClosed(code, reason, by_peer=True, retry_after=retry_after)]
            case m.Peers(addresses):
                refill = (now - self._exchanges_at) * EXCHANGE_RATE
                self._exchanges = min(EXCHANGE_BURST, self._exchanges + refill) - 1
                self._exchanges_at = now
                if self._exchanges < 0:
                    return [self.close(GoodbyeCode.OVERLOADED, m.Why.TOO_MANY_EXCHANGES)]
                return [PeersOffered(addresses)]
        return []

    def _on_reconcile(self, role: m.Role, payload: bytes, now: float) -> list[Event]:
        if role is not m.Role.REPLY:
            refill = (now - self._questions_at) * QUESTION_RATE
            self._questions = min(QUESTION_BURST, self._questions + refill)
            self._questions_at = now
            if self._questions < 1:
                return [self.close(GoodbyeCode.OVERLOADED, m.Why.TOO_MANY_QUESTIONS)]
            self._questions -= 1
            self._peer_asked = now
            # One snapshot of our items for the whole of the peer's round, so records
            # stored meanwhile neither change fingerprints mid-round nor cost a rebuild;
            # a peer opening rounds back to back cannot make us rebuild each time.
            fresh = role is m.Role.OPEN and now >= self._responding_since + SNAPSHOT_REUSE
            if fresh or self._responding is None:
                self._responding = self._items()
                self._responding_since = now
            responder = Responder(
                self._responding, strategy=STRATEGY, frame_size_limit=self.config.frame_size_limit
            )
            self._send_reconcile(m.Role.REPLY, responder.reconcile(payload))
            return []
        if self._round is None:
            raise PeerProtocolError(m.Why.RECONCILE_UNASKED)
        step = self._round.reconcile(payload)
        self._round_found[0] += len(step.have_ids)
        self._round_found[1] += len(step.need_ids)
        events: list[Event] = []
        wanted = self._takes(step.need_ids) if step.need_ids else ()
        if wanted:
            self.want(wanted)
        if step.have_ids:
            events.append(RecordsWanted(step.have_ids))
        if step.message is not None:
            self._send_reconcile(m.Role.CONTINUE, step.message)
        else:
            self._round = None
            have, need = self._round_found
            self.stats.last_reconcile = (have, need)
            self.progress.round_finished()
            events.append(ReconcileFinished(have, need))
        return events
