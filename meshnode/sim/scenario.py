"""One simulated run: a topology, a publishing workload, faults, and what came of them.

The timeline of a run of ``seconds``: records are published at random times in
its first third, by random live nodes (one in ten an update of a key the node
published before, one in twenty a deletion); a crash takes ``crash`` of the
nodes down at a fifth of the run, for ``CRASH_DOWNTIME``; a partition splits the
network in two halves at a quarter of the run, for ``partition`` seconds; churn
replaces ``churn`` of the nodes, one at a time, evenly from a tenth of the run
to two fifths, and ``drops`` sessions are reset over the same span. The faults
end when the last of them does; ``converge_ms`` counts from then (or from the
last publish, if later) until every live node holds every expected record. The
run goes on to its end, and the invariants are checked:

- **converged**: every live node holds the same record set, and it is the
  expected one: the newest version of every key published, where its author's
  store survives or some live node still holds it;
- **verified**: every record every live node holds verifies;
- **bounded**: no node ever had more sessions than its ``max_peers``, a session
  outbox past twice its limit, or a store past its byte limit (sampled each
  virtual second);
- **durable**: every record a node acknowledged is still in its own store (or
  a newer version of its key) while that store survives.
"""

from __future__ import annotations

import gc
import math
import random
import time
from collections import defaultdict
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

from msgspec import Struct, field, structs

from meshnode.core.addresses import format_address
from meshnode.core.record import Record
from meshnode.engine import actions as a
from meshnode.engine import events as e
from meshnode.engine.dissemination import Fate
from meshnode.engine.node import Publication
from meshnode.engine.settings import Settings
from meshnode.sim.network import PORT, LinkModel, Network, SimNode, host_of
from meshnode.sim.overlay import Shape, shape_of

CRASH_DOWNTIME = 10.0
MAX_NODES = 100_000
MAX_RECORDS = 10_000_000
MAX_SECONDS = 7 * 24 * 3600.0
MAX_DROPS = 1_000_000
UPDATE_SHARE = 0.10
DELETE_SHARE = 0.05
SAMPLE_INTERVAL = 1.0  # how often the bounds are checked, in virtual seconds
ROOM_HEARD = 0.2  # seconds: in a room, each node has heard every service by then
VALUE_BYTES = 64


class Scenario(Struct, frozen=True):
    nodes: int
    records: int
    seconds: float
    seed: int = 0
    degree: int = 5  # neighbours each node has (each link is a static peer of one end)
    crash: float = 0.0  # share of nodes crashed at once
    partition: float = 0.0  # seconds the network is split in two
    churn: float = 0.0  # share of nodes replaced over the run
    drops: int = 0  # sessions reset by the network over the run
    room: bool = False  # no static peers: everyone hears of everyone, as by mDNS at an event
    link: LinkModel = field(default_factory=LinkModel)
    settings: Settings = field(default_factory=Settings)

    def __post_init__(self) -> None:
        """Refuse runs that cannot mean anything: faults outlasting the run, impossible graphs."""
        for name, share in (("crash", self.crash), ("churn", self.churn)):
            if not 0 <= share <= 1:
                raise ScenarioError(f"{name} is a share of the nodes, 0 to 1")
        if not 1 <= self.nodes <= MAX_NODES:
            raise ScenarioError(f"nodes must be 1 to {MAX_NODES:,}")
        if not 0 <= self.records <= MAX_RECORDS:
            raise ScenarioError(f"records must be 0 to {MAX_RECORDS:,}")
        if not 0 < self.seconds <= MAX_SECONDS:
            raise ScenarioError(f"seconds must be more than 0 and at most {MAX_SECONDS:,}")
        if not 0 <= self.drops <= MAX_DROPS:
            raise ScenarioError(f"drops must be 0 to {MAX_DROPS:,}")
        if not 0 <= self.partition < math.inf:
            raise ScenarioError("partition is a number of seconds, 0 or more")
        if self.room:
            # As the daemon with mDNS on: what discovery finds and what peers exchange.
            sources = frozenset({"mdns", "exchange"})
            peers = structs.replace(self.settings.peers, dial_sources=sources)
            structs.force_setattr(self, "settings", structs.replace(self.settings, peers=peers))
        elif self.nodes > 1 and self.degree < 1:
            raise ScenarioError(
                "degree must be at least 1: a node without neighbours hears nothing"
            )
        # More neighbours than there are other nodes: every pair is linked, and the report says so.
        structs.force_setattr(self, "degree", min(self.degree, self.nodes - 1))
        if self.crash and self.seconds / 5 + CRASH_DOWNTIME >= self.seconds:
            raise ScenarioError(
                f"a crash at a fifth of the run, {CRASH_DOWNTIME:g} s long, needs a run"
                f" longer than {CRASH_DOWNTIME * 5 / 4:g} s"
            )
        if self.partition and self.seconds / 4 + self.partition >= self.seconds:
            raise ScenarioError(
                f"a partition at a quarter of the run, {self.partition:g} s long, needs a run"
                f" longer than {self.partition * 4 / 3:g} s"
            )


