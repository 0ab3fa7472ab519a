"""The peer edge: TCP listeners and dialers, carrying out what the ``Mesh`` engine asks.

The engine (``meshnode.engine.mesh``) decides; this module moves bytes. Every
event (a finished handshake, bytes read, a connection congested, drained or
lost, a dial that failed, a timer) goes to the engine through ``step`` on the
store thread, one at a time, so the engine is only ever touched by one thread;
the actions it returns (bytes to send, a connection to close, an address to
dial, records for watchers, a ban to log) are carried out on the trio thread.
Whom to dial and when, backoff, bans and the connection limits are the
engine's peer policy (``meshnode.engine.peering``); each ``Dial`` here is one
attempt, whose failure the engine hears as ``DialFailed``.

Inbound connections are admitted by ``meshnode.engine.admission`` (``protocol/peer.md``
§5.8): each handshaking one runs in a cancel scope of its own, which eviction
cancels and whose deadline is short until message 1 has verified, so that a
flood of connections that never finish cannot keep peers with the network key
out. Refusals, evictions, failed handshakes and dials that reach no one are logged through
``LogThrottle``: the first in full, then at most one summing-up line per kind
every ``LOG_INTERVAL`` seconds, so a flood cannot flood the log either.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import math
import os
import secrets
import socket
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import trio
from msgspec import Struct, field

from meshnode.core.addresses import format_address, parse_address
from meshnode.core.handshake import Established, HandshakeError, PeerHandshake, ReplayCache
from meshnode.core.identity import Identity
from meshnode.core.messages import GoodbyeCode, Why
from meshnode.core.nodeid import encode_node_id
from meshnode.core.session import SessionClosed
from meshnode.core.x25519 import KEY_SIZE, KeyPair
from meshnode.engine.actions import (
    Action,
    AheadOfClock,
    Banned,
    Close,
    Dial,
    Ingested,
    Send,
    Unbanned,
)
from meshnode.engine.admission import (
    EVICTED,
    Admission,
    Admitted,
    Limits,
    LogThrottle,
    Refusal,
    source_of,
)
from meshnode.engine.dissemination import Fate
from meshnode.engine.events import (
    Congested,
    DialFailed,
    Drained,
    Event,
    Instant,
    Listening,
    Lost,
    Opened,
    Received,
    Reconfigure,
    Stop,
    Tick,
    Unban,
)
from meshnode.engine.mesh import Mesh
from meshnode.engine.settings import PeerSettings, Settings
from meshnode.runtime.clock import WallClock
from meshnode.runtime.combine import Combiner
from meshnode.runtime.storethread import StoreThread
from meshnode.runtime.watch import WatchHub
from meshnode.store.base import DAY_MS, MAX_CREATED_AHEAD_MS, StoreError

log = logging.getLogger(__name__)

RECEIVE_SIZE = 65536
SEND_BUFFER_LIMIT = 1024 * 1024  # unsent bytes per connection before it counts as congested
WRITE_TIMEOUT = 30.0  # a peer that takes no WRITE_CHUNK for this long is dropped
WRITE_CHUNK = 64 * 1024  # so a slow reader that keeps reading is never taken for a dead one
CLOSING_GRACE = 2.0  # a closing connection's last bytes get this long to leave
LINGER = 1.0  # then what the peer still sends is read and dropped for this long, at most
AHEAD_LOG_INTERVAL = 600.0  # at most one line this often about records from the future
MAX_CONNECTIONS = 128  # peer connections at once, handshaking ones included
MAX_HALF_OPEN = 32  # inbound connections still handshaking, from all sources together
MAX_HALF_OPEN_PER_SOURCE = 4  # ... from one IPv4 address or IPv6 /64
MAX_SESSIONS_PER_SOURCE = 16  # established inbound sessions from one source
MAX_TICKS_PER_S = 100  # a bound on engine ticks, whatever the engine asks for
LOG_INTERVAL = 10.0  # seconds between two lines of one kind about refusals or failed handshakes
WRONG_KEY_WINDOW = 600.0  # seconds a handshake failed on the network key is shown (status, doctor)
MAX_WRONG_KEY_HOSTS = 16  # hosts remembered for it; the one heard from longest ago goes first
# Why a dial came to nothing, for ``peers --all`` and ``doctor``, by what the connection ended in.
# Noise XXpsk0 mixes the network key into message 1: a node with another key cannot read it and
# hangs up without answering, which a dialler sees only as a connection closed mid-handshake.
_DIAL_OUTCOMES = {
    "lost": "closed during the handshake: most likely the node has another network key",
    "refused": "refused here: too many sessions with that address's source",
    "self": "this node itself",
}


class ListenError(Exception):
    """The peer listeners cannot be opened (a port in use, an address not here)."""


class Doorbell:
    """Wakes one waiting task; rings while nobody waits are remembered once."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[None](1)

    def ring(self) -> None:
        with contextlib.suppress(trio.WouldBlock):
            self._send.send_nowait(None)

    async def wait(self) -> None:
        await self._receive.receive()


