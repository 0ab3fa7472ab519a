"""The records this node refused lately, so that its own rounds do not fetch them again and again.

A record the store refused (no room under a quota, from the future, expired,
superseded) would be refused again: every reconciliation round of this node's
would find it missing, want it, have the peer send it, verify its signature and
refuse it once more, every ``reconcile_interval`` with every peer that holds it.
Its id is kept here for ``DECLINE_FOR`` and left out of this node's wants
meanwhile, both those of its rounds and those answering a peer's ``have``. After
that it is wanted once more, since room may have been made, the clock may have
caught up or the peer may have dropped it; a reload that changes the store's
quotas, or ``SyncNow``, forgets them all at once.

What a peer pushes unasked, after a round of its own, is not wanted and so not held
back: a peer that dialled this node still sends such records once a round (the wire
has no way to say "not these").

At most ``MAX_DECLINED`` ids are kept (about 140 bytes each); past that the oldest
are forgotten first, and such a record costs one fetch a round as before.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Final

DECLINE_FOR: Final = 600.0  # seconds an id is not wanted again once refused
MAX_DECLINED: Final = 20_000


class Declined:
    """Ids refused lately, oldest first, each with the time until which it is not wanted.

    An ``OrderedDict``, not a dict: taking the oldest off a dict's front one at a time
    walks the holes its deletions left, quadratic in the ids expired at once.
    """

    __slots__ = ("_until",)

    def __init__(self) -> None:
        self._until: OrderedDict[bytes, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._until)

    def add(self, ids: Iterable[bytes], now: float) -> None:
        until = self._until
        for record_id in ids:
            until[record_id] = now + DECLINE_FOR
            until.move_to_end(record_id)  # declined again: it moves to the young end
        while len(until) > MAX_DECLINED:
            until.popitem(last=False)

    def clear(self) -> None:
        self._until.clear()

    def without(self, ids: Sequence[bytes], now: float) -> list[bytes]:
        """``ids`` less those declined until after ``now``."""
        until = self._until
        # Insertion order is expiry order: every id gets the same wait from when it was added.
        while until and next(iter(until.values())) <= now:
            until.popitem(last=False)
        if not until:
            return list(ids)
        return [record_id for record_id in ids if record_id not in until]
