"""A network of real engines on virtual time: a discrete-event loop, links and faults.

Every node is a ``Mesh`` over a ``MemoryStore``, driven exactly as the daemon
drives it: the Noise handshake runs over the simulated link byte for byte, the
engine gets ``Opened``, ``Received``, ``Lost``, ``DialFailed`` and ``Tick`` and
the simulator carries out the ``Send``, ``Close`` and ``Dial`` it returns. Only
the transport is simulated:

- a **link** direction delivers bytes in order after its latency, a jitter
  drawn for each delivery, and the time its bandwidth takes to send them;
  past ``congested_bytes`` of backlog the engine hears ``Congested``, and
  ``Drained`` once it has gone, as from the daemon's writer;
- a **drop** resets one session, as a middlebox or a flaky link might;
- a **crash** stops a node's process: its connections close (the kernel
  resets them, so peers hear of it one latency later) and its store is kept
  for the restart;
- a **partition** holds back every byte between two sides, as TCP would,
  until it heals; sessions that hear nothing for their idle timeout end, and
  dials across it time out;
- an address nobody listens at refuses the dial one round trip later.

All randomness comes from the one ``random.Random`` the network is made
with; the digest of every delivery, tick and scheduled call (a publish, a
fault) is the ``trace_digest`` (the same seed gives the same trace, event for
event). What the daemon's runtime adds around the engine (admission of
handshaking connections, handshake deadlines, write timeouts) is not simulated.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import math
import random
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from msgspec import Struct, field, structs

from meshnode.core.addresses import format_address, parse_address
from meshnode.core.handshake import HandshakeError, PeerHandshake, ReplayCache
from meshnode.core.identity import Identity
from meshnode.core.record import Record, RecordError, decode_many
from meshnode.core.x25519 import KeyPair
from meshnode.engine import actions as a
from meshnode.engine import events as e
from meshnode.engine.dissemination import Dissemination, EagerPush
from meshnode.engine.mesh import Mesh
from meshnode.engine.node import DecodeResult, Node
from meshnode.engine.settings import Settings
from meshnode.store import MemoryStore, Store

T0_MS = 1_790_000_000_000  # the wall clock at virtual time 0 (2026-09-21)
PORT = 7744

# Event kinds, in the order two events at the same instant are handled.
_DELIVER, _TICK, _CALL = 0, 1, 2


class LinkModel(Struct, frozen=True):
    latency: float = 0.010  # seconds, one way
    jitter: float = 0.002  # up to this much more, drawn per delivery
    bandwidth: float = 10e6  # bytes a second, each direction
    congested_bytes: int = 1024 * 1024  # unsent past this, the engine hears ``Congested``
    connect_timeout: float = 10.0  # a dial into a partition fails after this


def host_of(index: int) -> str:
    """Node ``index``'s address on the simulated network: one IPv4 source of its own."""
    return f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}"


class Verifier:
    """Record verification remembered by exact bytes: one verdict for a thousand nodes.

    Verification is a pure function of a record's bytes, so remembering it
    changes no outcome; it only saves each node re-checking what another did.
    """

    def __init__(self) -> None:
        self._verdicts: dict[bytes, Record | RecordError] = {}

    def __call__(self, raws: Sequence[bytes]) -> DecodeResult:
        good: list[Record] = []
        bad: list[RecordError] = []
        for raw in raws:
            verdict = self._verdicts.get(raw)
            if verdict is None:
                ok, failed = decode_many([raw])
                verdict = ok[0] if ok else failed[0]
                self._verdicts[raw] = verdict
            if isinstance(verdict, Record):
                good.append(verdict)
            else:
                bad.append(verdict)
        return good, bad


class End(Struct, eq=False):
    """One end of a connection: the conn id its node knows it by, and its half of the link."""

    conn: int
    node: int  # index of the node this end belongs to
    initiator: bool
    address: str  # as the node sees the other end
    handshake: PeerHandshake | None
    other: End | None = None
    open: bool = True
    established: bool = False
    sent_free: float = 0.0  # when the link direction from this end is free again
    last_arrival: float = 0.0  # deliveries from this end never overtake each other
    held: list[bytes | None] = field(default_factory=list)  # partitioned: None is the close
    congested: bool = False


