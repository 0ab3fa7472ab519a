"""Whom a node dials, when, and whom it lets in: the peer-selection policy, a pure object.

It knows addresses, each with where it was learnt (``static``: the operator's
``peers``; otherwise the hint's source, such as ``hello``), its state and the
node last found there. It decides:

- **when to dial**: each address on its own backoff, doubling from
  ``backoff_initial`` to ``backoff_max`` after every failure or ended session,
  drawn ±20 % from the injected generator so that nodes restarted together
  do not redial in step; a session that was established resets it;
- **whom not to dial**: this node itself (found by the handshake), a node
  already connected by another address or from its side, a node this node
  banned, and a node that banned this one (``held_off``), until its time is up;
- **how many**: the node keeps ``max(outbound_slots, static peers)`` of its
  ``max_peers`` sessions for the peers it dials, and inbound sessions stop at
  the rest, so peers dialling in can never take them. Static peers are always
  kept connected. Hints of the ``dial_sources`` (none by default: static peers
  only) are dialled while the node has fewer than ``target_degree`` sessions,
  either way, or fewer than ``min_outbound`` that it dialled itself, and never
  past the outbound slots the static peers leave. So at an event, where
  everyone hears of everyone, each node keeps a handful of random neighbours
  (HyParView's active view) instead of dialling the room, and a node whose
  inbound sessions are all an attacker's still dials out;
- **when to swap**: a node at its target degree keeps its neighbours, so a
  room could settle into cliques of ``target_degree + 1`` that never meet.
  ``SWAP_FIRST`` seconds after start, and then at pauses doubling to
  ``SWAP_MAX``, it dials one more random hint it has no session on (from a
  clique, an address outside it, unless a hint without a node id turns out to
  be a neighbour) and, once the engine has seen that session answer a round,
  names a random other neighbour to let go (``to_let_go``).

The table of known addresses is HyParView's passive view: at most ``MAX_HINTS``
hints, the ones heard of longest ago going first, and at most ``QUOTAS[source]``
from sources a peer controls (what peers say in ``hello``, what they share by
peer exchange), so no peer can grow it without bound or push discovery's
addresses out. ``shareable`` names the addresses this node may tell others of:
only those it dialled and completed a handshake on itself.
"""

from __future__ import annotations

import enum
import ipaddress
import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from msgspec import Struct

from meshnode.core.addresses import AddressError, format_address, parse_address

if TYPE_CHECKING:
    import random

    from meshnode.engine.settings import PeerSettings

STATIC = "static"
HELLO = "hello"
EXCHANGE = "exchange"
MAX_HINTS = 256
QUOTAS = {HELLO: 64, EXCHANGE: 128}  # hints at most from the sources peers control
PER_HOST = 2  # addresses of one host at most from those sources (different ports)
MAX_FORGOTTEN = 4 * MAX_HINTS  # addresses whose backoff outlives their place in the table
HINT_DIALS_PER_S = 2.0  # hints dialled at most this often, after a burst: so that a room
HINT_DIAL_BURST = 8  # full of advertised addresses cannot make this node a SYN cannon
JITTER = 0.2  # each delay is drawn from ±20 % of the backoff
SWAP_FIRST = 10.0  # seconds after start before a node at its target degree first swaps a
SWAP_MAX = 600.0  # neighbour for a random other; the pause doubles up to this


class State(enum.Enum):
    IDLE = "idle"  # waiting for its next dial
    DIALLING = "dialling"
    CONNECTED = "connected"  # a session dialled at this address is open
    COVERED = "covered"  # its node is connected some other way: no need to dial
    SELF = "self"  # this node itself: never dialled again


