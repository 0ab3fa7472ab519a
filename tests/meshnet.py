"""Networks for the gossip tests: a thin use of the simulator, and one engine driven by hand.

``network`` and ``line`` build a ``meshnode.sim.network.Network`` of real
engines over instant links (real Noise handshakes, no latency, no jitter).
Where a test must send a peer's bytes itself, it drives one ``Mesh`` by hand
(``engine``, ``open_session``) over a plain channel standing in for Noise, and
reads the actions that ``Mesh.handle`` returns.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from msgspec import structs

from meshnode.core import messages as m
from meshnode.core.canonical import Value
from meshnode.core.identity import Identity
from meshnode.core.record import Record
from meshnode.core.session import SessionClosed
from meshnode.engine.actions import Action, Close, Published, Send
from meshnode.engine.events import Instant, Opened, Publish
from meshnode.engine.mesh import Mesh
from meshnode.engine.node import Node, Publication
from meshnode.engine.settings import Settings
from meshnode.sim.network import LinkModel, Network
from meshnode.store import MemoryStore, StoreLimits
from tests.helpers import T0, identity

# -- a simulated network ---------------------------------------------------------------


def network(
    n_nodes: int = 0,
    *,
    seed: int = 0,
    limits: StoreLimits | None = None,
    latency: float = 0.0,
    settings: Settings | None = None,
) -> Network:
    """``n_nodes`` started nodes, not connected, over links of ``latency`` and no jitter."""
    link = LinkModel(latency=latency, jitter=0.0, bandwidth=float("inf"))
    settings = settings or Settings()
    if limits is not None:
        settings = structs.replace(settings, store=limits)
    net = Network(random.Random(seed), link=link, settings=settings)
    for _ in range(n_nodes):
        net.add_node()
    return net


def line(n_nodes: int, *, seed: int = 0, settings: Settings | None = None) -> Network:
    """A settled line: node ``i`` dialled node ``i + 1``."""
    net = network(n_nodes, seed=seed, settings=settings)
    for i in range(n_nodes - 1):
        net.connect(i, i + 1)
    net.settle()
    return net


def publish(net: Network, index: int, key: str, value: Value = "v") -> Record:
    """Node ``index`` publishes one record; the record."""
    actions = net.handle(index, Publish([Publication(key, value)]))
    [result] = next(x for x in actions if isinstance(x, Published)).results
    assert isinstance(result, Record), result
    return result


def keys(net: Network, index: int) -> set[tuple[bytes, str]]:
    """(author, key) of everything node ``index`` holds, tombstones included."""
    store = net.nodes[index].store
    records = store.query(now_ms=net.instant().wall_ms, include_tombstones=True)
    return {(r.author, r.key) for r in records}


def closes(net: Network) -> list[tuple[int, SessionClosed]]:
    """(node, why) of every ``Close`` any node asks for from now on, as the network runs."""
    seen: list[tuple[int, SessionClosed]] = []

    def observe(index: int, actions: list[Action], now: float) -> None:
        seen.extend((index, x.why) for x in actions if isinstance(x, Close))

    net.observers.append(observe)
    return seen


# -- one engine by hand ----------------------------------------------------------------

ME = identity(100)
PEER = identity(101)


class PlainChannel:
    """No encryption: what the test writes is what the engine reads."""

    def seal(self, plaintext: bytes) -> bytes:
        return plaintext

    def open(self, data: bytes) -> bytes:
        return data


def at(mono: float) -> Instant:
    """The instant ``mono`` seconds after the start, the wall clock at ``T0`` then."""
    return Instant(mono, T0 + round(mono * 1000))


def engine(settings: Settings | None = None, *, who: Identity = ME, seed: int = 0) -> Mesh:
    """A node's engine over an empty memory store, started at time 0."""
    store = MemoryStore(who.public_key, settings.store if settings else None)
    return Mesh(Node(who, store), agent="test", rng=random.Random(seed), settings=settings)


def open_session(
    mesh: Mesh,
    conn: int = 1,
    *,
    remote: Identity = PEER,
    initiator: bool = False,
    channel: PlainChannel | None = None,
    address: str = "192.0.2.9:40001",
    source: str = "192.0.2.9",
    now: float = 0.0,
) -> list[Action]:
    """A handshake with ``remote`` finished on ``conn``: the engine's first actions."""
    opened = Opened(conn, remote.public_key, initiator, channel or PlainChannel(), address, source)
    return mesh.handle(opened, at(now))


def encode(*messages: m.Message) -> bytes:
    return b"".join(m.encode(message) for message in messages)


def hello(
    agent: str = "peer", *, features: Sequence[str] = (), listen: Sequence[str] = ()
) -> bytes:
    return m.encode(m.Hello(m.PROTOCOL_VERSION, tuple(features), tuple(listen), agent))


def sent(actions: Sequence[Action], conn: int = 1) -> list[m.Message]:
    """The messages the actions send on ``conn`` (over a plain channel)."""
    data = b"".join(x.data for x in actions if isinstance(x, Send) and x.conn == conn)
    decoded = m.MessageDecoder().feed(data)
    return [m.parse_deferred(x) if isinstance(x, m.Deferred) else x for x in decoded]


def closed(actions: Sequence[Action]) -> list[tuple[int, int]]:
    """(conn, goodbye code) of every session the actions close."""
    return [(x.conn, x.why.code) for x in actions if isinstance(x, Close)]