class Connection(Struct, eq=False):
    """A peer connection's trio side: the bytes waiting for its writer.

    Once a ``Send`` leaves more than ``SEND_BUFFER_LIMIT`` unsent, the connection
    is ``congested``: the reader stops reading at once, and the engine hears
    ``Congested`` and keeps new bytes in the session's outbox, where the session
    notices and stops live pushes. A peer that does not take our answers gets no
    more of its questions answered, so it cannot make us buffer without bound.
    ``announced`` is set once the engine has heard it, so that ``Drained`` never
    overtakes it.
    """

    stream: trio.abc.Stream
    address: str
    initiator: bool
    node: bytes
    handshake_bytes: int
    doorbell: Doorbell = field(default_factory=Doorbell)
    pending: bytearray = field(default_factory=bytearray)
    congested: bool = False
    closing: bool = False
    drained: trio.Event = field(default_factory=trio.Event)
    announced: trio.Event = field(default_factory=trio.Event)
    scope: trio.CancelScope | None = None  # the connection's tasks, once they run
    why: str | None = None  # why the session ended, for the line that says it did
    told: bool = False  # logged as the node's connection (event=connected at INFO)


class HalfOpen(Struct, eq=False):
    """An inbound connection still handshaking: what it takes to evict it and say so."""

    address: str
    source: str
    accepted: float
    scope: trio.CancelScope  # cancelled to evict; its deadline is the handshake's
    evicted: bool = False


class Shaken(Struct, frozen=True):
    """A finished handshake, and the bytes it took (for ``meshnode peers``)."""

    established: Established
    handshake_bytes: int


