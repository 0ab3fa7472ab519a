"""Group commit for publishes: all that arrive while one batch is being stored go next.

A publish costs a transaction, and a transaction of one record costs four
times as much per record as one of a hundred. Publishes are queued in the
order their requests arrived (so pipelined publishes of one key keep their
order) and stored a batch at a time, each batch signed, committed and pushed
to peers in one store-thread call.
"""

from __future__ import annotations

from collections.abc import Sequence

import trio
from msgspec import Struct, field

from meshnode.core.record import Record, RecordError
from meshnode.engine.actions import Published
from meshnode.engine.events import Publish
from meshnode.engine.node import NodeError, Publication
from meshnode.runtime.peers import Doorbell, PeerService
from meshnode.store.base import StoreError

MAX_BATCH = 1024


class Ticket(Struct, eq=False):
    """A queued publish; ``wait`` gives its record or raises what refused it."""

    publication: Publication
    result: Record | Exception | None = None
    done: trio.Event = field(default_factory=trio.Event)

    async def wait(self) -> Record:
        await self.done.wait()
        if isinstance(self.result, Exception):
            raise self.result
        assert isinstance(self.result, Record)
        return self.result


class Publisher:
    def __init__(self, peers: PeerService) -> None:
        self._peers = peers
        self._queue: list[Ticket] = []
        self._bell = Doorbell()

    def submit(self, publication: Publication) -> Ticket:
        ticket = Ticket(publication)
        self._queue.append(ticket)
        self._bell.ring()
        return ticket

    async def run(self) -> None:
        while True:
            await self._bell.wait()
            while self._queue:
                batch = self._queue[:MAX_BATCH]
                del self._queue[:MAX_BATCH]
                results: Sequence[Record | NodeError | RecordError | StoreError]
                try:
                    actions = await self._peers.step(Publish([t.publication for t in batch]))
                except StoreError as exc:
                    results = [exc] * len(batch)
                else:
                    [results] = [a.results for a in actions if isinstance(a, Published)]
                for ticket, result in zip(batch, results, strict=True):
                    ticket.result = result
                    ticket.done.set()
