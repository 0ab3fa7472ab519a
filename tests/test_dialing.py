"""Dialling static peers: exponential backoff with jitter, on a virtual clock."""

from __future__ import annotations

import itertools
import random

import pytest
import trio

from meshnode.core.netkey import PUBLIC_NETWORK_KEY
from meshnode.mesh import Mesh
from meshnode.node import Node
from meshnode.runtime import peers as peers_module
from meshnode.runtime.peers import PeerService
from meshnode.runtime.storethread import StoreThread
from meshnode.runtime.watch import WatchHub
from meshnode.settings import PeerSettings
from meshnode.store import MemoryStore
from tests.helpers import T0, identity


def service(**config: float) -> PeerService:
    me = identity(1)
    mesh = Mesh(Node(me, MemoryStore(me.public_key)), agent="test", nonce=lambda: 1)
    settings = PeerSettings(network_key=PUBLIC_NETWORK_KEY, peers=(("192.0.2.1", 7744),), **config)
    return PeerService(mesh, StoreThread(), WatchHub(), settings, lambda: T0, rng=random.Random(7))


async def test_an_unreachable_peer_is_redialled_with_growing_jittered_delays(
    autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[float] = []

    async def unreachable(host: str, port: int) -> trio.SocketStream:
        attempts.append(trio.current_time())
        raise OSError("connection refused")

    monkeypatch.setattr(peers_module.trio, "open_tcp_stream", unreachable)
    with trio.move_on_after(600):
        await service(backoff_initial=1.0, backoff_max=60.0)._dial_loop("192.0.2.1", 7744)
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    expected = [min(2.0**n, 60.0) for n in range(len(gaps))]
    for gap, base in zip(gaps, expected, strict=True):
        assert 0.8 * base <= gap <= 1.2 * base  # exponential, capped, within ±20 % jitter
    assert len(set(round(g, 6) for g in gaps if g > 50)) > 1  # jitter: capped gaps differ
    assert 10 < len(attempts) < 20