class PeerService:
    """The peer edge of one daemon: runs the connections and timers a ``Mesh`` asks for.

    Every event goes to the engine through ``step``, on the store thread, and the
    actions that come back are carried out on the trio thread at once, with no
    checkpoint in between, so that the bytes of two steps reach a connection in
    the order the engine made them.
    """

    def __init__(
        self,
        mesh: Mesh,
        identity: Identity,
        *,
        store_thread: StoreThread,
        hub: WatchHub,
        config: PeerSettings,
        wall_clock_ms: WallClock,
    ) -> None:
        self.mesh = mesh
        self.store_thread = store_thread
        self.hub = hub
        self.config = config
        self._identity = identity
        self._wall_clock_ms = wall_clock_ms
        # Told of every address a dial failed on: discovery, which may doubt what it heard.
        self.on_dial_failed: Callable[[str], None] = lambda address: None
        # Fresh per process, never on disk; from the kernel's generator, as the ephemeral keys are.
        self._static_key = KeyPair(secrets.token_bytes(KEY_SIZE))
        self._replays = ReplayCache()
        self._connections: dict[int, Connection] = {}
        self._conns = itertools.count(1)
        self._nursery: trio.Nursery | None = None
        self._timer_due = -math.inf  # when the engine wants its next tick
        self._timer_bell = Doorbell()
        self._engine: Combiner[Sequence[Event], list[Action]] = Combiner(self._run_steps)
        self._stopping = False  # saying goodbye: no new connections
        self._ahead_of_clock = 0  # records refused as created in the future, since last said
        self._ahead_logged = -math.inf
        self.refused = 0  # valid records from peers the store did not take, since the start
        self._refused_unsaid = 0
        self._refused_logged = -math.inf
        self._admission = Admission(
            Limits(
                connections=MAX_CONNECTIONS,
                half_open=MAX_HALF_OPEN,
                half_open_per_source=MAX_HALF_OPEN_PER_SOURCE,
                sessions_per_source=MAX_SESSIONS_PER_SOURCE,
            )
        )
        self._half_open: dict[int, HalfOpen] = {}  # by admission ticket
        self._refusals = LogThrottle("peer connections refused or evicted", LOG_INTERVAL)
        self._failures = LogThrottle("peer handshakes failed or timed out", LOG_INTERVAL)
        self._unreached = LogThrottle("peer dials that reached no one", LOG_INTERVAL)
        # Hosts whose message 1 did not decrypt lately, last first: nodes of another network
        # (or scanners) dialling this one; ``doctor`` says so, since nothing else would.
        self._wrong_key: OrderedDict[str, float] = OrderedDict()
        self.listening: list[str] = []

    # -- the engine ---------------------------------------------------------------

    async def step(self, event: Event) -> list[Action]:
        """Hand the engine one event; carry out what it asks; return its actions."""
        return await self.steps((event,))

    async def steps(self, events: Sequence[Event]) -> list[Action]:
        """Hand the engine several events at one instant (an mDNS sighting's addresses);
        carry out what it asks; return its actions.

        Steps asked for while a trip to the store thread is under way go together in
        the next (``meshnode.runtime.combine``).
        """
        return await self._engine(events)

    async def _run_steps(self, batch: list[Sequence[Event]]) -> list[list[Action] | Exception]:
        """One trip to the store thread for every step queued; their actions carried out
        in the order the engine made them (each connection's frames are numbered)."""
        now = Instant(trio.current_time(), self._wall_clock_ms())
        results, due = await self.store_thread.run(self._handle, batch, now)
        for result in results:
            if not isinstance(result, Exception):
                self._apply(result)
        if due < self._timer_due:
            self._timer_due = due
            self._timer_bell.ring()
        return results

    def _handle(
        self, batch: list[Sequence[Event]], now: Instant
    ) -> tuple[list[list[Action] | Exception], float]:
        """On the store thread: each step's actions (or what it raised: a store error, say,
        is its caller's, not its neighbours'), and when the engine next wants a tick."""
        results: list[list[Action] | Exception] = []
        for events in batch:
            try:
                results.append(
                    [action for event in events for action in self.mesh.handle(event, now)]
                )
            except Exception as exc:
                results.append(exc)
        return results, self.mesh.next_timer()

    def _apply(self, actions: list[Action]) -> None:
        now = trio.current_time()
        for action in actions:
            match action:
                case Send(conn, data):
                    connection = self._connections.get(conn)
                    if connection is not None:
                        connection.pending += data
                        connection.doorbell.ring()
                        if len(connection.pending) > SEND_BUFFER_LIMIT and not connection.congested:
                            connection.congested = True
                            assert self._nursery is not None, "bytes are sent only while running"
                            self._nursery.start_soon(self._announce_congestion, conn, connection)
                case Close(conn, why):
                    connection = self._connections.get(conn)
                    if connection is not None:
                        self._close(connection, why)
                case Dial(address) if not self._stopping:
                    assert self._nursery is not None, "dials are asked for only while running"
                    self._nursery.start_soon(self._dial, address)
                case Ingested():
                    if action.stored:
                        self.hub.publish(action.stored)
                    if action.conn is not None:
                        self._note_refused(action, now)
                case AheadOfClock(count):
                    self._note_ahead_of_clock(count, now)
                case Banned(node, ban):
                    log.warning(
                        "event=banned peer=%s seconds=%d reason=%r",
                        encode_node_id(node),
                        ban.seconds_left(now),
                        ban.reason,
                    )

    def _note_refused(self, ingested: Ingested, now: float) -> None:
        """Count valid records from peers the store would not take, and say so now and then.

        Past an author's quota (10,000 records, 8 MiB) or the store's total, a
        catching-up node would otherwise just seem to hold less than its peers.
        """
        refused = sum(1 for a in ingested.arrivals if a.fate is Fate.REJECTED)
        if not refused:
            return
        self.refused += refused
        self._refused_unsaid += refused
        if now < self._refused_logged + AHEAD_LOG_INTERVAL:
            return
        log.warning(
            "event=records_refused count=%d total=%d: valid records from peers that this"
            " node's store did not take (an author over its quota, the store full, expired, or"
            " created ahead of this node's clock); see store_max_* in the configuration",
            self._refused_unsaid,
            self.refused,
        )
        self._refused_unsaid, self._refused_logged = 0, now

    def _close(self, connection: Connection, why: SessionClosed) -> None:
        connection.closing = True
        connection.doorbell.ring()
        self._log_goodbye(connection, why)
        if connection.scope is not None:
            # Its reader or writer may be blocked on a silent peer: bound the wait.
            deadline = trio.current_time() + CLOSING_GRACE
            connection.scope.deadline = min(connection.scope.deadline, deadline)

    def _note_ahead_of_clock(self, count: int, now: float) -> None:
        """Say, now and then, that peers' records are refused as created in the future.

        Valid records are refused only when this node's clock is far behind (a Pi
        without network time) or theirs far ahead: without a word, the node would
        just seem not to sync.
        """
        self._ahead_of_clock += count
        if now < self._ahead_logged + AHEAD_LOG_INTERVAL:
            return
        clock = datetime.fromtimestamp(self._wall_clock_ms() / 1000, UTC)
        log.warning(
            "event=records_ahead_of_clock count=%d: records from peers claim to be created"
            " more than %d days ahead of this node's clock, which reads %s; they are not"
            " stored until it catches up. Is the clock set right?",
            self._ahead_of_clock,
            MAX_CREATED_AHEAD_MS // DAY_MS,
            clock.isoformat(timespec="seconds"),
        )
        self._ahead_of_clock, self._ahead_logged = 0, now

    def _log_goodbye(self, connection: Connection, closed: SessionClosed) -> None:
        """Remember why the session ended, for the one line that says it disconnected.

        A frame that does not decrypt earns no ban (§5.7): on an authenticated
        channel it may come from anyone on the path tampering with TCP.
        """
        if closed.reason == Why.UNDECRYPTABLE:
            connection.why = f"{closed.reason}; closed without a goodbye, no ban"
        elif closed.code == GoodbyeCode.NORMAL:
            if closed.reason:  # why a peer left on purpose: shutting down, another network...
                said = "got" if closed.by_peer else "sent"
                connection.why = f"{said} goodbye 0 ({closed.reason})"
        elif not closed.by_peer:
            connection.why = f"sent goodbye {closed.code} ({closed.reason})"
        else:
            connection.why = f"got goodbye {closed.code} ({closed.reason})"
            if closed.code == GoodbyeCode.BANNED and closed.retry_after is not None:
                log.warning(
                    "event=banned_by_peer peer=%s retry_in_s=%d",
                    encode_node_id(connection.node),
                    closed.retry_after,
                )

    # -- what the rest of the daemon uses -----------------------------------------

    async def reconfigure(self, settings: Settings) -> None:
        """New settings from a reload; a new network key is used by handshakes from now on."""
        self.config = settings.peers
        await self.step(Reconfigure(settings))

    @property
    def sessions(self) -> int:
        return len(self._connections)

    @property
    def wrong_key_from(self) -> list[str]:
        """Hosts whose handshakes failed on the network key within ``WRONG_KEY_WINDOW``."""
        since = trio.current_time() - WRONG_KEY_WINDOW
        return [host for host, at in reversed(self._wrong_key.items()) if at >= since]

    async def ban_list(self) -> list[dict[str, Any]]:
        """The bans in force, for ``meshnode peers --bans``."""
        now = trio.current_time()
        bans = await self.store_thread.run(self.mesh.bans_in_force, now)
        return [
            {
                "node_id": encode_node_id(ban.node),
                "code": ban.code,
                "reason": ban.reason,
                "since_ms": ban.since_ms,
                "until_ms": ban.until_ms,
                "retry_after": ban.seconds_left(now),
            }
            for ban in bans
        ]

    async def unban(self, node: bytes) -> bool:
        """Lift a ban by hand; the node is dialled again at once, if it is a peer."""
        lifted = any(
            isinstance(action, Unbanned) and action.lifted
            for action in await self.step(Unban(node))
        )
        if lifted:
            log.info("event=unbanned peer=%s", encode_node_id(node))
        return lifted

    async def peer_list(self) -> list[dict[str, Any]]:
        found = []
        for peer in await self.store_thread.run(self.mesh.peers, trio.current_time()):
            stats, progress = peer.stats, peer.progress
            connection = self._connections.get(peer.conn)
            found.append(
                {
                    "node_id": encode_node_id(peer.node),
                    "address": peer.address,
                    "direction": "out" if peer.initiator else "in",
                    "since_ms": peer.since_ms,
                    "bytes_in": stats.bytes_in,
                    "bytes_out": stats.bytes_out,
                    "records_in": stats.records_in,
                    "records_out": stats.records_out,
                    "state": peer.state,
                    "handshake_bytes": connection.handshake_bytes if connection else 0,
                    "reconcile_bytes_in": stats.reconcile_bytes_in,
                    "reconcile_bytes_out": stats.reconcile_bytes_out,
                    "reconcile_messages": stats.reconcile_messages,
                    "reconcile_rounds": stats.reconcile_rounds,
                    "last_reconcile": {
                        "have": stats.last_reconcile[0],
                        "need": stats.last_reconcile[1],
                    },
                    "pushes_dropped": stats.pushes_dropped,
                    "reconcile_rounds_finished": progress.rounds_finished,
                    "to_fetch": progress.to_fetch,
                    "fetched": progress.fetched,
                    "rate": round(progress.rate, 1),
                    "reconciling": progress.reconciling,
                    "eta_s": None if progress.eta_s is None else round(progress.eta_s, 1),
                    "synced": progress.synced,
                }
            )
        return found

    async def overlay(self) -> dict[str, int]:
        """This node's place in the overlay, for ``meshnode status``."""
        inbound, outbound = await self.store_thread.run(self.mesh.sessions)
        return {
            "degree": inbound + outbound,
            "inbound": inbound,
            "outbound": outbound,
            "outbound_slots": self.config.outbound_slots,
            "max_peers": self.config.max_peers,
        }

    async def address_list(self) -> list[dict[str, Any]]:
        """Every address the peer policy knows, for ``meshnode peers --all``."""
        now = trio.current_time()
        return [
            {
                "address": known.address,
                "source": known.origin,
                "state": known.state,
                "failures": known.failures,
                "last_failure": known.last_failure or None,
                "next_dial_s": (
                    round(max(known.next_dial - now, 0.0), 1)
                    if known.state == "idle" and known.dialled
                    else None
                ),
                "node_id": encode_node_id(known.node) if known.node else None,
            }
            for known in await self.store_thread.run(self.mesh.addresses)
        ]

    async def goodbye(self) -> None:
        """Tell every peer we are leaving, best effort, before the daemon exits.

        The goodbyes go through each connection's writer like any other bytes
        (a second sender on a stream would collide with a writer blocked on a
        peer that does not read); the caller bounds how long this may take.
        """
        self._stopping = True
        await self.step(Stop())
        while any(c.pending for c in self._connections.values()):
            await trio.sleep(0.01)

    # -- tasks ----------------------------------------------------------------------

    async def open_listeners(self) -> list[trio.SocketListener]:
        """Bind every listen address now, so a port in use fails start-up plainly."""
        listeners: list[trio.SocketListener] = []
        where = ""
        try:
            for host, port in self.config.listen:
                where = format_address(host, port)  # the one that failed, if one does
                listeners.extend(await trio.open_tcp_listeners(port, host=host))
        except OSError as exc:
            for listener in listeners:
                await listener.aclose()
            raise ListenError(
                f"cannot listen for peers on {where}: {exc.strerror or exc}"
            ) from None
        for listener in listeners:
            sockname = listener.socket.getsockname()
            self.listening.append(format_address(sockname[0], sockname[1]))
        return listeners

    async def run(self, listeners: list[trio.SocketListener]) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for listener in listeners:
                nursery.start_soon(self._serve, listener)
            if self.listening:
                log.info("event=listening addresses=%s", ",".join(self.listening))
            await self.step(Listening(tuple(self.listening)))
            nursery.start_soon(self._timers)
            nursery.start_soon(self._log_summaries)

    async def _timers(self) -> None:
        """Tick the engine when it asked to be, and at least once a second.

        ``step`` rings the bell when an event brings the next timer forward (a
        lost session's redial, a lifted ban), so a dial is never late.
        """
        ticked = -math.inf
        while True:
            with trio.move_on_at(min(self._timer_due, trio.current_time() + 1.0)):
                await self._timer_bell.wait()
            if self._timer_due <= trio.current_time():
                # However the engine asks, never more than MAX_TICKS_PER_S ticks a second:
                # an engine that kept asking for a tick it has no use for would spin a core.
                await trio.sleep_until(ticked + 1 / MAX_TICKS_PER_S)
                ticked = trio.current_time()
                self._timer_due = math.inf
                try:
                    await self.step(Tick())
                except StoreError as exc:  # a reconciliation that could not read the store
                    log.error("event=store_error where=peer_timer error=%r", str(exc))
                    self._timer_due = trio.current_time() + 1.0
            else:
                self._timer_due = await self.store_thread.run(self.mesh.next_timer)

    async def _serve(self, listener: trio.SocketListener) -> None:
        async with listener, trio.open_nursery() as nursery:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    # Out of file descriptors or memory: a flood must not end the daemon.
                    log.warning("event=accept_failed error=%r", exc.strerror or str(exc))
                    await trio.sleep(0.1)
                    continue
                if self._stopping:
                    await stream.aclose()
                    continue
                host, address = _peer_host_and_address(stream)
                source = source_of(host)
                ticket = self._admit(source, address)
                if ticket is None:
                    await stream.aclose()
                else:
                    nursery.start_soon(self._guarded, stream, False, address, source, ticket)

    def _admit(self, source: str, address: str) -> int | None:
        """Admit an inbound connection, evicting the half-open one it replaces; None: refused.

        Runs without a checkpoint from the decision to the eviction, so the table
        and the connections it names never disagree.
        """
        now = trio.current_time()
        decision = self._admission.arrive(source, now)
        if not isinstance(decision, Admitted):
            self._note_refusal(source, address, decision.why)
            return None
        if decision.evicted is not None:
            victim = self._half_open[decision.evicted]
            victim.evicted = True
            victim.scope.cancel()
            self._note_refusal(victim.source, victim.address, EVICTED)
        scope = trio.CancelScope(deadline=now + self.config.message_1_timeout)
        self._half_open[decision.ticket] = HalfOpen(address, source, now, scope)
        return decision.ticket

    def _note_refusal(self, source: str, address: str, why: str) -> None:
        if self._refusals.note(source, why, trio.current_time()):
            log.warning(
                "event=peer_refused address=%s why=%r (more are summed up every %.0f s)",
                address,
                why,
                LOG_INTERVAL,
            )

    def _note_failure(self, source: str, address: str, reason: str, detail: str) -> None:
        if reason == "network-key":
            host = address.rsplit(":", 1)[0].strip("[]")
            self._wrong_key[host] = trio.current_time()
            self._wrong_key.move_to_end(host)
            while len(self._wrong_key) > MAX_WRONG_KEY_HOSTS:
                self._wrong_key.popitem(last=False)
        if self._failures.note(source, reason, trio.current_time()):
            log.info(
                "event=handshake_failed address=%s detail=%r (more are summed up every %.0f s)",
                address,
                detail,
                LOG_INTERVAL,
            )

    async def _log_summaries(self) -> None:
        """Log the lines that sum up refusals and failed handshakes, each when it is due."""
        throttles = (
            (self._refusals, logging.WARNING),
            (self._failures, logging.INFO),
            (self._unreached, logging.INFO),
        )
        while True:
            now = trio.current_time()
            for throttle, level in throttles:
                line = throttle.summary(now)
                if line is not None:
                    log.log(level, "%s", line)
            # A throttle quiet now cannot be due sooner than an interval from now.
            await trio.sleep_until(min(now + LOG_INTERVAL, *(t.due for t, _ in throttles)))

    async def _dial(self, address: str) -> None:
        """Dial what the engine asked for, once; it hears how it went."""
        host, port = parse_address(address)
        assert host is not None, "the engine dials only addresses with a host"
        stream: trio.SocketStream | None = None
        why = f"no answer within {self.config.connect_timeout:g} s"
        with trio.move_on_after(self.config.connect_timeout):
            try:
                stream = await trio.open_tcp_stream(host, port)
            except OSError as exc:
                why = _unreachable(exc)
        if stream is None:
            if self._unreached.note(host, why, trio.current_time()):
                log.info(
                    "event=dial_failed address=%s why=%r (more are summed up every %.0f s)",
                    address,
                    why,
                    LOG_INTERVAL,
                )
            await self.step(DialFailed(address, why=why))
            if why not in _OUR_SIDE:  # this node's link is down: says nothing of the peer
                self.on_dial_failed(address)
            return
        ticket = self._admission.dial(trio.current_time())
        outcome = await self._guarded(stream, True, address, source_of(host), ticket)
        if outcome == "self":
            log.info("event=dialled_self address=%s: not dialling it again", address)
        if outcome != "session":
            why = _DIAL_OUTCOMES.get(outcome, outcome)
            await self.step(DialFailed(address, is_self=outcome == "self", why=why))
            self.on_dial_failed(address)

    async def _guarded(
        self, stream: trio.SocketStream, initiator: bool, address: str, source: str, ticket: int
    ) -> str:
        """Run one connection; whatever happens, the daemon carries on."""
        outcome = "lost"
        try:
            async with stream:
                outcome = await self._connection(stream, initiator, address, source, ticket)
        except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the peer went away
        except* trio.TooSlowError:
            log.info("event=peer_stalled address=%s seconds=%.0f: dropped", address, WRITE_TIMEOUT)
        except* StoreError as group:
            log.error("event=store_error address=%s error=%r", address, str(group.exceptions[0]))
        except* Exception:
            log.exception("a connection with %s failed; the daemon carries on", address)
        finally:
            self._admission.leave(ticket)
            self._half_open.pop(ticket, None)
        return outcome

    async def _connection(
        self, stream: trio.SocketStream, initiator: bool, address: str, source: str, ticket: int
    ) -> str:
        network_key = self.config.network_key
        handshake = PeerHandshake(
            initiator=initiator,
            identity=self._identity,
            static_key=self._static_key,
            network_key=network_key,
            rng=lambda: secrets.token_bytes(32),
            replay_cache=None if initiator else self._replays,
        )
        shaken = await self._shake(stream, handshake, address, source, ticket)
        if isinstance(shaken, str):
            return shaken
        if network_key != self.config.network_key:
            return "lost"  # begun under the network this node has just left
        half_open = self._half_open.pop(ticket, None)
        if half_open is not None and half_open.evicted:
            return "evicted"  # it finished just as a newcomer took its place
        if not self._admission.establish(ticket):
            self._note_refusal(source, address, Refusal.SOURCE_FULL)
            return "refused"
        established = shaken.established
        node = established.remote_node
        conn = next(self._conns)
        connection = Connection(
            stream, address, initiator, node, shaken.handshake_bytes - len(established.leftover)
        )
        # Two nodes that hear of each other at once dial each other at once, and the
        # duplicate rule closes one of the two sessions: a detail, not news for the log.
        connection.told = not self._connected_to(node)
        self._connections[conn] = connection
        try:
            opened = Opened(conn, node, initiator, established.channel, address, source)
            _log_connected(connection, logging.INFO if connection.told else logging.DEBUG)
            await self.step(opened)  # sends the hello (or a refusal, or a duplicate's goodbye)
            async with trio.open_nursery() as nursery:
                connection.scope = nursery.cancel_scope
                nursery.start_soon(self._writer, conn, connection, nursery.cancel_scope)
                if established.leftover:
                    await self.step(Received(conn, established.leftover))
                await self._reader(conn, connection)
                if connection.closing:
                    nursery.cancel_scope.deadline = min(
                        nursery.cancel_scope.deadline, trio.current_time() + CLOSING_GRACE
                    )  # the writer flushes the goodbye, then ends the connection
                else:
                    nursery.cancel_scope.cancel()
            if connection.closing:
                await _linger(connection.stream)
        finally:
            self._connections.pop(conn, None)
            with trio.CancelScope(shield=True):
                await self.step(Lost(conn))
            self._log_disconnected(connection)
        return "session"

    def _log_disconnected(self, connection: Connection) -> None:
        """Say the session ended, unless another to the node goes on: then, if the log
        named this one as the node's, say which one it is now (the other of two dials)."""
        others = [c for c in self._connections.values() if c.node == connection.node]
        log.log(
            logging.DEBUG if others else logging.INFO,
            "event=disconnected peer=%s address=%s why=%r",
            encode_node_id(connection.node),
            connection.address,
            connection.why or "closed",
        )
        if connection.told and others and not any(c.told for c in others):
            others[0].told = True
            _log_connected(others[0], logging.INFO)

    def _connected_to(self, node: bytes) -> bool:
        return any(c.node == node for c in self._connections.values())

    async def _shake(
        self,
        stream: trio.SocketStream,
        handshake: PeerHandshake,
        address: str,
        source: str,
        ticket: int,
    ) -> Shaken | str:
        """Run the handshake under its deadlines; the outcome if it does not finish.

        An inbound connection runs in the scope ``_admit`` made, which eviction
        cancels; it has ``message_1_timeout`` from accept to send a message 1
        that verifies (which proves it holds the network key), then the rest of
        ``handshake_timeout``. A connection this node dialled has the whole
        ``handshake_timeout``.
        """
        half_open = self._half_open.get(ticket)
        if half_open is None:  # a connection this node dialled
            opened = trio.current_time()
            scope = trio.CancelScope(deadline=opened + self.config.handshake_timeout)
        else:
            opened, scope = half_open.accepted, half_open.scope
        handshake_bytes = 0
        keyed = False
        with scope:
            try:
                first = handshake.start()
                handshake_bytes += len(first)
                await stream.send_all(first)
                while handshake.established is None:
                    data = await stream.receive_some(RECEIVE_SIZE)
                    if not data:
                        if handshake.initiator:  # what a node with another key does (§2)
                            self._note_failure(source, address, "closed", _DIAL_OUTCOMES["lost"])
                        return "lost"
                    answer = handshake.receive_data(data)
                    handshake_bytes += len(data) + len(answer)
                    if answer and not keyed and not handshake.initiator:
                        # A responder answers only a message 1 that verified.
                        keyed = True
                        self._admission.keyed(ticket)
                        scope.deadline = opened + self.config.handshake_timeout
                    if answer:
                        await stream.send_all(answer)
            except HandshakeError as exc:
                self._note_failure(source, address, exc.reason, f"failed: {exc}")
                return "self" if exc.reason == "self" else f"the handshake failed: {exc}"
        if handshake.established is not None:
            return Shaken(handshake.established, handshake_bytes)
        if half_open is not None and half_open.evicted:
            return "evicted"  # counted among the refusals when it was evicted
        if half_open is not None and not keyed:
            self._note_failure(source, address, "no message 1", "timed out before message 1")
        else:
            self._note_failure(source, address, "timeout", "timed out")
        return f"the handshake timed out after {self.config.handshake_timeout:g} s"

    async def _reader(self, conn: int, connection: Connection) -> None:
        while not connection.closing:
            if connection.congested:
                await connection.drained.wait()  # answer no more until the peer reads
                continue
            data = await connection.stream.receive_some(RECEIVE_SIZE)
            if not data:
                return
            await self.step(Received(conn, bytes(data)))

    async def _announce_congestion(self, conn: int, connection: Connection) -> None:
        await self.step(Congested(conn))
        connection.announced.set()

    async def _writer(self, conn: int, connection: Connection, scope: trio.CancelScope) -> None:
        """Send what the engine made; once a congested connection has drained, say so."""
        while True:
            await connection.doorbell.wait()
            while connection.pending:
                data = bytes(connection.pending[:WRITE_CHUNK])
                del connection.pending[:WRITE_CHUNK]
                with trio.fail_after(WRITE_TIMEOUT):
                    await connection.stream.send_all(data)
            if connection.congested:
                await connection.announced.wait()
                connection.congested = False
                connection.announced = trio.Event()
                connection.drained.set()
                connection.drained = trio.Event()
                await self.step(Drained(conn))  # what the session kept meanwhile
            if connection.closing and not connection.pending:
                scope.cancel()
                return


