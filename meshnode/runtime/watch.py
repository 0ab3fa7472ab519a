"""Fan-out of stored records to ``watch`` subscribers.

Each subscriber has a bounded buffer. A subscriber that falls behind by more
than the buffer is cut off (told so by its connection) rather than letting the
daemon's memory grow: a watcher that wants everything must keep reading.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable

import trio
from msgspec import Struct, field

from meshnode.core.record import Record

log = logging.getLogger(__name__)

WATCH_BUFFER = 4096


class Subscription(Struct, eq=False):
    id: int
    prefix: str
    author: bytes | None
    send: trio.MemorySendChannel[Record]
    receive: trio.MemoryReceiveChannel[Record]
    overflowed: bool = field(default=False)

    def matches(self, record: Record) -> bool:
        return record.key.startswith(self.prefix) and (
            self.author is None or record.author == self.author
        )


class WatchHub:
    def __init__(self, buffer: int = WATCH_BUFFER) -> None:
        self._buffer = buffer
        self._ids = itertools.count(1)
        self._subscriptions: dict[int, Subscription] = {}
        self._listeners: list[Callable[[Record], None]] = []

    def __len__(self) -> int:
        return len(self._subscriptions)

    def subscribe(self, prefix: str, author: bytes | None) -> Subscription:
        send, receive = trio.open_memory_channel[Record](self._buffer)
        sub = Subscription(next(self._ids), prefix, author, send, receive)
        self._subscriptions[sub.id] = sub
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscriptions.pop(sub.id, None)
        sub.send.close()

    @property
    def listeners(self) -> int:
        return len(self._listeners)

    def listen(self, listener: Callable[[Record], None]) -> None:
        """Call ``listener`` with every stored record, at once: for a part of the daemon
        (hooks) that keeps its own bounded queue, and so is never cut off."""
        if listener not in self._listeners:
            self._listeners.append(listener)

    def unlisten(self, listener: Callable[[Record], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def publish(self, records: Iterable[Record]) -> None:
        for record in records:
            for listener in self._listeners:
                listener(record)
            for sub in list(self._subscriptions.values()):
                if not sub.matches(record):
                    continue
                try:
                    sub.send.send_nowait(record)
                except trio.WouldBlock:
                    log.warning(
                        "event=watch_overflow watch=%d prefix=%r: fell behind, ended",
                        sub.id,
                        sub.prefix,
                    )
                    sub.overflowed = True
                    self.unsubscribe(sub)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self.unsubscribe(sub)  # its connection is ending and reads no more
