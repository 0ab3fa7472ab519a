"""Which peer connections a node keeps while they handshake, and how it talks about a flood.

A pure policy, time passed in, like ``bans``; ``runtime/peers.py`` is its trio edge
(``protocol/peer.md`` §5.8).

Until message 1 of the handshake arrives, nothing says whether a connection's
sender holds the network key, yet it holds one of the node's connection slots.
A plain cap lets anyone without the key fill every slot by reopening closed
connections, and so keep every honest peer out. So inbound connections that
are still handshaking (*half-open*) get a small quota of their own, overall and
per source, and when a quota is full a newcomer takes the place of the oldest
half-open connection (of its own source, if that source's quota is full)
instead of being refused. A flood then mostly evicts itself, while an honest
peer, which sends message 1 at once and finishes in a few round trips, gets
through. A half-open connection whose message 1 verified (its sender holds the
key) goes only after every one that has not. Established sessions are never
evicted for a half-open connection: only when every slot holds one, or the
source has as many sessions as it may, is a newcomer refused.

A *source* is an IPv4 address, or the /64 network of an IPv6 address, since one
host commonly holds a whole /64.

``LogThrottle`` bounds what a flood makes the node say: the first event after a
quiet spell is logged in full at once, the rest are counted and summed up in
one line per interval, with the sources and reasons seen most.
"""

from __future__ import annotations

import enum
import ipaddress
import itertools
from collections import Counter
from collections.abc import Iterable

from msgspec import Struct


def source_of(host: str) -> str:
    """What a per-source quota counts for ``host``: the address, or an IPv6 address's /64."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])  # without an IPv6 zone
    except ValueError:
        return host  # a name (a dialled peer): counted as it is
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class Limits(Struct, frozen=True):
    connections: int  # peer connections at once, either direction, handshaking or not
    half_open: int  # inbound connections still handshaking
    half_open_per_source: int
    sessions_per_source: int  # established inbound sessions from one source


class Stage(enum.Enum):
    HALF_OPEN = "half-open"  # accepted; message 1 has not verified yet
    KEYED = "keyed"  # message 1 verified: the sender holds the network key
    ESTABLISHED = "established"


class Refusal(enum.StrEnum):
    """Why a newcomer was turned away; the values are what the log says."""

    FULL = "refused: every slot holds a session"
    SOURCE_FULL = "refused: its source has as many sessions as it may"


EVICTED = "evicted for a newer connection"


class Admitted(Struct, frozen=True):
    ticket: int
    evicted: int | None  # the half-open connection to close to make room, if any


class Refused(Struct, frozen=True):
    why: Refusal


class _Entry(Struct):
    source: str | None  # None for a connection this node dialled: never evicted
    since: float
    stage: Stage


class Admission:
    """Every peer connection from accept (or dial) until it closes, by ticket."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._tickets = itertools.count(1)
        self._entries: dict[int, _Entry] = {}
        self._handshaking: dict[int, _Entry] = {}  # inbound and not established, oldest first
        self._handshaking_from: Counter[str] = Counter()
        self._sessions_from: Counter[str] = Counter()

    @property
    def connections(self) -> int:
        return len(self._entries)

    @property
    def half_open(self) -> int:
        return len(self._handshaking)

    def half_open_from(self, source: str) -> int:
        return self._handshaking_from[source]

    def sessions_from(self, source: str) -> int:
        return self._sessions_from[source]

    def arrive(self, source: str, now: float) -> Admitted | Refused:
        """An inbound connection from ``source``: admit it (evicting one) or refuse it."""
        if self._sessions_from[source] >= self.limits.sessions_per_source:
            return Refused(Refusal.SOURCE_FULL)
        victim = self._victim_for(source)
        if victim is None and self.connections >= self.limits.connections:
            return Refused(Refusal.FULL)
        if victim is not None:
            self.leave(victim)
        ticket = self._add(_Entry(source, now, Stage.HALF_OPEN))
        self._handshaking[ticket] = self._entries[ticket]
        self._handshaking_from[source] += 1
        return Admitted(ticket, victim)

    def dial(self, now: float) -> int:
        """A connection this node dialled: counted, never evicted nor refused."""
        return self._add(_Entry(None, now, Stage.HALF_OPEN))

    def keyed(self, ticket: int) -> None:
        """Message 1 verified: the connection is evicted only after those that did not."""
        entry = self._handshaking.get(ticket)
        if entry is not None:
            entry.stage = Stage.KEYED

    def establish(self, ticket: int) -> bool:
        """The handshake finished; False if the connection must close instead (it was
        evicted meanwhile, or its source has as many sessions as it may), and then it
        no longer counts: nothing can pick it for eviction while it closes."""
        entry = self._entries.get(ticket)
        if entry is None:
            return False
        if entry.stage is Stage.ESTABLISHED:
            return True
        if entry.source is not None:
            if self._sessions_from[entry.source] >= self.limits.sessions_per_source:
                self.leave(ticket)
                return False
            self._stop_handshaking(ticket, entry.source)
            self._sessions_from[entry.source] += 1
        entry.stage = Stage.ESTABLISHED
        return True

    def leave(self, ticket: int) -> None:
        """The connection closed (or is being evicted); unknown tickets are ignored."""
        entry = self._entries.pop(ticket, None)
        if entry is None or entry.source is None:
            return
        if entry.stage is Stage.ESTABLISHED:
            _decrement(self._sessions_from, entry.source)
        else:
            self._stop_handshaking(ticket, entry.source)

    def _add(self, entry: _Entry) -> int:
        ticket = next(self._tickets)
        self._entries[ticket] = entry
        return ticket

    def _stop_handshaking(self, ticket: int, source: str) -> None:
        del self._handshaking[ticket]
        _decrement(self._handshaking_from, source)

    def _victim_for(self, source: str) -> int | None:
        """The half-open connection a newcomer from ``source`` replaces, if a quota is full."""
        if self._handshaking_from[source] >= self.limits.half_open_per_source:
            return self._first_to_go(t for t, e in self._handshaking.items() if e.source == source)
        if (
            len(self._handshaking) >= self.limits.half_open
            or self.connections >= self.limits.connections
        ):
            return self._first_to_go(self._handshaking)
        return None

    def _first_to_go(self, tickets: Iterable[int]) -> int | None:
        """The oldest of ``tickets`` whose sender has not shown the key, else the oldest."""
        return min(
            tickets,
            key=lambda t: (self._handshaking[t].stage is Stage.KEYED, self._handshaking[t].since),
            default=None,
        )


