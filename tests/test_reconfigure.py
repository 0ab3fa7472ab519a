"""A reload reaching the engine (``Reconfigure``): what changes at once, and what it ends.

The rules: limits, quotas and static peers apply at once; a static peer that is dropped
is no longer redialled but its session goes on; a new network key ends every session
with goodbye 0, "left this network"; nothing else is closed.
"""

from __future__ import annotations

import random

from msgspec import structs

from meshnode.core import messages as m
from meshnode.engine.actions import Close, Dial
from meshnode.engine.events import DialFailed, Lost, Reconfigure, Tick
from meshnode.engine.peering import PeerPolicy
from meshnode.engine.settings import PeerSettings, Settings
from meshnode.store import StoreLimits
from tests.meshnet import at, engine, open_session, sent

A = ("192.0.2.1", 7744)
B = ("192.0.2.2", 7744)


def dials(actions: list[object]) -> list[str]:
    return [x.address for x in actions if isinstance(x, Dial)]


def with_peers(*peers: tuple[str, int], key: bytes | None = None) -> Settings:
    settings = (
        PeerSettings(peers=peers) if key is None else PeerSettings(peers=peers, network_key=key)
    )
    return Settings(peers=settings)


def test_a_new_static_peer_is_dialled_at_once() -> None:
    mesh = engine(with_peers(A))
    assert dials(mesh.handle(Tick(), at(0))) == ["192.0.2.1:7744"]
    mesh.handle(Reconfigure(with_peers(A, B)), at(1))
    assert dials(mesh.handle(Tick(), at(1))) == ["192.0.2.2:7744"]


def test_a_dropped_static_peer_is_not_redialled() -> None:
    mesh = engine(with_peers(A, B))
    mesh.handle(Tick(), at(0))
    mesh.handle(Reconfigure(with_peers(A)), at(1))
    mesh.handle(DialFailed("192.0.2.1:7744"), at(1))
    mesh.handle(DialFailed("192.0.2.2:7744"), at(1))
    redialled = [a for t in range(2, 120) for a in dials(mesh.handle(Tick(), at(t)))]
    assert "192.0.2.2:7744" not in redialled
    assert "192.0.2.1:7744" in redialled


def test_a_dropped_static_peers_session_goes_on_until_it_ends() -> None:
    policy = PeerPolicy(PeerSettings(peers=(A,)), random.Random(0))
    [address] = policy.due(0)
    policy.opened(b"n" * 32, address, initiator=True, now=0)
    policy.reconfigure(PeerSettings(), now=1)
    assert [v.state for v in policy.addresses()] == ["connected"]
    policy.ended(b"n" * 32, address, initiator=True, now=2)
    assert policy.addresses() == []
    assert policy.due(1000) == []


def test_store_quotas_change_at_once() -> None:
    mesh = engine()
    limits = StoreLimits(max_total_bytes=1024)
    mesh.handle(Reconfigure(structs.replace(Settings(), store=limits)), at(0))
    assert mesh.node.store.limits == limits


def test_a_new_network_key_ends_every_session_and_only_then() -> None:
    mesh = engine()
    open_session(mesh, 1)
    same = mesh.handle(Reconfigure(with_peers(A)), at(1))
    assert not [x for x in same if isinstance(x, Close)]
    actions = mesh.handle(Reconfigure(with_peers(A, key=bytes(32))), at(2))
    assert m.Goodbye(m.GoodbyeCode.NORMAL, m.Why.LEFT_NETWORK) in sent(actions)
    [close] = [x for x in actions if isinstance(x, Close)]
    assert (close.conn, close.why.reason) == (1, "left this network")
    mesh.handle(Lost(1), at(3))
    assert mesh.peers() == []