class Known(Struct):
    address: str
    origin: str  # STATIC, or who hinted it
    delay: float  # the backoff the next failure waits
    next_dial: float  # monotonic seconds
    heard: float  # when it was last configured or hinted
    state: State = State.IDLE
    node: bytes | None = None  # the node last found here
    group: str | None = None  # addresses the hint's source says are one node's
    failures: int = 0  # dials that came to nothing since the last session here
    last_failure: str = ""  # why the last of them did, as the driver said
    withdrawn: bool = False  # its source took it back while in use: forgotten once idle
    verified: bool = False  # a dial here completed a handshake: it may be shared
    host: str | None = None  # the IP of a hint, for the per-host bound on what peers tell

    @property
    def static(self) -> bool:
        return self.origin == STATIC


class AddressView(Struct, frozen=True):
    """One known address, as readers outside the policy see it (tests, for now)."""

    address: str
    origin: str
    state: str
    node: bytes | None
    next_dial: float
    failures: int
    last_failure: str
    dialled: bool  # its source's addresses are dialled (static, or one of dial_sources)


class PeerPolicy:
    def __init__(self, settings: PeerSettings, rng: random.Random, *, now: float = 0.0) -> None:
        self._settings = settings
        self._rng = rng
        self._known: dict[str, Known] = {}
        self._inbound: dict[bytes, int] = {}  # node -> inbound sessions open
        self._outbound: dict[bytes, int] = {}  # node -> sessions open that this node dialled
        self._not_before: dict[bytes, float] = {}  # node -> when it may be dialled, our ban
        self._held_off: dict[bytes, float] = {}  # node -> when it may be dialled, its ban on us
        self._next_due: float | None = None  # ``next_due``, until the table changes
        self._forgotten: dict[str, tuple[float, float, bytes | None]] = {}  # see ``_forget``
        self._tokens = float(HINT_DIAL_BURST)  # hint dials that may go now
        self._tokens_at = now
        self._origins: dict[str, int] = {}  # hints in the table per source
        self._swap_pause = SWAP_FIRST
        self._next_swap = now + SWAP_FIRST * rng.uniform(1 - JITTER, 1 + JITTER)
        self._swapping: str | None = None  # the address dialled to swap a neighbour for
        self._swapped_in: bytes | None = None  # its node, once that session is open
        for host, port in settings.peers:
            address = format_address(canonical_host(host), port)
            self._known[address] = Known(address, STATIC, settings.backoff_initial, now, now)
        self._statics = len(self._known)  # changed only by ``reconfigure``

    def reconfigure(self, settings: PeerSettings, *, now: float) -> None:
        """Take new settings (a reload): limits at once, static peers added and dropped.

        A new static peer is dialled now. A dropped one is no longer kept connected:
        forgotten if idle, else left to its session, which goes on until it ends and
        is then not redialled (it counts as a hint nobody dials any more).
        """
        self._next_due = None
        self._settings = settings
        wanted = {format_address(canonical_host(h), p) for h, p in settings.peers}
        for known in list(self._known.values()):
            if known.static and known.address not in wanted:
                if known.state is State.IDLE:
                    del self._known[known.address]
                else:
                    known.origin, known.withdrawn = HELLO, True
                    self._origins[HELLO] = self._origins.get(HELLO, 0) + 1
        for address in wanted:
            hinted = self._known.get(address)
            if hinted is None:
                self._forgotten.pop(address, None)
                self._known[address] = Known(address, STATIC, settings.backoff_initial, now, now)
            elif not hinted.static:
                self._origins[hinted.origin] -= 1
                hinted.origin, hinted.withdrawn, hinted.heard = STATIC, False, now
                if hinted.state is State.IDLE:
                    hinted.next_dial = min(hinted.next_dial, now)
        self._statics = sum(1 for k in self._known.values() if k.static)

    # -- what the engine asks -------------------------------------------------------

    def due(self, now: float) -> list[str]:
        """The addresses to dial now; each is marked as being dialled."""
        self._next_due = None
        refill = max(now - self._tokens_at, 0.0) * HINT_DIALS_PER_S
        self._tokens = min(float(HINT_DIAL_BURST), self._tokens + refill)
        self._tokens_at = max(self._tokens_at, now)
        # A hair of slack: at the instant ``next_due`` named, the token is there, however
        # the floating point of the refill rounds.
        free = min(self.hint_slots_free(), math.floor(self._tokens + 1e-9))
        swap = False
        if now >= self._next_swap:
            swap = free <= 0 and self._tokens >= 1 - 1e-9 and self._may_swap()
            self._swap_pause = min(self._swap_pause * 2, SWAP_MAX)
            self._next_swap = now + self._swap_pause * self._rng.uniform(1 - JITTER, 1 + JITTER)
            free = 1 if swap else free
        busy = self._busy_groups()
        dials: list[Known] = []
        candidates: list[Known] = []  # hints that may be dialled, one per group
        for known in self._known.values():
            if known.state is not State.IDLE or known.next_dial > now:
                continue
            if not known.static and (known.origin not in self._settings.dial_sources or free <= 0):
                continue
            if known.group is not None and known.group in busy:
                continue  # one of its node's other addresses is being dialled or in use
            if known.node is not None and (until := self._wait_for(known.node)) > now:
                known.next_dial = until
                continue
            if known.group is not None:
                busy.add(known.group)
            (dials if known.static else candidates).append(known)
        for known in dials:
            known.state = State.DIALLING
        if dials and candidates:  # the static peers dialled now count towards the degree
            free = min(free, self.hint_slots_free())
        if len(candidates) > free:
            # At an event everyone hears of everyone in much the same order: a random
            # choice, not the first few, keeps the overlay from growing hubs.
            candidates = self._rng.sample(candidates, max(free, 0))
        self._tokens -= len(candidates)
        for known in candidates:
            known.state = State.DIALLING
        if swap and candidates:
            self._swapping = candidates[0].address
        dials += candidates
        order = {id(k): n for n, k in enumerate(self._known.values())}
        return [k.address for k in sorted(dials, key=lambda k: order[id(k)])]

    def _busy_groups(self) -> set[str]:
        active = (State.DIALLING, State.CONNECTED, State.COVERED)
        return {k.group for k in self._known.values() if k.group is not None and k.state in active}

    def next_due(self) -> float:
        """When ``due`` may next have an address to dial (inf: not before something happens)."""
        if self._next_due is None:
            self._next_due = self._earliest()
        return self._next_due

    def _earliest(self) -> float:
        """The earliest time ``due`` could dial, under the same rules as ``due``.

        An address ``due`` would skip (another of its node's addresses in use) must
        not count, or the engine would ask for a tick that dials nothing, again and
        again: a busy loop.
        """
        busy = self._busy_groups()
        idle = [
            k
            for k in self._known.values()
            if k.state is State.IDLE and (k.group is None or k.group not in busy)
        ]
        statics = min((k.next_dial for k in idle if k.static), default=math.inf)
        if self._may_swap():  # due() moves it on each time it passes: no busy loop
            statics = min(statics, self._next_swap)
        if self.hint_slots_free() <= 0:
            return statics
        sources = self._settings.dial_sources
        hints = min((k.next_dial for k in idle if k.origin in sources), default=math.inf)
        if hints < math.inf and self._tokens < 1:  # the next hint dial waits for its token
            hints = max(hints, self._tokens_at + (1 - self._tokens) / HINT_DIALS_PER_S)
        return min(statics, hints)

    def _may_swap(self) -> bool:
        """Whether the node is at its target degree with an outbound slot and room to spare."""
        settings = self._settings
        if self._swapping is not None or not settings.dial_sources:
            return False  # the last swap's dial is still under way, or hints are not dialled
        hints, dialling, _ = self._dials_in_use()
        if dialling:
            return False  # an ordinary dial is under way: the degree is not settled
        degree = sum(self.sessions())
        slots = settings.outbound_slots - self._statics - hints
        return settings.target_degree <= degree < settings.max_peers and slots > 0

    @property
    def swapped_in(self) -> bytes | None:
        """The node a swap reached, until it is let in or its session ends."""
        return self._swapped_in

    def to_let_go(self) -> bytes | None:
        """Once a swap's session has proved itself: a random other neighbour to close, so that
        the degree is back at its target; None when there is none to (static peers stay)."""
        kept, self._swapped_in = self._swapped_in, None
        if kept is None or sum(self.sessions()) <= self._settings.target_degree:
            return None
        static = {k.node for k in self._known.values() if k.static and k.node is not None}
        others = sorted((self._inbound.keys() | self._outbound.keys()) - static - {kept})
        return self._rng.choice(others) if others else None

    def may_accept(self) -> bool:
        """Whether one more inbound session fits beside the slots kept for dialling."""
        return sum(self._inbound.values()) < self.inbound_limit

    @property
    def inbound_limit(self) -> int:
        """Inbound sessions at most: what the slots kept for dialling leave."""
        reserved = max(self._settings.outbound_slots, self._statics)
        return max(self._settings.max_peers - reserved, 0)

    def hint_slots_free(self) -> int:
        """Hints to dial now: as many as the degree lacks, within the outbound slots left.

        Static peers keep their slots even while they wait out a backoff, so
        that a static peer redialled never takes the node past ``max_peers``.
        Dials under way count as the sessions they are meant to become.
        """
        settings = self._settings
        hints, dialling, outbound = self._dials_in_use()
        slots = settings.outbound_slots - self._statics - hints
        degree = sum(self._inbound.values()) + sum(self._outbound.values()) + dialling
        lacking = max(settings.target_degree - degree, settings.min_outbound - outbound)
        return min(slots, lacking)

    def _dials_in_use(self) -> tuple[int, int, int]:
        """Hints dialling or connected, addresses dialling, and both kinds in use."""
        hints = dialling = outbound = 0
        for k in self._known.values():
            if k.state is State.DIALLING or k.state is State.CONNECTED:
                outbound += 1
                if not k.static:
                    hints += 1
                if k.state is State.DIALLING:
                    dialling += 1
        return hints, dialling, outbound

    def outbound_in_use(self) -> int:
        """Outbound slots in use: addresses, static or hinted, being dialled or connected."""
        return sum(1 for k in self._known.values() if k.state in (State.DIALLING, State.CONNECTED))

    # -- what happened --------------------------------------------------------------

    def opened(self, node: bytes, address: str, *, initiator: bool, now: float) -> bool:
        """A session with ``node`` is open (dialled at ``address``, or from its side).

        True if it makes ``address`` shareable for the first time: news for peer exchange.
        """
        self._next_due = None
        sessions = self._outbound if initiator else self._inbound
        sessions[node] = sessions.get(node, 0) + 1
        known = self._known.get(address) if initiator else None
        news = known is not None and not known.verified
        if initiator and address == self._swapping:
            self._swapping, self._swapped_in = None, node
        if known is not None:
            known.state = State.CONNECTED
            known.node = node
            known.verified = True
            known.delay = self._settings.backoff_initial
            known.failures = 0
            known.last_failure = ""
            for sibling in self._known.values():  # the other addresses of its service
                if sibling.group is not None and sibling.group == known.group:
                    sibling.node = node
        for other in self._addresses_of(node):
            if other.state is State.IDLE:
                other.state = State.COVERED
        return news

    def ended(self, node: bytes, address: str, *, initiator: bool, now: float) -> None:
        """A session that ``opened`` announced has ended."""
        self._next_due = None
        if node == self._swapped_in:
            self._swapped_in = None  # refused, or a duplicate: it swapped nothing
        sessions = self._outbound if initiator else self._inbound
        left = sessions.get(node, 0) - 1
        if left > 0:
            sessions[node] = left
        else:
            sessions.pop(node, None)
        still = self._connected(node)
        known = self._known.get(address) if initiator else None
        if known is not None and known.state is State.CONNECTED:
            if still and known.withdrawn:
                self._forget(known)
            elif still:  # the duplicate rule kept another connection to it
                known.state = State.COVERED
            else:
                self._back_off(known, now)
        if not still:
            for other in self._addresses_of(node):
                if other.state is State.COVERED:
                    self._back_off(other, now)

    def failed(
        self,
        address: str,
        *,
        now: float,
        is_self: bool = False,
        node: bytes | None = None,
        why: str = "",
    ) -> None:
        """A dial of ``address`` came to nothing (``node``: it reached that node, refused)."""
        self._next_due = None
        known = self._known.get(address)
        if known is None or known.state is not State.DIALLING:
            return
        if address == self._swapping:
            self._swapping = None
        if node is not None:
            known.node = node
        if is_self:
            known.state = State.SELF
        elif known.node is not None and self._connected(known.node):
            known.state = State.COVERED  # its node dialled in while this dial was failing
        else:
            known.failures += 1
            known.last_failure = why
            self._back_off(known, now)

    def hint(
        self,
        address: str,
        origin: str,
        *,
        now: float,
        reached_at: str | None = None,
        group: str | None = None,
    ) -> bool:
        """Record that a node may accept peers at ``address``; False if it is unusable.

        An unspecified host (``0.0.0.0``, ``[::]``) means the host the hinting
        connection reached (``reached_at``, a ``host:port``), as §4.1 says.
        Addresses of one ``group`` (one mDNS service's) are dialled one at a
        time, the next only once the last has failed.
        """
        usable = _usable(address, reached_at)
        if usable is None:
            return False
        self._next_due = None
        known = self._known.get(usable)
        if known is not None:
            known.heard = now
            if not known.static:  # the table is kept in the order hints were last heard
                known.group = known.group or group
                if (
                    origin != known.origin
                    and self._outranks(origin, known.origin)
                    and self._quota_for(origin, known)
                ):
                    # First heard of from a peer, now from discovery: the address is
                    # discovery's from now on, out of the peers' quota, and dialled.
                    self._origins[known.origin] -= 1
                    self._origins[origin] = self._origins.get(origin, 0) + 1
                    known.origin = origin
                if origin == known.origin:  # a peer cannot keep what discovery withdrew
                    known.withdrawn = False
                del self._known[usable]
                self._known[usable] = known
            return True
        if not self._room_for(usable, origin):
            return False
        initial = self._settings.backoff_initial
        known = Known(usable, origin, initial, now, now, group=group, host=_host_of(usable))
        past = self._forgotten.pop(usable, None)
        if past is not None:  # heard of again: it takes up its backoff, and its node, again
            known.delay, known.next_dial, known.node = past
        if group is not None and known.node is None:
            # An address of a service this node already reached (its AAAA record came
            # after its A record, say) belongs to that node, and is covered while it is.
            sibling = next(
                (k for k in self._known.values() if k.group == group and k.node is not None),
                None,
            )
            if sibling is not None:
                known.node = sibling.node
        if known.node is not None and self._connected(known.node):
            known.state = State.COVERED
        self._known[usable] = known
        self._origins[origin] = self._origins.get(origin, 0) + 1
        return True

    def _room_for(self, address: str, origin: str) -> bool:
        """Make room for a new hint of ``origin``, forgetting an idle one; False if none can go.

        What peers tell (the sources with a quota) only ever pushes out what peers told:
        never an address discovery found. And of one host, peers get at most
        ``PER_HOST`` addresses in, so that no peer can aim this node's dials at one
        victim through many ports.
        """
        if origin not in QUOTAS:
            if len(self._known) - self._statics < MAX_HINTS:
                return True
            return self._make_room(lambda k: not k.static)
        host = _host_of(address)

        def told_of_host(k: Known) -> bool:
            return k.origin in QUOTAS and k.host == host

        # Every bound must hold, each making room of its own: one forgotten for the host's
        # bound may still leave the origin's quota full.
        host_full = sum(1 for k in self._known.values() if told_of_host(k)) >= PER_HOST
        if host_full and not self._make_room(told_of_host):
            return False
        quota_full = self._origins.get(origin, 0) >= QUOTAS[origin]
        if quota_full and not self._make_room(lambda k: k.origin == origin):
            return False
        if len(self._known) - self._statics >= MAX_HINTS:
            return self._make_room(lambda k: k.origin in QUOTAS)
        return True

    def _quota_for(self, origin: str, known: Known) -> bool:
        """Whether ``known`` may become ``origin``'s: within its quota, if it has one (an
        idle one of its own forgotten to make room), so that what one peer said in a hello
        cannot be passed into the quota of peer exchange past its bound."""
        if origin not in QUOTAS or self._origins.get(origin, 0) < QUOTAS[origin]:
            return True
        return self._make_room(lambda k: k.origin == origin and k is not known)

    def _outranks(self, origin: str, other: str) -> bool:
        """Whether a hint from ``origin`` should take over one ``other`` gave."""
        if other in QUOTAS and origin not in QUOTAS:
            return True  # discovery confirms what a peer said
        return self._dials(origin) and not self._dials(other)

    def _dials(self, what: Known | str) -> bool:
        """Whether addresses of this origin (or this address, by its origin) are dialled."""
        origin = what if isinstance(what, str) else what.origin
        return origin == STATIC or origin in self._settings.dial_sources

    def _make_room(self, among: Callable[[Known], bool]) -> bool:
        """Forget the idle hint ``among`` those heard of longest ago; False if none is idle."""
        idle = (k for k in self._known.values() if k.state is State.IDLE and among(k))
        oldest = next(idle, None)  # heard of longest ago: the table is in that order
        if oldest is None:
            return False
        self._forget(oldest)
        return True

    def _forget(self, known: Known) -> None:
        """Drop ``known`` from the table, remembering its backoff and node for a while.

        Without the memory, a peer could make this node dial an address as fast
        as it likes: push it out of the table with other hints, tell it again.
        ``MAX_FORGOTTEN`` addresses are remembered, the oldest forgotten first.
        """
        self._next_due = None
        del self._known[known.address]
        self._origins[known.origin] -= 1
        self._forgotten[known.address] = (known.delay, known.next_dial, known.node)
        if len(self._forgotten) > MAX_FORGOTTEN:
            del self._forgotten[next(iter(self._forgotten))]

    def withdraw(self, address: str, origin: str) -> None:
        """``origin`` takes its hint of ``address`` back: forget it, unless it is in use.

        Only a hint from that same origin is forgotten, never a static peer; its
        backoff is remembered (``_forget``), so that a service that comes and
        goes is never dialled faster than its backoff allows.
        """
        known = self._known.get(address)
        if known is None or known.origin != origin:
            return
        if known.state is State.IDLE:
            self._forget(known)
        else:
            known.withdrawn = True

    def banned(self, node: bytes, until: float) -> None:
        """Dial ``node`` no sooner than ``until``: this node banned it."""
        self._hold(self._not_before, node, until)

    def held_off(self, node: bytes, until: float) -> None:
        """Dial ``node`` no sooner than ``until``: it banned this node and said for how long.

        Kept apart from this node's own bans, so that lifting one of those by hand
        never makes the node redial a peer that asked it to wait.
        """
        self._hold(self._held_off, node, until)

    def _hold(self, table: dict[bytes, float], node: bytes, until: float) -> None:
        self._next_due = None
        table[node] = max(until, table.get(node, -math.inf))
        for known in self._addresses_of(node):
            known.next_dial = max(known.next_dial, until)

    def unbanned(self, node: bytes, now: float) -> None:
        """A ban was lifted by hand: dial the node at once."""
        self._next_due = None
        self._not_before.pop(node, None)
        for known in self._addresses_of(node):
            if known.state is State.IDLE:
                known.next_dial = max(now, self._wait_for(node))

    # -- views ----------------------------------------------------------------------

    def shareable(self) -> list[tuple[str, bytes]]:
        """(address, node) for the nodes connected now, at each address where a dial of this
        node's completed a handshake with it and has not failed since.

        Only these may be told to other nodes: an address merely heard of could be
        anyone's invention, and passing it on would make this node a relay for
        someone else's flood; one that stopped answering is no longer worth telling.
        """
        return [
            (k.address, k.node)
            for k in self._known.values()
            if k.node is not None
            and k.verified
            and not k.failures
            and k.state in (State.CONNECTED, State.COVERED)
            and self._connected(k.node)
        ]

    def addresses(self) -> list[AddressView]:
        return [
            AddressView(
                k.address,
                k.origin,
                k.state.value,
                k.node,
                k.next_dial,
                k.failures,
                k.last_failure,
                self._dials(k),
            )
            for k in self._known.values()
        ]

    def sessions(self) -> tuple[int, int]:
        """(inbound, outbound) sessions open."""
        return sum(self._inbound.values()), sum(self._outbound.values())

    def _wait_for(self, node: bytes) -> float:
        """When a ban, either way, lets ``node`` be dialled (-inf: none in force)."""
        return max(self._not_before.get(node, -math.inf), self._held_off.get(node, -math.inf))

    def _connected(self, node: bytes) -> bool:
        return node in self._inbound or node in self._outbound

    def _addresses_of(self, node: bytes) -> Iterable[Known]:
        return [k for k in self._known.values() if k.node == node]

    def _back_off(self, known: Known, now: float) -> None:
        known.state = State.IDLE
        spread = self._rng.uniform(1 - JITTER, 1 + JITTER)
        banned_until = self._wait_for(known.node) if known.node else now
        known.next_dial = max(now + known.delay * spread, banned_until)
        known.delay = min(known.delay * 2, self._settings.backoff_max)
        if known.withdrawn:
            self._forget(known)