class ScenarioError(ValueError):
    """A scenario that cannot run as asked; the message says why."""


class Report(Struct):
    scenario: Scenario
    delivered_fraction: float
    copies_per_node: float
    rmr: float
    t50_ms: float | None
    t99_ms: float | None
    t100_ms: float | None
    converged: bool
    converge_ms: float | None
    invariants: dict[str, bool]
    live_nodes: int
    published: int  # records acknowledged (a publish while every node is down is not made)
    components: int  # separate parts of the graph as built (1: connected)
    wire_bytes: int
    bytes_per_record: float | None  # wire bytes per delivered record, over the record's size
    events: int
    wall_s: float
    trace_digest: str
    overlay: Shape  # the sessions between live nodes at the end

    def as_json(self) -> dict[str, Any]:
        s = self.scenario
        return {
            "nodes": s.nodes,
            "records": s.records,
            "seconds": s.seconds,
            "seed": s.seed,
            "degree": None if s.room else s.degree,  # in a room the policy chooses
            "crash": s.crash,
            "partition": s.partition,
            "churn": s.churn,
            "drops": s.drops,
            "room": s.room,
            "live_nodes": self.live_nodes,
            "published": self.published,
            "components": self.components,
            "delivered_fraction": round(self.delivered_fraction, 6),
            "copies_per_node": round(self.copies_per_node, 3),
            "rmr": round(self.rmr, 3),
            "t50_ms": _ms(self.t50_ms),
            "t99_ms": _ms(self.t99_ms),
            "t100_ms": _ms(self.t100_ms),
            "converged": self.converged,
            "converge_ms": _ms(self.converge_ms),
            "invariants": self.invariants,
            "wire_bytes": self.wire_bytes,
            "bytes_per_record": _rounded(self.bytes_per_record),
            "events": self.events,
            "wall_s": round(self.wall_s, 3),
            "trace_digest": self.trace_digest,
            "overlay": self.overlay.as_json(),
        }


def _heard(index: int) -> e.Hint:
    """What mDNS discovery hands the engine for node ``index``'s service."""
    return e.Hint(format_address(host_of(index), PORT), "mdns", group=host_of(index))


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class _Published(Struct):
    record: Record
    at: float


