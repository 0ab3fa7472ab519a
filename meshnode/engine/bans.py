"""Which peers this node refuses for a while, and why: a pure policy, time passed in.

Only faults that no honest implementation commits earn a ban (``protocol/peer.md`` §5.7):
today that is sending a record that does not verify (goodbye 2), since a node that
relays forged or corrupted records would spread them. Protocol violations do not: an
implementation under development trips them all the time, and they cost this node
no more than the connection, which its limits already bound. A banned node that
connects anyway completes the handshake, sends its hello and gets goodbye 7 with the
seconds left, so its operator learns why; ``meshnode unban`` lifts a ban by hand.
"""

from __future__ import annotations

import math

from msgspec import Struct

from meshnode.core.messages import GoodbyeCode

# Ban length in seconds per goodbye code this node sent; codes not listed never ban.
BAN_SECONDS: dict[int, float] = {GoodbyeCode.INVALID_RECORD: 600.0}
MAX_BANS = 4096  # a Sybil swarm of identities cannot grow the list past this


class Ban(Struct, frozen=True):
    node: bytes
    code: int
    reason: str
    since_ms: int
    until: float  # on the monotonic clock the list is driven with
    until_ms: int  # the same moment on the wall clock, for people

    def seconds_left(self, now: float) -> int:
        """Whole seconds until the ban ends, rounded up so that waiting them is enough."""
        return max(0, math.ceil(self.until - now))


class BanList:
    def __init__(self, seconds: dict[int, float] | None = None, most: int = MAX_BANS) -> None:
        self._seconds = BAN_SECONDS if seconds is None else seconds
        self._most = most
        self._bans: dict[bytes, Ban] = {}

    def ban(self, node: bytes, code: int, reason: str, now: float, now_ms: int) -> Ban | None:
        """Ban ``node`` for what goodbye ``code`` says it did; None if that earns no ban."""
        seconds = self._seconds.get(code)
        if seconds is None:
            return None
        self._expire(now)
        if node not in self._bans and len(self._bans) >= self._most:
            del self._bans[min(self._bans.values(), key=lambda b: b.until).node]
        ban = Ban(node, code, reason, now_ms, now + seconds, now_ms + round(seconds * 1000))
        self._bans[node] = ban
        return ban

    def get(self, node: bytes, now: float) -> Ban | None:
        """The ban on ``node`` in force at ``now``."""
        ban = self._bans.get(node)
        if ban is not None and ban.until <= now:
            del self._bans[node]
            return None
        return ban

    def lift(self, node: bytes) -> bool:
        """End a ban early; False if there was none."""
        return self._bans.pop(node, None) is not None

    def active(self, now: float) -> list[Ban]:
        """Bans in force, the soonest to end first."""
        self._expire(now)
        return sorted(self._bans.values(), key=lambda b: b.until)

    def _expire(self, now: float) -> None:
        self._bans = {node: ban for node, ban in self._bans.items() if ban.until > now}
