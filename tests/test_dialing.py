"""The peer service on a virtual clock, without a network: dialling static peers with
exponential backoff and jitter, and what it says of records refused as from the future."""

from __future__ import annotations

import itertools

import pytest
import trio
import trio.testing

from meshnode.core.netkey import PUBLIC_NETWORK_KEY
from meshnode.engine.actions import Action, AheadOfClock, Send
from meshnode.engine.events import Congested, Event
from meshnode.engine.settings import PeerSettings
from meshnode.runtime import peers as peers_module
from meshnode.runtime.peers import (
    AHEAD_LOG_INTERVAL,
    SEND_BUFFER_LIMIT,
    WRITE_CHUNK,
    WRITE_TIMEOUT,
    Connection,
    PeerService,
)
from tests.engine_driver import peer_service


def service(**config: float) -> PeerService:
    settings = PeerSettings(network_key=PUBLIC_NETWORK_KEY, peers=(("192.0.2.1", 7744),), **config)
    return peer_service(settings, inline=True)


async def test_an_unreachable_peer_is_redialled_with_growing_jittered_delays(
    autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[float] = []

    async def unreachable(host: str, port: int) -> trio.SocketStream:
        attempts.append(trio.current_time())
        raise OSError("connection refused")

    monkeypatch.setattr(peers_module.trio, "open_tcp_stream", unreachable)
    with trio.move_on_after(600):
        await service(backoff_initial=1.0, backoff_max=60.0).run([])
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    expected = [min(2.0**n, 60.0) for n in range(len(gaps))]
    for gap, base in zip(gaps, expected, strict=True):
        assert 0.8 * base <= gap <= 1.2 * base  # exponential, capped, within ±20 % jitter
    assert len(set(round(g, 6) for g in gaps if g > 50)) > 1  # jitter: capped gaps differ
    assert 10 < len(attempts) < 20


async def test_records_refused_as_from_the_future_are_said_at_most_every_ten_minutes(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    peers = service()
    for count in (3, 4):
        peers._apply([AheadOfClock(count)])
    [said] = [r.getMessage() for r in caplog.records if "ahead" in r.getMessage()]
    assert said.startswith("event=records_ahead_of_clock count=3: records from peers claim")
    assert "more than 30 days ahead" in said
    await trio.sleep(AHEAD_LOG_INTERVAL)
    peers._apply([AheadOfClock(1)])
    assert "count=5:" in caplog.records[-1].getMessage()  # the 4 held back, and this one


async def test_a_send_past_the_buffer_limit_stops_the_reader_and_tells_the_engine_at_once() -> None:
    """Even while the writer is busy sending: the engine must hold back what comes next."""
    peers = service()
    stream, _ = trio.testing.memory_stream_pair()
    connection = Connection(stream, "192.0.2.1:7744", True, b"n" * 32, 0)
    peers._connections[1] = connection
    told: list[Event] = []

    async def step(event: Event) -> list[Action]:
        told.append(event)
        return []

    peers.step = step  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        peers._nursery = nursery
        peers._apply([Send(1, b"x" * SEND_BUFFER_LIMIT), Send(1, b"x")])
        assert connection.congested  # the reader reads no more questions from now on
        await trio.testing.wait_all_tasks_blocked()
        assert told == [Congested(1)]
        assert connection.announced.is_set()


async def write_to(reader_pace: float | None) -> tuple[float, bool]:
    """How long the writer takes over 16 chunks to a peer that reads one chunk every
    ``reader_pace`` seconds (None: never), and whether it gave the peer up as dead."""
    peers = service()
    ours, theirs = trio.testing.lockstep_stream_pair()
    connection = Connection(ours, "192.0.2.1:7744", True, b"n" * 32, 0)
    connection.pending += b"x" * (16 * WRITE_CHUNK)
    connection.closing = True  # so the writer returns once everything has left
    connection.doorbell.ring()
    started = trio.current_time()
    dropped = False

    async def read_slowly() -> None:
        while reader_pace is not None:
            await trio.sleep(reader_pace)
            await theirs.receive_some(WRITE_CHUNK)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_slowly)
        try:
            await peers._writer(1, connection, trio.CancelScope())
        except trio.TooSlowError:
            dropped = True
        nursery.cancel_scope.cancel()
    return trio.current_time() - started, dropped


async def test_a_slow_reader_that_keeps_reading_is_written_to_until_it_has_everything(
    autojump_clock: trio.abc.Clock,
) -> None:
    pace = WRITE_TIMEOUT * 2 / 3  # a chunk in 20 s: all of it takes 5 minutes
    took, dropped = await write_to(pace)
    assert not dropped and took >= 16 * pace


async def test_a_reader_that_takes_nothing_is_dropped_after_the_write_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    took, dropped = await write_to(None)
    assert dropped and took == WRITE_TIMEOUT