class Run:
    """A scenario in progress: the network, the workload, and what the checks saw."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.rng = random.Random(scenario.seed)
        self.net = Network(self.rng, link=scenario.link, settings=scenario.settings)
        self.net.observers.append(self._observe)
        self.published: dict[bytes, _Published] = {}
        self.acked: dict[int, list[Record]] = defaultdict(list)  # node -> its acknowledged records
        self.first_held: dict[bytes, dict[int, float]] = defaultdict(dict)  # record -> node -> when
        self.copies: dict[bytes, int] = defaultdict(int)  # payload copies received from peers
        self.bounds_held = True
        self.faults_end = 0.0
        self.components = 0
        self._keys: dict[int, list[str]] = defaultdict(list)  # node -> keys it published
        self._serial = 0

    # -- building the run ---------------------------------------------------------

    def build(self) -> None:
        s = self.scenario
        addresses = [format_address(host_of(i), PORT) for i in range(s.nodes)]
        dials: dict[int, list[str]] = defaultdict(list)
        links = [] if s.room else random_graph(s.nodes, s.degree, self.rng)
        self.components = 1 if s.room else _components(s.nodes, links)
        for a_index, b_index in links:
            dialler, callee = (a_index, b_index) if self.rng.random() < 0.5 else (b_index, a_index)
            dials[dialler].append(addresses[callee])
        for index in range(s.nodes):
            self.net.add_node(dials[index])
            if s.room:  # its services are heard within the first announcement, 0.2 s
                self.net.call_at(self.rng.random() * ROOM_HEARD, partial(self.hear_room, index))
        window = s.seconds / 3
        for _ in range(s.records):
            self.net.call_at(self.rng.random() * window, self._publish)
        self._plan_faults()
        self.net.call_at(SAMPLE_INTERVAL, self._sample)

    def _plan_faults(self) -> None:
        s, net = self.scenario, self.net
        if s.crash > 0:
            at = s.seconds / 5
            victims = self.rng.sample(range(s.nodes), round(s.crash * s.nodes))
            net.call_at(at, lambda: self._crash(victims))
            net.call_at(at + CRASH_DOWNTIME, lambda: self._restart(victims))
            self.faults_end = max(self.faults_end, at + CRASH_DOWNTIME)
        if s.partition > 0:
            at = s.seconds / 4
            side = set(self.rng.sample(range(s.nodes), s.nodes // 2))
            net.call_at(at, lambda: net.partition(side))
            net.call_at(at + s.partition, net.heal)
            self.faults_end = max(self.faults_end, at + s.partition)
        for n in range(s.drops):
            at = s.seconds * (0.1 + 0.3 * (n + 1) / (s.drops + 1))
            net.call_at(at, self._drop_one)
            self.faults_end = max(self.faults_end, at)
        replaced = round(s.churn * s.nodes)
        for n in range(replaced):
            at = s.seconds * (0.1 + 0.3 * (n + 1) / (replaced + 1))
            net.call_at(at, self._replace_one)
            self.faults_end = max(self.faults_end, at)

    def _drop_one(self) -> None:
        live = self.net.live()
        if live:
            self.net.drop(self.rng.choice(live).index)

    def _crash(self, victims: list[int]) -> None:
        for index in victims:
            self.net.crash(index)

    def _restart(self, victims: list[int]) -> None:
        for index in victims:
            node = self.net.nodes[index]
            if not node.up and not node.gone:
                self.net.start(index)

    def _replace_one(self) -> None:
        originals = [n for n in self.net.live() if n.index < self.scenario.nodes]
        if not originals or len(self.net.live()) < 2:
            return
        # One of the nodes the run started with: churn replaces them, never a newcomer.
        self.net.crash(self.rng.choice(originals).index, forever=True)
        if self.scenario.room:
            self.join_room()
            return
        live = self.net.live()
        peers = [n.address for n in self.rng.sample(live, min(self.scenario.degree, len(live)))]
        self.net.add_node(peers)

    def join_room(self) -> SimNode:
        """A newcomer to the room: it hears the room's services, and the room hears its own."""
        live = self.net.live()
        newcomer = self.net.add_node([])
        self.hear_room(newcomer.index)
        for node in live:
            self.net.handle(node.index, _heard(newcomer.index))
        return newcomer

    def hear_room(self, index: int) -> None:
        """Node ``index`` hears every other live node's service, in no particular order."""
        if not self.net.nodes[index].up:
            return
        others = [n.index for n in self.net.live() if n.index != index]
        self.rng.shuffle(others)
        for other in others:
            self.net.handle(index, _heard(other))

    # -- the workload ---------------------------------------------------------------

    def _publish(self) -> None:
        live = self.net.live()
        if not live:
            return
        node = self.rng.choice(live)
        keys = self._keys[node.index]
        draw = self.rng.random()
        if keys and draw < DELETE_SHARE:
            event: e.Event = e.Delete(keys.pop(self.rng.randrange(len(keys))))
        else:
            if keys and draw < DELETE_SHARE + UPDATE_SHARE:
                key = self.rng.choice(keys)
            else:
                key = f"sim/{self._serial}"
                self._serial += 1
                keys.append(key)
            value = self.rng.randbytes(VALUE_BYTES).hex()
            event = e.Publish([Publication(key, value)])
        for action in self.net.handle(node.index, event):
            if isinstance(action, a.Published):
                for result in action.results:
                    if isinstance(result, Record):
                        self.acked[node.index].append(result)
                        self.published[result.id] = _Published(result, self.net.now)
                        self.first_held[result.id][node.index] = self.net.now

    def _observe(self, index: int, actions: list[a.Action], now: float) -> None:
        for action in actions:
            if isinstance(action, a.Ingested) and action.conn is not None:
                for arrival in action.arrivals:
                    rid = arrival.record.id
                    self.copies[rid] += 1
                    if arrival.fate is Fate.NEW:
                        self.first_held[rid].setdefault(index, now)

    def _sample(self) -> None:
        net = self.net
        for node in net.live():
            mesh = node.mesh
            assert mesh is not None
            settings = mesh.settings
            views = [p for p in mesh.peers() if p.state == "open"]
            if len(views) > settings.peers.max_peers:
                self.bounds_held = False
            if any(p.outbox > 2 * settings.session.max_outbox for p in views):
                self.bounds_held = False
            if node.store.total_bytes > node.store.limits.max_total_bytes:
                self.bounds_held = False
        if net.now + SAMPLE_INTERVAL <= self.scenario.seconds:
            net.call_at(net.now + SAMPLE_INTERVAL, self._sample)

    # -- running and judging --------------------------------------------------------

    def run(self) -> Report:
        started = time.perf_counter()
        with collector_paused():
            self.build()
            self.net.run_until(self.scenario.seconds)
        report = self._judge(time.perf_counter() - started)
        return report

    def _judge(self, wall_s: float) -> Report:
        net = self.net
        now_ms = net.instant().wall_ms
        live = net.live()
        held = {n.index: {rid for _, rid in n.store.items(now_ms)} for n in live}
        expected = self._expected(live, held)
        same = len({frozenset(ids) for ids in held.values()}) <= 1
        converged_set = same and all(ids == expected for ids in held.values())
        verified = all(self._verifies(n, held[n.index], now_ms) for n in live)
        durable = self._durable(now_ms)
        invariants = {
            "converged": converged_set,
            "verified": verified,
            "bounded": self.bounds_held,
            "durable": durable,
        }
        live_ids = [n.index for n in live]
        pairs = held_pairs = 0
        for rid in expected:
            pairs += len(live_ids)
            held_pairs += sum(1 for i in live_ids if rid in held[i])
        delivered = held_pairs / pairs if pairs else 1.0
        records = max(len(self.published), 1)
        copies = sum(self.copies.values()) / (records * max(len(net.nodes), 1))
        rmrs = []
        for rid, reached in self.first_held.items():
            if len(reached) > 1:
                rmrs.append(self.copies[rid] / (len(reached) - 1) - 1)
        times = {p: self._share_time(p, live_ids) for p in (0.5, 0.99, 1.0)}
        converge = self._converge_ms(expected, live_ids) if converged_set else None
        sizes = [len(p.record.raw) for p in self.published.values()]
        mean_size = sum(sizes) / len(sizes) if sizes else 1.0
        delivered_records = sum(len(v) - 1 for v in self.first_held.values())  # not the author
        return Report(
            scenario=self.scenario,
            delivered_fraction=delivered,
            copies_per_node=copies,
            rmr=sum(rmrs) / len(rmrs) if rmrs else 0.0,
            t50_ms=times[0.5],
            t99_ms=times[0.99],
            t100_ms=times[1.0],
            converged=all(invariants.values()),
            converge_ms=converge,
            invariants=invariants,
            live_nodes=len(live),
            wire_bytes=net.wire_bytes,
            bytes_per_record=(
                net.wire_bytes / (delivered_records * mean_size) if delivered_records else None
            ),
            published=len(self.published),
            components=self.components,
            events=net.events,
            wall_s=wall_s,
            trace_digest=net.trace_digest,
            overlay=self.overlay(),
        )

    def overlay(self, among: Collection[int] | None = None) -> Shape:
        """The sessions open between live nodes now (of ``among`` only, if given: the
        survivors, when the others were cut off rather than crashed)."""
        live = [n for n in self.net.live() if among is None or n.index in among]
        index_of = {n.identity.public_key: n.index for n in live}
        neighbours: dict[int, list[int]] = {}
        for node in live:
            assert node.mesh is not None
            views = node.mesh.peers()
            neighbours[node.index] = [
                index_of[v.node] for v in views if v.state == "open" and v.node in index_of
            ]
        return shape_of(neighbours)

    def _expected(self, live: list[SimNode], held: dict[int, set[bytes]]) -> set[bytes]:
        """The newest published version of every key still somewhere it can come from."""
        newest: dict[tuple[bytes, str], Record] = {}
        for p in self.published.values():
            key = (p.record.author, p.record.key)
            if key not in newest or p.record.seq > newest[key].seq:
                newest[key] = p.record
        anywhere = set().union(*held.values()) if held else set()
        surviving = {n.identity.public_key for n in self.net.nodes if not n.gone}
        return {
            r.id for r in newest.values() if r.author in surviving or r.id in anywhere
        } & _not_dead(newest.values(), self.net.instant().wall_ms, live)

    def _verifies(self, node: SimNode, ids: set[bytes], now_ms: int) -> bool:
        raws = node.store.raw_by_ids(sorted(ids), now_ms, max_bytes=1 << 62)
        good, bad = self.net.verify(raws)
        return not bad and len(good) == len(ids)

    def _durable(self, now_ms: int) -> bool:
        for index, records in self.acked.items():
            node = self.net.nodes[index]
            if node.gone:
                continue
            for record in records:
                current = node.store.get(record.author, record.key, now_ms)
                if current is None or current.seq < record.seq:
                    return False
        return True

    def _share_time(self, share: float, live_ids: list[int]) -> float | None:
        """Virtual ms from publishing to holding at ``share`` of live nodes, averaged.

        Over one set of records for every share, those that reached every live
        node, so that t50 <= t99 <= t100 compare like with like.
        """
        live = set(live_ids)
        spans = []
        for rid, p in self.published.items():
            times = sorted(t for i, t in self.first_held[rid].items() if i in live)
            if live and len(times) == len(live):
                need = max(math.ceil(share * len(live)), 1)
                spans.append((times[need - 1] - p.at) * 1000)
        return sum(spans) / len(spans) if spans else None

    def _converge_ms(self, expected: set[bytes], live_ids: list[int]) -> float:
        """From the end of faults and publishing until each live node held each expected record."""
        last = 0.0
        for rid in expected:
            reached = self.first_held.get(rid, {})
            last = max([last, *(reached.get(i, 0.0) for i in live_ids)])
        quiet = max([self.faults_end, *(p.at for p in self.published.values())])
        return max(last - quiet, 0.0) * 1000