def _host_of(address: str) -> str | None:
    parsed = _ip_and_port(address)
    return None if parsed is None else parsed[0]


def _usable(address: str, reached_at: str | None) -> str | None:
    """``address`` in the form the table keys it by; None if it cannot be dialled.

    §4.1 allows ``a.b.c.d:port`` and ``[ipv6]:port`` only: a name or a missing
    port from a peer is ignored (a name would make this node resolve what a
    stranger chose). An unspecified host means the host ``reached_at`` names.
    """
    parsed = _ip_and_port(address)
    if parsed is None:
        return None
    host, port = parsed
    if host is None or _unspecified(host):
        reached = None if reached_at is None else _ip_and_port(reached_at)
        if reached is None or reached[0] is None or _unspecified(reached[0]):
            return None
        host = reached[0]
    return format_address(host, port)


def _ip_and_port(address: str) -> tuple[str | None, int] | None:
    """(IP or None for every interface, port 1-65535) of an address; None for anything else.

    The IP comes back in one canonical form (``canonical_host``), so that no peer can
    make one address into many table entries, each with a backoff of its own, by
    spelling it differently (``[::ffff:198.51.100.9]``, ``[2001:0DB8::1]``); a scope
    on anything but a link-local address means nothing, and the address is refused.
    """
    try:
        host, port = parse_address(address, default_port=0)
    except AddressError:
        return None
    if port == 0:
        return None
    if host is not None:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return None
        if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id and not ip.is_link_local:
            return None
        host = canonical_host(host)
    return host, port


def canonical_host(host: str) -> str:
    """An IP literal in its one canonical form (IPv4-mapped IPv6 as IPv4); a name unchanged."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _unspecified(host: str) -> bool:
    return ipaddress.ip_address(host).is_unspecified
