"""Calls asked for while one is under way wait, and all go together in the next.

The peer service hands every event to the engine on the store thread, and a trip
there costs some 120 µs of CPU whatever it carries: two thread switches and trio's
bookkeeping. Under load, as when eight nodes find each other on two cores, many
tasks want a step at once; one trip now carries all of them (the way a database
commits a group of transactions with one flush), and on an idle node a step still
goes at once, alone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import trio

T = TypeVar("T")
R = TypeVar("R")


class _Call(Generic[T, R]):
    __slots__ = ("done", "item", "result")

    def __init__(self, item: T) -> None:
        self.item = item
        self.result: R | Exception | None = None
        self.done = False


class Combiner(Generic[T, R]):
    """``await combiner(item)``: ``run`` is called with every item queued meanwhile.

    ``run`` returns one result per item, in order, each a value or the exception its
    caller should raise. One ``run`` at a time, in the order the items came; a batch
    begun is finished even if the caller that started it is cancelled, since others
    wait on it. A caller cancelled while it waits may still have its item run, with
    the next batch.
    """

    def __init__(self, run: Callable[[list[T]], Awaitable[list[R | Exception]]]) -> None:
        self._run = run
        self._queued: list[_Call[T, R]] = []
        self._running = False
        self._ran: trio.Event | None = None  # set when the batch under way has run

    async def __call__(self, item: T) -> R:
        call: _Call[T, R] = _Call(item)
        self._queued.append(call)
        while self._running and not call.done:
            if self._ran is None:
                self._ran = trio.Event()
            await self._ran.wait()
        if not call.done:
            await self._run_queued()
        if isinstance(call.result, Exception):
            raise call.result
        return call.result  # type: ignore[return-value]  # R, once done

    async def _run_queued(self) -> None:
        self._running = True
        calls, self._queued = self._queued, []
        try:
            with trio.CancelScope(shield=True):
                try:
                    results = await self._run([call.item for call in calls])
                except Exception as exc:  # the batch as a whole: each of its callers hears it
                    results = [exc] * len(calls)
            for call, result in zip(calls, results, strict=True):
                call.result, call.done = result, True
        finally:
            for call in calls:  # a BaseException ended the batch: no caller waits for ever
                if not call.done:
                    call.result, call.done = RuntimeError("the batch did not run"), True
            self._running = False
            ran, self._ran = self._ran, None
            if ran is not None:
                ran.set()