def random_graph(nodes: int, degree: int, rng: random.Random) -> list[tuple[int, int]]:
    """The links of a random graph in which every node has ``degree`` neighbours.

    The configuration model: ``degree`` stubs per node, shuffled and paired;
    a pairing with a loop or a doubled link is drawn again, and after a
    hundred draws the offending pairs are dropped (a node or two then has one
    neighbour fewer). With fewer nodes than ``degree + 1``, every pair is linked.
    """
    if nodes <= degree + 1:
        return [(a, b) for a in range(nodes) for b in range(a + 1, nodes)]
    stubs = [n for n in range(nodes) for _ in range(degree)]
    if len(stubs) % 2:
        stubs.pop()
    for _ in range(100):
        rng.shuffle(stubs)
        pairs = {(min(a, b), max(a, b)) for a, b in zip(stubs[::2], stubs[1::2], strict=True)}
        if len(pairs) == len(stubs) // 2 and all(a != b for a, b in pairs):
            return sorted(pairs)
    return sorted((a, b) for a, b in pairs if a != b)


def _components(nodes: int, links: list[tuple[int, int]]) -> int:
    """How many separate parts ``links`` leave the nodes in (union-find)."""
    parent = list(range(nodes))

    def root(n: int) -> int:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for a_index, b_index in links:
        parent[root(a_index)] = root(b_index)
    return len({root(n) for n in range(nodes)})


def _not_dead(records: Any, now_ms: int, live: list[SimNode]) -> set[bytes]:
    """The ids of records no store would drop as dead at ``now_ms`` (tombstones kept a while)."""
    if not live:
        return set()
    retention = live[0].store.limits.tombstone_retention_ms
    found = set()
    for record in records:
        dead_at = record.dead_at(retention, now_ms)
        if dead_at is None or dead_at > now_ms:
            found.add(record.id)
    return found


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while the body runs.

    A thousand engines keep millions of objects alive for the whole run, and
    each full collection walks all of them again to find next to nothing: six
    of them, finding nothing at all, took 14 % of a 1,000-node run's wall time.
    Reference counting still frees what the run drops; the few cycles a closed
    session leaves wait until the collector runs again, after.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def run(scenario: Scenario) -> Report:
    return Run(scenario).run()