def _decrement(counter: Counter[str], key: str) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]


class LogThrottle:
    """One kind of event a flood can repeat, logged at most once per ``interval``.

    ``note`` says whether to log this event in full (the first after a quiet
    spell); the others are counted, and ``summary`` gives the line that sums
    them up once the interval since the last line has passed. Sources are
    counted up to ``most_sources`` distinct ones per line, the rest as "others",
    so a swarm of addresses cannot grow the table.
    """

    def __init__(
        self, what: str, interval: float = 10.0, top: int = 3, most_sources: int = 256
    ) -> None:
        self.what = what
        self.interval = interval
        self._top = top
        self._most_sources = most_sources
        self._last_line: float | None = None  # None: quiet, the next event is logged in full
        self._sources: Counter[str] = Counter()
        self._reasons: Counter[str] = Counter()

    @property
    def due(self) -> float:
        """When ``summary`` next has something to say or to close (inf while quiet)."""
        return float("inf") if self._last_line is None else self._last_line + self.interval

    def note(self, source: str, reason: str, now: float) -> bool:
        """Count one event; True if it is the first in a while and should be logged in full."""
        if self._last_line is None or (now >= self.due and not self._reasons):
            self._last_line = now
            return True
        if source not in self._sources and len(self._sources) >= self._most_sources:
            source = "others"
        self._sources[source] += 1
        self._reasons[reason] += 1
        return False

    def summary(self, now: float) -> str | None:
        """The line that sums up the events counted since the last line, once it is due."""
        if self._last_line is None or now < self.due:
            return None
        if not self._reasons:
            self._last_line = None  # a quiet interval: the next event is told in full again
            return None
        count = self._reasons.total()
        line = (
            f"{count:,} {self.what} in the last {now - self._last_line:.0f} s"
            f" (top sources: {_tally(self._sources, self._top)}; {_tally(self._reasons)})"
        )
        self._sources.clear()
        self._reasons.clear()
        self._last_line = now
        return line


def _tally(counts: Counter[str], top: int | None = None) -> str:
    """The keys seen most, each with its count after a multiplication sign."""
    return ", ".join(f"{key} \N{MULTIPLICATION SIGN}{n:,}" for key, n in counts.most_common(top))
