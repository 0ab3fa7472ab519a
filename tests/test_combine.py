"""Steps asked for while one trip to the store thread is under way go together in the next."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from meshnode.runtime.combine import Combiner


class Trips:
    """A stand-in for the store thread: each trip takes a moment of virtual time.

    ``call`` is one caller: what it got back (or raised) is in ``outcomes``.
    """

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.outcomes: dict[str, object] = {}
        self.combiner: Combiner[str, str] = Combiner(self.run)

    async def run(self, items: list[str]) -> list[str | Exception]:
        self.batches.append(items)
        await trio.sleep(1)
        return [ValueError(item) if item.startswith("bad") else item.upper() for item in items]

    async def call(self, item: str) -> None:
        try:
            self.outcomes[item] = await self.combiner(item)
        except ValueError as exc:
            self.outcomes[item] = exc


async def test_a_lone_call_goes_at_once_and_alone(autojump_clock: trio.abc.Clock) -> None:
    trips = Trips()
    assert await trips.combiner("a") == "A"
    assert await trips.combiner("b") == "B"
    assert trips.batches == [["a"], ["b"]]


async def test_calls_made_during_a_trip_go_together_in_the_next_in_order(
    autojump_clock: trio.abc.Clock,
) -> None:
    trips = Trips()
    async with trio.open_nursery() as nursery:
        for item in "abcd":  # "a" is on its way, then the others ask, in this order
            nursery.start_soon(trips.call, item)
            await trio.testing.wait_all_tasks_blocked()
    assert trips.batches == [["a"], ["b", "c", "d"]]
    assert trips.outcomes == {"a": "A", "b": "B", "c": "C", "d": "D"}


async def test_an_item_that_fails_fails_for_its_caller_only(
    autojump_clock: trio.abc.Clock,
) -> None:
    trips = Trips()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trips.call, "a")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(trips.call, "bad")
        nursery.start_soon(trips.call, "c")
    assert trips.outcomes["a"] == "A" and trips.outcomes["c"] == "C"
    assert isinstance(trips.outcomes["bad"], ValueError)


async def test_a_batch_whose_caller_is_cancelled_still_runs_for_the_others(
    autojump_clock: trio.abc.Clock,
) -> None:
    trips = Trips()
    async with trio.open_nursery() as nursery, trio.open_nursery() as leader:
        leader.start_soon(trips.call, "a")
        await trio.testing.wait_all_tasks_blocked()  # "a" leads its trip...
        nursery.start_soon(trips.call, "b")  # ... "b" waits for the next...
        await trio.testing.wait_all_tasks_blocked()
        leader.cancel_scope.cancel()  # ... and the leader's caller gives up
    assert trips.batches == [["a"], ["b"]]  # its trip was finished, and "b" went next
    assert trips.outcomes["b"] == "B"


async def test_a_trip_that_fails_as_a_whole_is_heard_by_each_of_its_callers(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def broken(items: list[str]) -> list[str | Exception]:
        await trio.sleep(1)
        raise OSError("the disk went away")

    combiner: Combiner[str, str] = Combiner(broken)
    heard: list[str] = []

    async def call(item: str) -> None:
        with pytest.raises(OSError, match="disk"):
            await combiner(item)
        heard.append(item)

    async with trio.open_nursery() as nursery:
        for item in "abc":
            nursery.start_soon(call, item)
    assert sorted(heard) == ["a", "b", "c"]
