"""A daemon's peer edge on an in-memory node, for tests that drive it over loopback or memory."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TypeVar

import trio

from meshnode.engine.mesh import Mesh
from meshnode.engine.node import Node
from meshnode.engine.settings import PeerSettings, Settings
from meshnode.runtime.peers import PeerService
from meshnode.runtime.storethread import StoreThread
from meshnode.runtime.watch import WatchHub
from meshnode.store import MemoryStore
from tests.helpers import T0, identity

T = TypeVar("T")


class InlineStoreThread(StoreThread):
    """Runs store calls on the trio thread: a virtual clock's autojump never skips over one."""

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        await trio.lowlevel.checkpoint()
        return fn(*args)


def peer_service(
    config: PeerSettings,
    *,
    who: int = 1,
    hub: WatchHub | None = None,
    seed: int = 7,
    inline: bool = False,
) -> PeerService:
    """Node ``who`` with a memory store and a fixed wall clock; its randomness seeded.

    ``inline``: store calls on the trio thread, for tests on an autojumping clock.
    """
    me = identity(who)
    node = Node(me, MemoryStore(me.public_key))
    mesh = Mesh(
        node,
        agent="test",
        rng=random.Random(seed),
        settings=Settings(peers=config),
        now=trio.current_time(),
    )
    return PeerService(
        mesh,
        me,
        store_thread=InlineStoreThread() if inline else StoreThread(),
        hub=WatchHub() if hub is None else hub,
        config=config,
        wall_clock_ms=lambda: T0,
    )
