"""An in-memory network of ``Mesh`` nodes, for deterministic tests of gossip and relay.

Links carry bytes instantly and in order; the plain channel stands in for Noise
(the handshake and encryption are tested on their own).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from meshnode.core.identity import Identity
from meshnode.engine.mesh import Mesh, Output
from meshnode.engine.node import Node
from meshnode.store import MemoryStore, StoreLimits
from tests.helpers import T0, identity


class PlainChannel:
    def seal(self, plaintext: bytes) -> bytes:
        return plaintext

    def open(self, data: bytes) -> bytes:
        return data


@dataclass
class Link:
    a: int  # node index
    a_peer: int  # peer id on node a
    b: int
    b_peer: int


@dataclass
class Network:
    nodes: list[Mesh] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    now: float = 0.0
    now_ms: int = T0
    delivered_bytes: int = 0
    seed: int = 0

    def add(self, n: int, limits: StoreLimits | None = None) -> Mesh:
        who: Identity = identity(100 + n)
        rng = random.Random(self.seed * 1000 + n)
        mesh = Mesh(
            Node(who, MemoryStore(who.public_key, limits)),
            agent="test",
            nonce=lambda: rng.getrandbits(63),
        )
        self.nodes.append(mesh)
        return mesh

    def connect(self, a: int, b: int) -> Link:
        a_peer, _ = self.nodes[a].open(
            remote=self.nodes[b].node.identity.public_key,
            initiator=True,
            channel=PlainChannel(),
            address=f"node{b}",
            now=self.now,
            now_ms=self.now_ms,
        )
        b_peer, _ = self.nodes[b].open(
            remote=self.nodes[a].node.identity.public_key,
            initiator=False,
            channel=PlainChannel(),
            address=f"node{a}",
            now=self.now,
            now_ms=self.now_ms,
        )
        link = Link(a, a_peer, b, b_peer)
        self.links.append(link)
        return link

    def disconnect(self, link: Link) -> None:
        self.nodes[link.a].drop(link.a_peer)
        self.nodes[link.b].drop(link.b_peer)
        self.links.remove(link)

    def settle(self, max_rounds: int = 1000) -> int:
        """Deliver bytes until every link is quiet; return how many rounds it took."""
        for rounds in range(max_rounds):
            moved = False
            for link in list(self.links):
                for src, src_peer, dst, dst_peer in (
                    (link.a, link.a_peer, link.b, link.b_peer),
                    (link.b, link.b_peer, link.a, link.a_peer),
                ):
                    data = self.nodes[src].take_data(src_peer)
                    if data:
                        moved = True
                        self.delivered_bytes += len(data)
                        self.nodes[dst].receive(dst_peer, data, self.now, self.now_ms)
            if not moved:
                return rounds
        raise AssertionError("the network did not settle")

    def advance(self, seconds: float) -> list[Output]:
        self.now += seconds
        self.now_ms += int(seconds * 1000)
        return [mesh.handle_timers(self.now, self.now_ms) for mesh in self.nodes]

    def keys(self, n: int) -> set[tuple[bytes, str]]:
        return {
            (r.author, r.key)
            for r in self.nodes[n].node.store.query(now_ms=self.now_ms, include_tombstones=True)
        }
