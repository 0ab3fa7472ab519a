"""Runs blocking store calls off the trio thread, one at a time.

SQLite calls block; running them on the trio thread would stall every socket.
A capacity limiter of one serialises them, which is what a single SQLite
connection needs. Calls are not abandoned on cancellation: a transaction
that started finishes (or rolls back) before the daemon exits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import trio

T = TypeVar("T")


class StoreThread:
    def __init__(self) -> None:
        self._limiter = trio.CapacityLimiter(1)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)