class SimNode(Struct, eq=False):
    index: int
    identity: Identity
    static_key: KeyPair
    store: Store
    host: str
    peers: tuple[str, ...]  # the static peers it was given
    rng: random.Random
    mesh: Mesh | None = None  # None while down
    ends: dict[int, End] = field(default_factory=dict)
    timer_at: float = math.inf
    gone: bool = False  # left for good (churn): its store is gone too
    replays: ReplayCache = field(default_factory=ReplayCache)

    @property
    def address(self) -> str:
        return format_address(self.host, PORT)

    @property
    def up(self) -> bool:
        return self.mesh is not None


Observer = Callable[[int, list[a.Action], float], None]


class Network:
    def __init__(
        self,
        rng: random.Random,
        *,
        link: LinkModel | None = None,
        settings: Settings | None = None,
        dissemination: Callable[[], Dissemination] = EagerPush,
    ) -> None:
        """``dissemination`` makes each node's strategy, at every start (today's flood)."""
        self.rng = rng
        self.dissemination = dissemination
        self.link = link or LinkModel()
        self.settings = settings or Settings()
        self.now = 0.0
        self.nodes: list[SimNode] = []
        self.verify = Verifier()
        self.observers: list[Observer] = []
        self.wire_bytes = 0
        self.events = 0
        self._queue: list[tuple[float, int, int, Any]] = []
        self._order = itertools.count()
        self._conns = itertools.count(1)
        self._by_host: dict[str, int] = {}
        self._side: dict[int, int] | None = None  # node -> side, while partitioned
        self._trace = hashlib.blake2b(digest_size=16)
        self._in_flight = 0  # deliveries queued

    # -- building ----------------------------------------------------------------

    def add_node(self, peers: Iterable[str] = (), *, start: bool = True) -> SimNode:
        index = len(self.nodes)
        seed = self.rng.getrandbits(256).to_bytes(32, "big")
        identity = Identity(hashlib.sha256(b"sim identity" + seed).digest())
        static_key = KeyPair(hashlib.sha256(b"sim x25519" + seed).digest())
        host = host_of(index)
        node = SimNode(
            index,
            identity,
            static_key,
            MemoryStore(identity.public_key, self.settings.store),
            host,
            tuple(peers),
            random.Random(seed),
        )
        self.nodes.append(node)
        self._by_host[host] = index
        if start:
            self.start(index)
        return node

    def start(self, index: int) -> None:
        """Start (or restart, with its store) node ``index``'s process."""
        node = self.nodes[index]
        assert not node.up and not node.gone
        peers = tuple(parse_address(p) for p in node.peers)
        static = tuple((host, port) for host, port in peers if host is not None)
        settings = structs.replace(
            self.settings, peers=structs.replace(self.settings.peers, peers=static)
        )
        core = Node(node.identity, node.store, decode=self.verify)
        node.mesh = Mesh(
            core,
            agent="meshnode-sim",
            rng=node.rng,
            settings=settings,
            dissemination=self.dissemination(),
            now=self.now,
        )
        self._handle(node, e.Listening((node.address,)))

    def crash(self, index: int, *, forever: bool = False) -> None:
        """Stop node ``index``'s process; its peers hear their connections reset."""
        node = self.nodes[index]
        if not node.up:
            node.gone = node.gone or forever
            return
        node.mesh = None
        node.timer_at = math.inf
        node.gone = forever
        for end in list(node.ends.values()):
            self._reset(end)
        node.ends.clear()

    # -- the clock and the loop ----------------------------------------------------

    def call_at(self, when: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` at virtual time ``when`` (a workload step, a fault)."""
        heapq.heappush(self._queue, (when, _CALL, next(self._order), fn))

    def run_until(self, until: float) -> None:
        queue = self._queue
        while queue and queue[0][0] <= until:
            when, kind, _, payload = heapq.heappop(queue)
            self.now = when
            self.events += 1
            if kind == _DELIVER:
                self._in_flight -= 1
                self._deliver(payload[0], payload[1])
            elif kind == _TICK:
                index: int = payload[0]
                due: float = payload[1]
                node = self.nodes[index]
                if node.up and node.timer_at == due:
                    node.timer_at = math.inf
                    self._trace.update(struct.pack("<dBI", when, 1, index))
                    self._handle(node, e.Tick())
            else:
                self._trace.update(struct.pack("<dB", when, 2))
                payload()
        self.now = max(self.now, until)

    def settle(self, *, within: float = 600.0) -> float:
        """Run until no byte is in flight; the virtual seconds it took."""
        started = self.now
        queue = self._queue
        while self._in_flight and queue and queue[0][0] <= started + within:
            self.run_until(queue[0][0])
        assert not self._in_flight, "the network did not settle"
        return self.now - started

    def _push_delivery(self, when: float, end: End, data: bytes | None) -> None:
        self._in_flight += 1
        heapq.heappush(self._queue, (when, _DELIVER, next(self._order), (end, data)))

    def instant(self) -> e.Instant:
        return e.Instant(self.now, T0_MS + int(self.now * 1000))

    @property
    def trace_digest(self) -> str:
        return self._trace.hexdigest()

    # -- driving one engine --------------------------------------------------------

    def handle(self, index: int, event: e.Event) -> list[a.Action]:
        """Give node ``index`` an event from outside the network (a publish, a hint)."""
        node = self.nodes[index]
        assert node.mesh is not None, "the node is down"
        return self._handle(node, event)

    def _handle(self, node: SimNode, event: e.Event) -> list[a.Action]:
        mesh = node.mesh
        assert mesh is not None
        actions = mesh.handle(event, self.instant())
        for action in actions:
            if isinstance(action, a.Send):
                self._transmit(node.ends[action.conn], action.data)
            elif isinstance(action, a.Close):
                self._close(node, action.conn)
            elif isinstance(action, a.Dial):
                self._dial(node, action.address)
        for observe in self.observers:
            observe(node.index, actions, self.now)
        due = mesh.next_timer()
        if due < node.timer_at:
            due = max(due, self.now)
            node.timer_at = due
            heapq.heappush(self._queue, (due, _TICK, next(self._order), (node.index, due)))
        return actions

    # -- connections -----------------------------------------------------------------

    def _dial(self, node: SimNode, address: str) -> None:
        host, _ = parse_address(address)
        target = self._by_host.get(host or "")
        link = self.link
        if target is None or not self.nodes[target].up or self.nodes[target].gone:
            self.call_at(self.now + 2 * link.latency, lambda: self._dial_failed(node, address))
            return
        if self._parted(node.index, target):
            self.call_at(self.now + link.connect_timeout, lambda: self._dial_failed(node, address))
            return
        callee = self.nodes[target]
        mine = End(next(self._conns), node.index, True, address, self._shaker(node, True))
        theirs = End(
            next(self._conns), target, False, f"{node.host}:{40000 + mine.conn % 20000}", None
        )
        theirs.handshake = self._shaker(callee, False)
        mine.other, theirs.other = theirs, mine
        mine.sent_free = theirs.sent_free = self.now + link.latency  # the TCP handshake
        node.ends[mine.conn] = mine
        callee.ends[theirs.conn] = theirs
        for end in (mine, theirs):
            assert end.handshake is not None
            first = end.handshake.start()
            if first:
                self._transmit(end, first)

    def _shaker(self, node: SimNode, initiator: bool) -> PeerHandshake:
        return PeerHandshake(
            initiator=initiator,
            identity=node.identity,
            static_key=node.static_key,
            network_key=self.settings.peers.network_key,
            rng=lambda: node.rng.randbytes(32),
            replay_cache=None if initiator else node.replays,
        )

    def _dial_failed(self, node: SimNode, address: str, *, is_self: bool = False) -> None:
        if node.up:
            self._handle(node, e.DialFailed(address, is_self))

    def _transmit(self, end: End, data: bytes) -> None:
        if not end.open or end.other is None:
            return
        link = self.link
        self.wire_bytes += len(data)
        start = max(self.now, end.sent_free)
        end.sent_free = start + len(data) / link.bandwidth
        if not end.congested and (end.sent_free - self.now) * link.bandwidth > link.congested_bytes:
            end.congested = True  # as the daemon's writer would, once its buffer is past the limit
            self.call_at(self.now, lambda: self._congestion(end, e.Congested(end.conn)))
            self.call_at(end.sent_free, lambda: self._drain(end))
        arrival = end.sent_free + link.latency + self.rng.random() * link.jitter
        end.last_arrival = max(arrival, end.last_arrival)
        self._push_delivery(end.last_arrival, end.other, data)

    def _congestion(self, end: End, event: e.Event) -> None:
        node = self.nodes[end.node]
        if end.open and end.established and node.up:
            self._handle(node, event)

    def _drain(self, end: End) -> None:
        """The backlog that made ``end`` congested has left: it may take bytes again."""
        if end.sent_free > self.now:
            self.call_at(end.sent_free, lambda: self._drain(end))
            return
        end.congested = False
        self._congestion(end, e.Drained(end.conn))

    def _deliver(self, end: End, data: bytes | None) -> None:
        """Bytes (None: the close) from the other end reach ``end``."""
        if not end.open:
            return
        other = end.other
        if other is not None and self._parted(end.node, other.node):
            end.held.append(data)
            return
        node = self.nodes[end.node]
        header = struct.pack("<dBII", self.now, 0, end.node, end.conn)
        if data is None:
            self._trace.update(header)
            self._gone(node, end)
            return
        self._trace.update(header + data)
        if end.established:
            self._handle(node, e.Received(end.conn, data))
            return
        handshake = end.handshake
        assert handshake is not None
        try:
            answer = handshake.receive_data(data)
        except HandshakeError as exc:
            self._abort(end, is_self=exc.reason == "self")
            return
        if answer:
            self._transmit(end, answer)
        established = handshake.established
        if established is None:
            return
        end.established = True
        end.handshake = None
        source = self.nodes[other.node].host if other is not None else "?"
        self._handle(
            node,
            e.Opened(
                end.conn,
                established.remote_node,
                end.initiator,
                established.channel,
                end.address,
                source,
            ),
        )
        if established.leftover and end.open:
            self._handle(node, e.Received(end.conn, established.leftover))

    def _abort(self, end: End, *, is_self: bool = False) -> None:
        """A handshake failed: both ends close; a dialler hears its dial failed."""
        for one in (end, end.other):
            if one is not None and one.open:
                one.open = False
                owner = self.nodes[one.node]
                owner.ends.pop(one.conn, None)
                if one.initiator and not one.established:
                    self._dial_failed(owner, one.address, is_self=is_self)

    def _close(self, node: SimNode, conn: int) -> None:
        """The engine closed ``conn``: after its last bytes, the other end hears the close."""
        end = node.ends.pop(conn, None)
        if end is None:
            return
        self._send_close(end)
        end.open = False
        self._handle(node, e.Lost(conn))

    def _send_close(self, end: End) -> None:
        other = end.other
        if other is None or not other.open:
            return
        arrival = max(end.sent_free + self.link.latency, end.last_arrival)
        end.last_arrival = arrival
        self._push_delivery(arrival, other, None)

    def _reset(self, end: End) -> None:
        """The node holding ``end`` crashed: the other end hears a reset one latency on."""
        end.open = False
        other = end.other
        if other is None or not other.open:
            return
        when = self.now + self.link.latency
        self._push_delivery(when, other, None)

    def _gone(self, node: SimNode, end: End) -> None:
        end.open = False
        node.ends.pop(end.conn, None)
        if not node.up:
            return
        if end.established:
            self._handle(node, e.Lost(end.conn))
        elif end.initiator:
            self._handle(node, e.DialFailed(end.address))

    def connect(self, dialler: int, callee: int) -> None:
        """Have ``dialler`` dial ``callee`` once, as if told to by hand."""
        self._dial(self.nodes[dialler], self.nodes[callee].address)

    def disconnect(self, a_index: int, b_index: int) -> None:
        """Cut every connection between two nodes; both hear it at once."""
        for end in list(self.nodes[a_index].ends.values()):
            other = end.other
            if other is not None and other.node == b_index:
                for one in (end, other):
                    one.open = False
                    owner = self.nodes[one.node]
                    owner.ends.pop(one.conn, None)
                    if owner.up and one.established:
                        self._handle(owner, e.Lost(one.conn))

    def drop(self, index: int) -> bool:
        """Reset one of node ``index``'s sessions, drawn at random, as a middlebox might.

        This end hears of it at once, the other one latency later; False if the
        node has no session to lose.
        """
        node = self.nodes[index]
        ends = [end for end in node.ends.values() if end.established and end.open]
        if not node.up or not ends:
            return False
        end = self.rng.choice(ends)
        self._reset(end)
        node.ends.pop(end.conn, None)
        self._handle(node, e.Lost(end.conn))
        return True

    # -- partitions ------------------------------------------------------------------

    def partition(self, side: set[int]) -> None:
        """Split the network: ``side`` and the rest hear nothing of each other until ``heal``."""
        self._side = {n.index: int(n.index in side) for n in self.nodes}

    def heal(self) -> None:
        """Deliver what the partition held back, in order, and let dials through again."""
        self._side = None
        for node in self.nodes:
            for end in list(node.ends.values()):
                held, end.held = end.held, []
                when = self.now + self.link.latency
                for data in held:
                    self._push_delivery(when, end, data)

    def _parted(self, a_index: int, b_index: int) -> bool:
        side = self._side
        return side is not None and side.get(a_index, 0) != side.get(b_index, 0)

    # -- what the checks read ----------------------------------------------------------

    def live(self) -> list[SimNode]:
        return [n for n in self.nodes if n.up]
