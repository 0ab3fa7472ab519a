"""The records this node refused lately, so that it does not fetch them again and again.

A record the store refused (no room under a quota, from the future, expired,
superseded) would be refused again: every reconciliation round would find it
missing, want it, have the peer send it, verify its signature and refuse it once
more, every ``reconcile_interval`` with every peer that holds it. Its id is kept
here for ``DECLINE_FOR`` and not wanted meanwhile. After that it is wanted once
more, since room may have been made, the clock may have caught up or the peer may
have dropped it.

At most ``MAX_DECLINED`` ids are kept (about 140 bytes each); past that the oldest
are forgotten first, and such a record costs one fetch a round as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

DECLINE_FOR: Final = 600.0  # seconds an id is not wanted again once refused
MAX_DECLINED: Final = 20_000


class Declined:
    """Ids refused lately, oldest first, each with the time until which it is not wanted."""

    __slots__ = ("_until",)

    def __init__(self) -> None:
        self._until: dict[bytes, float] = {}

    def __len__(self) -> int:
        return len(self._until)

    def add(self, ids: Iterable[bytes], now: float) -> None:
        until = self._until
        for record_id in ids:
            until.pop(record_id, None)  # declined again: it moves to the young end
            until[record_id] = now + DECLINE_FOR
        while len(until) > MAX_DECLINED:
            del until[next(iter(until))]

    def without(self, ids: Sequence[bytes], now: float) -> list[bytes]:
        """``ids`` less those declined until after ``now``."""
        self._expire(now)
        until = self._until
        if not until:
            return list(ids)
        return [record_id for record_id in ids if record_id not in until]

    def _expire(self, now: float) -> None:
        # Insertion order is expiry order: every id gets the same wait from when it was added.
        until = self._until
        while until:
            oldest = next(iter(until))
            if until[oldest] > now:
                return
            del until[oldest]
