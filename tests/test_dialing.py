"""The peer service on a virtual clock, without a network: dialling static peers with
exponential backoff and jitter, and what it says of records refused as from the future."""

from __future__ import annotations

import itertools

import pytest
import trio

from meshnode.core.netkey import PUBLIC_NETWORK_KEY
from meshnode.engine.actions import AheadOfClock
from meshnode.engine.settings import PeerSettings
from meshnode.runtime import peers as peers_module
from meshnode.runtime.peers import AHEAD_LOG_INTERVAL, PeerService
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
    assert said.startswith("3 record(s) from peers claim to be created more than 30 days ahead")
    await trio.sleep(AHEAD_LOG_INTERVAL)
    peers._apply([AheadOfClock(1)])
    assert "5 record(s)" in caplog.records[-1].getMessage()  # the 4 held back, and this one