def _log_connected(connection: Connection, level: int) -> None:
    log.log(
        level,
        "event=connected peer=%s address=%s direction=%s",
        encode_node_id(connection.node),
        connection.address,
        "out" if connection.initiator else "in",
    )


async def _linger(stream: trio.abc.Stream) -> None:
    """Half-close, then read what the peer still sends for a moment before closing.

    Closing a socket with unread bytes makes the kernel reset the connection,
    and a reset can discard the goodbye the peer has not read yet: a peer still
    sending (a message we refused to read to its end) would never learn why.
    """
    with (
        trio.move_on_after(LINGER),
        contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError),
    ):
        if isinstance(stream, trio.SocketStream):
            await stream.send_eof()
        while await stream.receive_some(RECEIVE_SIZE):
            pass


# Dials that fail so say nothing of the far side: this node has no route, no address.
_OUR_SIDE = frozenset(
    os.strerror(code)[:1].lower() + os.strerror(code)[1:]
    for code in (errno.ENETUNREACH, errno.ENETDOWN, errno.EADDRNOTAVAIL)
)


def _unreachable(exc: OSError) -> str:
    """``connection refused``, ``no route to host``: what the system said, in its words.

    trio's ``open_tcp_stream`` says only that all attempts failed, with each attempt's
    error in an exception group as its cause: the first of those says why.
    """
    if isinstance(exc, socket.gaierror):  # its errno is the resolver's, not the kernel's
        return f"cannot resolve the host: {exc.strerror or exc}"
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup) and isinstance(cause.exceptions[0], OSError):
        exc = cause.exceptions[0]
    said = os.strerror(exc.errno) if exc.errno else str(exc) or type(exc).__name__
    return said[:1].lower() + said[1:]


def _peer_host_and_address(stream: trio.SocketStream) -> tuple[str, str]:
    """The peer's host, and its ``host:port`` for the log ("?" if it is gone already)."""
    try:
        host, port = stream.socket.getpeername()[:2]
    except OSError:
        return "?", "?"
    return host, format_address(host, port)
