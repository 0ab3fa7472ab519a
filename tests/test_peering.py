"""The peer-selection policy (``meshnode.engine.peering``), pure and on a made-up clock.

What it promises, and what these tests hold it to:

- every static peer is dialled at once and kept connected: after a failure or an ended
  session an address waits its backoff, drawn within ±20 % of a delay that starts at
  ``backoff_initial`` and doubles up to ``backoff_max``; a session that opened resets it;
- with no ``dial_sources`` (today's behaviour) nothing but the static peers is dialled; hints
  are only recorded;
- the addresses being dialled or connected, static or hinted, take the ``outbound_slots``;
  static peers are dialled beyond them, hints only into a free one; inbound sessions stop at
  ``max_peers - max(outbound_slots, static peers)``;
- it never dials an address it is dialling or connected at, an address that turned out to be
  this node itself, a node connected some other way, nor a banned node before its time is up
  (``unbanned`` dials it at once);
- hints are normalised (an unspecified host means the host the hinting connection reached),
  unusable ones are refused, and at most ``MAX_HINTS`` are kept, the idle one heard of
  longest ago going first;
- ``next_due`` is never later than the next time ``due`` has something to dial, so the
  engine's timer never sleeps through a dial, and never earlier than ``now`` after ``due``,
  so it never spins.

The first test drives the policy the way ``meshnode.engine.mesh`` does, with random dial
outcomes, sessions, hints, bans and unbans under hypothesis, against a model of the rules.
The second tells it addresses from the daemon's own sources (mDNS, peer exchange, hellos),
takes them back and tells them again in any order, and checks the promises from outside:
the limits and quotas, each address's backoff across being forgotten, the hint dial rate,
and one service's addresses dialled one at a time.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any
from unittest.mock import patch

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from msgspec import structs

from meshnode.engine import peering
from meshnode.engine.peering import MAX_HINTS, STATIC, PeerPolicy
from meshnode.engine.settings import PeerSettings

STATICS = tuple(f"192.0.2.{i}:7744" for i in range(1, 4))
HINTS = tuple(f"198.51.100.{i}:7744" for i in range(1, 7))
NODES = tuple(bytes([i]) * 32 for i in range(1, 5))
SELF = b"self"  # the world's answer for an address where this node itself listens
HELLO = frozenset({"hello"})  # dial what peers announce, for the tests of hint dialling
MDNS = frozenset({"mdns"})
EXCHANGING = frozenset({"mdns", "exchange"})  # the daemon's sources with discovery on
SMALL_MAX_HINTS = 4  # the hypothesis test shrinks the table so that it evicts
# (hinted address, reached_at, the address the policy should record, or None: refused)
HINT_FORMS: tuple[tuple[str, str | None, str | None], ...] = (
    *((a, None, a) for a in HINTS),
    *((a, None, a) for a in STATICS),  # a static peer hinted stays static
    ("0.0.0.0:7744", "198.51.100.1:50000", "198.51.100.1:7744"),
    ("[::]:7744", "198.51.100.2:50001", "198.51.100.2:7744"),
    (":7744", "198.51.100.3:50002", "198.51.100.3:7744"),
    ("0.0.0.0:7744", None, None),  # unspecified, and nothing says which host it meant
    ("198.51.100.4:0", None, None),
    ("", None, None),
    ("a:b:c", None, None),
    ("[zz]:7744", None, None),
    ("198.51.100.5:99999", None, None),
    ("0.0.0.0:7744", "a:b:c", None),
)


def policy(now: float = 0.0, seed: int = 1, **fields: Any) -> PeerPolicy:
    return PeerPolicy(PeerSettings(**fields), random.Random(seed), now=now)


def static(*addresses: str) -> tuple[tuple[str, int], ...]:
    return tuple((a.rsplit(":", 1)[0], int(a.rsplit(":", 1)[1])) for a in addresses)


def view(p: PeerPolicy, address: str) -> peering.AddressView:
    (found,) = [v for v in p.addresses() if v.address == address]
    return found


# -- the model -----------------------------------------------------------------------------


@dataclass
class Address:
    static: bool
    delay: float  # the backoff the next failure or ended session waits
    heard: float
    state: str = "idle"  # idle, dialling, connected, covered, self
    node: bytes | None = None  # the node a session dialled here last reached
    earliest: float = -math.inf  # no dial before: the last back-off + 0.8 x its delay
    unbanned: bool = False  # its node was unbanned since the last back-off: dialled at once


@dataclass
class Session:
    node: bytes
    address: str
    initiator: bool


@dataclass
class Model:
    settings: PeerSettings
    addresses: dict[str, Address] = field(default_factory=dict)
    forgotten: dict[str, Address] = field(default_factory=dict)  # evicted, backoff remembered
    sessions: list[Session] = field(default_factory=list)
    bans: dict[bytes, float] = field(default_factory=dict)

    def connected(self, node: bytes) -> bool:
        return any(s.node == node for s in self.sessions)

    def back_off(self, address: str, now: float) -> None:
        known = self.addresses[address]
        known.state = "idle"
        known.earliest = now + (1 - peering.JITTER) * known.delay
        known.delay = min(known.delay * 2, self.settings.backoff_max)
        known.unbanned = False

    def dial_failed(self, address: str, now: float) -> None:
        """A failed dial backs off, unless its node dialled in meanwhile: then it is covered."""
        known = self.addresses[address]
        if known.node is not None and self.connected(known.node):
            known.state = "covered"
        else:
            self.back_off(address, now)

    def in_use(self, *, hints_only: bool = False) -> int:
        """Outbound slots in use: addresses being dialled or connected."""
        return sum(
            1
            for k in self.addresses.values()
            if k.state in ("dialling", "connected") and not (hints_only and k.static)
        )

    def of(self, node: bytes) -> list[Address]:
        return [k for k in self.addresses.values() if k.node == node]


@st.composite
def configs(draw: st.DrawFn, most: int = 6) -> PeerSettings:
    """Small, valid settings: few slots and peers, so that every limit is reached."""
    max_peers = draw(st.integers(1, most))
    initial = draw(st.sampled_from([0.5, 1.0, 3.0]))
    return PeerSettings(
        peers=static(*STATICS[: draw(st.integers(0, min(len(STATICS), max_peers - 1)))]),
        dial_sources=frozenset({"hello"}) if draw(st.booleans()) else frozenset(),
        max_peers=max_peers,
        outbound_slots=draw(st.integers(0, max_peers - 1)),
        target_degree=draw(st.integers(1, most)),
        min_outbound=draw(st.integers(0, 3)),
        backoff_initial=initial,
        backoff_max=initial * draw(st.sampled_from([1, 2, 8, 1000])),
    )


class PolicyMachine(RuleBasedStateMachine):
    """Drives a ``PeerPolicy`` as the engine does and checks every step against the rules."""

    policy: PeerPolicy
    model: Model
    world: dict[str, bytes]  # who answers at each address
    now: float

    @initialize(
        config=configs(),
        seed=st.integers(0, 2**32 - 1),
        start=st.sampled_from([0.0, 1000.0]),
        world=st.lists(
            st.sampled_from((*NODES, SELF)),
            min_size=len(STATICS) + len(HINTS),
            max_size=len(STATICS) + len(HINTS),
        ),
    )
    def configure(self, config: PeerSettings, seed: int, start: float, world: list[bytes]) -> None:
        self.now = start
        self.policy = PeerPolicy(config, random.Random(seed), now=start)
        self.model = Model(config)
        self.next_swap = start + (1 - peering.JITTER) * peering.SWAP_FIRST  # at the earliest
        for host, port in config.peers:
            address = f"{host}:{port}"
            self.model.addresses[address] = Address(True, config.backoff_initial, start)
        self.world = dict(zip((*STATICS, *HINTS), world, strict=True))

    # -- what the engine does --------------------------------------------------------

    @rule(dt=st.one_of(st.just(0.0), st.floats(0, 5), st.floats(5, 200)))
    def tick(self, dt: float) -> None:
        """Time passes; on the Tick the engine dials whatever ``due`` returns."""
        self.now += dt
        now, model = self.now, self.model
        promised = self.policy.next_due()
        dials = self.policy.due(now)
        if dials:
            assert promised <= now, f"next_due() said {promised}, but due({now}) dialled {dials}"
        assert len(dials) == len(set(dials))
        hints_free = (
            model.settings.outbound_slots
            - len(model.settings.peers)
            - model.in_use(hints_only=True)
        )
        outbound = model.in_use(hints_only=False)
        degree = len(model.sessions) + sum(
            1 for k in model.addresses.values() if k.state == "dialling"
        )
        for address in dials:
            assert address in model.addresses, f"dialled {address}, never configured nor hinted"
            known = model.addresses[address]
            assert known.state not in ("dialling", "connected"), f"{address} is {known.state}"
            assert known.state != "self", f"{address} is this node itself"
            assert known.static or "hello" in model.settings.dial_sources, f"hint {address} dialled"
            if not known.static:
                assert hints_free > 0, f"hint {address}: no outbound slot the static peers leave"
                hints_free -= 1
                settings = model.settings
                lacking = degree < settings.target_degree or outbound < settings.min_outbound
                if not lacking:  # only a swap: one neighbour more, for another to be let go
                    assert degree < settings.max_peers, f"swap {address} with degree {degree}"
                    assert now >= self.next_swap - 1e-9, f"swap {address} before {self.next_swap}"
                    self.next_swap = now + (1 - peering.JITTER) * peering.SWAP_FIRST
            degree += 1
            outbound += 1
            if not known.unbanned:
                assert now >= known.earliest - 1e-9, (
                    f"{address} dialled at {now}, before its backoff ends at {known.earliest}"
                )
            if known.node is not None:
                until = model.bans.get(known.node, -math.inf)
                assert now >= until, f"{address} dialled at {now}, its node banned until {until}"
                assert not model.connected(known.node), f"{address}: its node is connected"
            known.state = "dialling"
        assert self.policy.next_due() > now, "next_due() at or before now: the timer would spin"

    @precondition(lambda self: any(k.state == "dialling" for k in self.model.addresses.values()))
    @rule(data=st.data())
    def dial_fails(self, data: st.DataObject) -> None:
        address = data.draw(st.sampled_from(self.dialling()))
        self.policy.failed(address, now=self.now)
        self.model.dial_failed(address, self.now)

    @precondition(lambda self: any(k.state == "dialling" for k in self.model.addresses.values()))
    @rule(data=st.data())
    def dial_answers(self, data: st.DataObject) -> None:
        """The handshake finishes: with this node itself, a banned node, or a session."""
        address = data.draw(st.sampled_from(self.dialling()))
        node, known = self.world[address], self.model.addresses[address]
        if node == SELF:
            self.policy.failed(address, now=self.now, is_self=True)
            known.state = "self"
        elif self.model.bans.get(node, -math.inf) > self.now:
            # Refused at once: the engine tells the policy the dial failed, and where it led.
            self.policy.failed(address, now=self.now, node=node)
            known.node = node
            self.model.dial_failed(address, self.now)
        else:
            self.policy.opened(node, address, initiator=True, now=self.now)
            known.state, known.node = "connected", node
            known.delay = self.model.settings.backoff_initial
            self.opened(Session(node, address, initiator=True))

    @rule(node=st.sampled_from(NODES), port=st.integers(50000, 50003))
    def dialled_in(self, node: bytes, port: int) -> None:
        """A node dials in; the engine lets it in only while ``may_accept()``."""
        inbound = sum(1 for s in self.model.sessions if not s.initiator)
        assert self.policy.may_accept() == (inbound < self.policy.inbound_limit)
        if self.model.bans.get(node, -math.inf) > self.now or not self.policy.may_accept():
            return  # refused: the policy hears nothing of it
        address = f"203.0.113.{port - 49999}:{port}"
        self.policy.opened(node, address, initiator=False, now=self.now)
        self.opened(Session(node, address, initiator=False))

    @precondition(lambda self: bool(self.model.sessions))
    @rule(data=st.data())
    def session_ends(self, data: st.DataObject) -> None:
        """A session is lost: the peer left, or the duplicate rule closed one of two."""
        model = self.model
        session = data.draw(st.sampled_from(model.sessions))
        model.sessions.remove(session)
        self.policy.ended(session.node, session.address, initiator=session.initiator, now=self.now)
        still = model.connected(session.node)
        known = model.addresses.get(session.address) if session.initiator else None
        if known is not None and known.state == "connected":
            if still:
                known.state = "covered"
            else:
                model.back_off(session.address, self.now)
        if not still:
            for other, k in model.addresses.items():
                if k.node == session.node and k.state == "covered":
                    model.back_off(other, self.now)

    @rule(form=st.sampled_from(HINT_FORMS))
    def hinted(self, form: tuple[str, str | None, str | None]) -> None:
        address, reached_at, expected = form
        model, before = self.model, {v.address: v for v in self.policy.addresses()}
        hints = [a for a, k in model.addresses.items() if not k.static]
        evict = None
        full = len(hints) >= peering.MAX_HINTS
        if expected is not None and expected not in model.addresses and full:
            idle = [a for a in hints if model.addresses[a].state == "idle"]
            evict = min(idle, key=lambda a: model.addresses[a].heard) if idle else None
            if evict is None:
                expected = None  # the table is full of hints in use: refused
        accepted = self.policy.hint(address, "hello", now=self.now, reached_at=reached_at)
        assert accepted == (expected is not None), (address, reached_at)
        after = {v.address: v for v in self.policy.addresses()}
        if expected is None:
            assert after == before, "a refused hint changed the table"
            return
        if expected in model.addresses:
            known = model.addresses[expected]
            known.heard = self.now
            if not known.static:  # heard again: now the newest, as the table orders hints
                model.addresses[expected] = model.addresses.pop(expected)
            assert after.keys() == before.keys()
            return
        if evict is not None:
            model.forgotten[evict] = model.addresses.pop(evict)
        assert after.keys() == (before.keys() - {evict}) | {expected}
        initial = model.settings.backoff_initial
        fresh = Address(False, initial, self.now)
        past = model.forgotten.pop(expected, None)
        if past is not None:  # its backoff, node and ban come back with it
            fresh.delay, fresh.earliest, fresh.node = past.delay, past.earliest, past.node
            fresh.unbanned = past.unbanned
            if fresh.node is not None and model.connected(fresh.node):
                fresh.state = "covered"  # its node came back by another address meanwhile
        model.addresses[expected] = fresh

    @rule(node=st.sampled_from(NODES), seconds=st.floats(0, 300))
    def ban(self, node: bytes, seconds: float) -> None:
        """This node banned ``node``, or ``node`` said it banned this one."""
        until = self.now + seconds
        self.policy.banned(node, until)
        self.model.bans[node] = max(until, self.model.bans.get(node, -math.inf))

    @rule(node=st.sampled_from(NODES))
    def unban(self, node: bytes) -> None:
        self.policy.unbanned(node, self.now)
        self.model.bans.pop(node, None)
        for known in self.model.of(node):
            if known.state == "idle":
                known.unbanned = True

    # -- always ------------------------------------------------------------------------

    @invariant()
    def within_limits(self) -> None:
        model = self.model
        config = model.settings
        inbound = sum(1 for s in model.sessions if not s.initiator)
        assert self.policy.sessions() == (inbound, len(model.sessions) - inbound)
        reserved = max(config.outbound_slots, len(config.peers))
        assert self.policy.inbound_limit == config.max_peers - reserved
        assert inbound <= self.policy.inbound_limit
        assert self.policy.outbound_in_use() == model.in_use()
        hints = model.in_use(hints_only=True)
        assert hints <= max(config.outbound_slots - len(config.peers), 0)
        assert model.in_use() <= reserved  # so sessions never pass max_peers
        assert inbound + model.in_use() <= config.max_peers

    @invariant()
    def table_as_modelled(self) -> None:
        table = {v.address: v for v in self.policy.addresses()}
        assert table.keys() == self.model.addresses.keys()
        assert sum(1 for v in table.values() if v.origin != STATIC) <= peering.MAX_HINTS
        for address, known in self.model.addresses.items():
            got = table[address]
            assert got.origin == (STATIC if known.static else "hello")
            assert got.state == known.state, address
            assert got.node == known.node, address

    # -- helpers -----------------------------------------------------------------------

    def dialling(self) -> list[str]:
        return [a for a, k in self.model.addresses.items() if k.state == "dialling"]

    def opened(self, session: Session) -> None:
        self.model.sessions.append(session)
        for known in self.model.of(session.node):
            if known.state == "idle":
                known.state = "covered"


def test_random_connect_fail_ban_and_hint_sequences_keep_the_limits_and_the_backoff() -> None:
    with patch.object(peering, "MAX_HINTS", SMALL_MAX_HINTS):
        run_state_machine_as_test(
            PolicyMachine,
            settings=settings(max_examples=300, stateful_step_count=50, deadline=None),
        )


# -- what discovery and peers tell, taken back, and told again -------------------------

# One service of two addresses, seven more alone, and one host behind many ports: what a room
# with mDNS and peer exchange tells a node. Fewer than MAX_FORGOTTEN, so that every backoff
# is remembered however often an address is forgotten.
TOLD = (
    ("198.51.100.1:7744", "svc-a"),
    ("[2001:db8::1]:7744", "svc-a"),
    ("198.51.100.2:7744", "svc-b"),
    *((f"198.51.100.{n}:7744", None) for n in range(3, 9)),
    *((f"198.51.100.9:{port}", None) for port in range(7744, 7748)),
)
ORIGINS = ("mdns", "exchange", "hello")
SPREAD = 0.2  # the promise: each wait within ±20 % of its delay
ACTIVE = ("dialling", "connected", "covered")


class SourcesMachine(RuleBasedStateMachine):
    """The daemon's sources (mDNS and peer exchange dialled, peers' hellos only recorded),
    told, withdrawn and told again in any order, with dials failing and sessions ending.

    Not a model of the policy: the promises the issue names, checked from outside. Limits
    are never passed; no address is dialled before the backoff its own history earned
    (computed here: ±20 % of a delay doubling from ``backoff_initial`` at each failure or
    loss, reset by a session), even after it was forgotten and heard of again; hint dials
    stay within their burst and rate; one service's addresses are dialled one at a time.
    """

    policy: PeerPolicy
    settings: PeerSettings
    now: float

    @initialize(config=configs(most=12), seed=st.integers(0, 2**32 - 1), world=st.data())
    def configure(self, config: PeerSettings, seed: int, world: st.DataObject) -> None:
        self.settings = config = structs.replace(config, peers=(), dial_sources=EXCHANGING)
        self.now = 0.0
        self.policy = PeerPolicy(config, random.Random(seed), now=0.0)
        self.node_at = {a: world.draw(st.sampled_from(NODES)) for a, _ in TOLD}
        self.group_of: dict[str, str | None] = {}
        self.delay: dict[str, float | None] = {}  # None: the policy's own, not followed here
        self.earliest: dict[str, float] = {}
        self.hint_dials: list[float] = []
        self.sessions: list[Session] = []
        self.views = self.view()

    def view(self) -> dict[str, peering.AddressView]:
        return {v.address: v for v in self.policy.addresses()}

    @rule(told=st.sampled_from(TOLD), origin=st.sampled_from(ORIGINS))
    def hinted(self, told: tuple[str, str | None], origin: str) -> None:
        address, group = told
        new = address not in self.views
        group = group if origin == "mdns" else None
        if self.policy.hint(address, origin, now=self.now, group=group):
            self.group_of[address] = group if new else self.group_of.get(address) or group
            self.delay.setdefault(address, self.settings.backoff_initial)

    @rule(told=st.sampled_from(TOLD), origin=st.sampled_from(ORIGINS))
    def withdrawn(self, told: tuple[str, str | None], origin: str) -> None:
        self.policy.withdraw(told[0], origin)

    @rule(dt=st.one_of(st.just(0.0), st.floats(0, 2), st.floats(2, 100)))
    def tick(self, dt: float) -> None:
        self.now += dt
        for address in self.policy.due(self.now):
            assert self.views[address].dialled, f"{address}: its source is not dialled"
            assert self.views[address].state == "idle", f"{address} was {self.views[address]}"
            earned = self.earliest.get(address, -math.inf)
            assert self.now >= earned - 1e-9, f"{address} at {self.now}, backoff until {earned}"
            group = self.group_of.get(address)
            if group is not None:
                busy = [
                    a
                    for a, v in self.views.items()
                    if a != address and self.group_of.get(a) == group and v.state in ACTIVE
                ]
                assert not busy, f"{address} dialled while {busy} of its service are in use"
            self.hint_dials.append(self.now)
            self.views[address] = structs.replace(self.views[address], state="dialling")
        for start in self.hint_dials:
            since = sum(1 for t in self.hint_dials if t >= start)
            allowed = peering.HINT_DIAL_BURST + peering.HINT_DIALS_PER_S * (self.now - start)
            assert since <= allowed + 1e-9, f"{since} hint dials since {start}, at {self.now}"

    @precondition(lambda self: self.dialling())
    @rule(data=st.data(), answers=st.booleans())
    def dial_ends(self, data: st.DataObject, answers: bool) -> None:
        address = data.draw(st.sampled_from(self.dialling()))
        if not answers:
            self.policy.failed(address, now=self.now, why="refused")
            return
        node = self.node_at[address]
        self.policy.opened(node, address, initiator=True, now=self.now)
        self.delay[address] = self.settings.backoff_initial
        self.sessions.append(Session(node, address, initiator=True))

    @rule(node=st.sampled_from(NODES))
    def dialled_in(self, node: bytes) -> None:
        if self.policy.may_accept():
            self.policy.opened(node, "203.0.113.1:50000", initiator=False, now=self.now)
            self.sessions.append(Session(node, "203.0.113.1:50000", initiator=False))

    @precondition(lambda self: self.sessions)
    @rule(data=st.data())
    def session_ends(self, data: st.DataObject) -> None:
        session = data.draw(st.sampled_from(self.sessions))
        self.sessions.remove(session)
        self.policy.ended(session.node, session.address, initiator=session.initiator, now=self.now)

    def dialling(self) -> list[str]:
        return [a for a, v in self.views.items() if v.state == "dialling"]

    @invariant()
    def backoff_followed(self) -> None:
        """Each back-off the policy just made: the earliest redial its history earned."""
        if not hasattr(self, "policy"):
            return
        now = self.view()
        for address, before in self.views.items():
            if before.state not in ACTIVE:
                continue
            after = now.get(address)
            delay = self.delay.get(address)
            if after is not None and after.state == "idle" and delay is not None:
                self.earliest[address] = self.now + (1 - SPREAD) * delay
                self.delay[address] = min(2 * delay, self.settings.backoff_max)
            elif after is None:  # forgotten while in use: its backoff is the policy's now
                self.delay[address] = None
                self.earliest.pop(address, None)
        self.views = now

    @invariant()
    def within_limits(self) -> None:
        if not hasattr(self, "policy"):
            return
        inbound, _ = self.policy.sessions()
        config = self.settings
        assert inbound <= self.policy.inbound_limit
        assert self.policy.outbound_in_use() <= config.outbound_slots
        assert inbound + self.policy.outbound_in_use() <= config.max_peers
        told = [v for v in self.policy.addresses() if v.origin in peering.QUOTAS]
        for origin, quota in peering.QUOTAS.items():
            assert sum(1 for v in told if v.origin == origin) <= quota
        per_host: dict[str, int] = {}
        for v in told:
            host = v.address.rsplit(":", 1)[0]
            per_host[host] = per_host.get(host, 0) + 1
        assert all(n <= peering.PER_HOST for n in per_host.values()), per_host
        assert len(self.policy.addresses()) <= peering.MAX_HINTS


def test_any_order_of_telling_withdrawing_and_failing_keeps_limits_backoff_and_rate() -> None:
    small = {"hello": 2, "exchange": 3}  # quotas the few addresses here can fill
    with patch.object(peering, "MAX_HINTS", 10), patch.dict(peering.QUOTAS, small):
        run_state_machine_as_test(
            SourcesMachine,
            settings=settings(max_examples=300, stateful_step_count=60, deadline=None),
        )


# -- today's behaviour: static peers only -----------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_static_peers_are_dialled_at_once_and_redialled_with_doubling_jittered_backoff(
    seed: int,
) -> None:
    a, b, c = STATICS
    p = policy(seed=seed, peers=static(a, b, c))
    assert p.next_due() == 0.0
    assert p.due(0.0) == [a, b, c]
    assert p.due(0.0) == []  # each is being dialled
    p.failed(a, now=0.0)
    first = p.next_due()
    assert 0.8 <= first <= 1.2
    assert p.due(first - 1e-6) == []
    assert p.due(first) == [a]
    p.failed(a, now=first)
    second = p.next_due()
    assert first + 1.6 <= second <= first + 2.4
    assert p.due(second) == [a]


def test_delays_are_capped_at_backoff_max_and_reset_by_a_session() -> None:
    (a,) = STATICS[:1]
    p = policy(peers=static(a), backoff_initial=1.0, backoff_max=4.0)
    now = 0.0
    gaps = []
    for _ in range(5):
        assert p.due(now) == [a]
        p.failed(a, now=now)
        gaps.append(p.next_due() - now)
        now = p.next_due()
    for gap, base in zip(gaps, [1, 2, 4, 4, 4], strict=True):
        assert 0.8 * base <= gap <= 1.2 * base
    assert p.due(now) == [a]
    p.opened(NODES[0], a, initiator=True, now=now)
    p.ended(NODES[0], a, initiator=True, now=now)
    assert 0.8 <= p.next_due() - now <= 1.2


def test_why_the_last_dial_failed_is_kept_until_a_session_opens() -> None:
    (a,) = STATICS[:1]
    p = policy(peers=static(a))
    assert p.due(0.0) == [a]
    p.failed(a, now=0.0, why="connection refused")
    assert (view(p, a).failures, view(p, a).last_failure) == (1, "connection refused")
    now = p.next_due()
    assert p.due(now) == [a]
    p.opened(NODES[0], a, initiator=True, now=now)
    assert (view(p, a).failures, view(p, a).last_failure) == (0, "")


def test_with_no_dial_sources_hints_are_recorded_but_never_dialled() -> None:
    p = policy(peers=static(STATICS[0]))
    assert p.due(0.0) == [STATICS[0]]
    assert p.hint(HINTS[0], "hello", now=0.0)
    assert view(p, HINTS[0]).origin == "hello"
    assert view(p, HINTS[0]).state == "idle"
    assert p.next_due() == math.inf
    assert p.due(1e6) == []


# -- how many ---------------------------------------------------------------------------


def test_hints_fill_the_outbound_slots_the_static_peers_leave() -> None:
    (a,) = STATICS[:1]
    p = policy(peers=static(a), dial_sources=HELLO, outbound_slots=3)
    assert p.due(0.0) == [a]
    p.opened(NODES[0], a, initiator=True, now=0.0)
    for hint in HINTS:
        assert p.hint(hint, "hello", now=0.0)
    dialled = p.due(0.0)
    assert len(dialled) == 2 and set(dialled) <= set(HINTS)
    assert p.outbound_in_use() == 3
    assert p.next_due() == math.inf  # the slots are full: no timer for the other hints
    assert p.due(1e6) == []
    p.failed(dialled[0], now=10.0)  # a slot is free again
    assert p.next_due() == 0.0
    [again] = p.due(10.0)
    assert again in set(HINTS) - set(dialled)  # the failed one waits out its backoff
    p.opened(NODES[1], dialled[1], initiator=True, now=10.0)
    assert p.outbound_in_use() == 3  # a connected hint still takes its slot
    assert p.due(1e6) == []


def test_a_node_at_its_target_swaps_a_neighbour_for_one_it_is_not_connected_to() -> None:
    """So that a room cannot settle into cliques of target + 1 that never meet: from a
    clique, every address not connected to is outside it."""
    p = policy(dial_sources=HELLO, target_degree=2, outbound_slots=4)
    for hint in HINTS:
        assert p.hint(hint, "hello", now=0.0)
    first = p.due(0.0)
    for node, address in zip(NODES, first, strict=False):
        p.opened(node, address, initiator=True, now=0.0)
    swap_at = p.next_due()
    low, high = (1 - peering.JITTER) * peering.SWAP_FIRST, (1 + peering.JITTER) * peering.SWAP_FIRST
    assert low <= swap_at <= high
    assert p.due(swap_at - 0.01) == []
    [swap] = p.due(swap_at)
    assert swap not in first
    assert p.to_let_go() is None  # nothing to let go before the new session is open
    p.opened(NODES[2], swap, initiator=True, now=swap_at)
    assert p.to_let_go() in NODES[:2]
    assert p.to_let_go() is None  # once per swap
    assert p.next_due() >= swap_at + 2 * low  # the pause doubles


def test_a_swap_never_lets_a_static_peer_go_and_nodes_without_hint_dials_never_swap() -> None:
    (a,) = STATICS[:1]
    p = policy(peers=static(a), dial_sources=HELLO, target_degree=1, outbound_slots=3)
    assert p.due(0.0) == [a]
    p.opened(NODES[0], a, initiator=True, now=0.0)
    for hint in HINTS:
        assert p.hint(hint, "hello", now=0.0)
    [swap] = p.due(p.next_due())
    p.opened(NODES[1], swap, initiator=True, now=20.0)
    assert p.to_let_go() is None
    quiet = policy(peers=static(a), outbound_slots=3, target_degree=1)
    assert quiet.due(0.0) == [a]
    quiet.opened(NODES[0], a, initiator=True, now=0.0)
    assert quiet.next_due() == math.inf


def test_hints_are_chosen_at_random_not_in_the_order_heard() -> None:
    chosen = set()
    for seed in range(8):
        p = policy(seed=seed, dial_sources=HELLO, outbound_slots=2)
        for hint in HINTS:
            assert p.hint(hint, "hello", now=0.0)
        chosen.update(p.due(0.0))
    assert chosen == set(HINTS)  # everyone hearing the same list does not dial the same two


def test_static_peers_are_dialled_beyond_the_outbound_slots_and_leave_none_for_hints() -> None:
    p = policy(peers=static(*STATICS), dial_sources=HELLO, outbound_slots=1, max_peers=4)
    assert p.due(0.0) == list(STATICS)
    assert p.outbound_in_use() == 3
    assert p.hint(HINTS[0], "hello", now=0.0)
    assert p.next_due() == math.inf
    assert p.due(1e6) == []


def test_inbound_sessions_stop_at_max_peers_minus_the_outbound_slots() -> None:
    p = policy(max_peers=3, outbound_slots=1)
    assert p.inbound_limit == 2
    p.opened(NODES[0], "203.0.113.1:50000", initiator=False, now=0.0)
    assert p.may_accept()
    p.opened(NODES[1], "203.0.113.2:50000", initiator=False, now=0.0)
    assert not p.may_accept()
    assert p.sessions() == (2, 0)
    p.ended(NODES[0], "203.0.113.1:50000", initiator=False, now=1.0)
    assert p.may_accept()


def test_static_peers_beyond_the_outbound_slots_keep_their_own_room_from_inbound() -> None:
    assert policy(peers=static(*STATICS), max_peers=5, outbound_slots=1).inbound_limit == 2
    assert policy(peers=static(*STATICS), max_peers=5, outbound_slots=4).inbound_limit == 1


# -- whom not to dial -------------------------------------------------------------------


def test_a_node_connected_from_its_side_is_not_dialled_at_its_address_until_that_ends() -> None:
    (a,) = STATICS[:1]
    node = NODES[0]
    p = policy(peers=static(a))
    assert p.due(0.0) == [a]
    p.opened(node, a, initiator=True, now=0.0)
    p.ended(node, a, initiator=True, now=0.0)  # a is known to be node's
    p.opened(node, "203.0.113.5:50000", initiator=False, now=0.5)
    assert view(p, a).state == "covered"
    assert p.next_due() == math.inf
    assert p.due(1000.0) == []
    p.ended(node, "203.0.113.5:50000", initiator=False, now=1000.0)
    assert view(p, a).state == "idle"
    assert 1000.0 + 1.6 <= p.next_due() <= 1000.0 + 2.4  # it waits its (doubled) backoff
    assert p.due(1003.0) == [a]


def test_of_two_sessions_with_one_node_the_address_of_the_closed_one_waits_for_the_other() -> None:
    a, b = STATICS[:2]
    node = NODES[0]
    p = policy(peers=static(a, b))
    assert p.due(0.0) == [a, b]
    p.opened(node, a, initiator=True, now=0.0)
    p.opened(node, b, initiator=True, now=0.0)  # the same node at two addresses
    p.ended(node, b, initiator=True, now=0.0)  # the duplicate rule closes one
    assert view(p, b).state == "covered"
    assert p.due(1000.0) == []
    p.ended(node, a, initiator=True, now=1000.0)
    assert {view(p, a).state, view(p, b).state} == {"idle"}
    assert p.due(1002.0) == [a, b]


def test_an_address_found_to_be_this_node_is_never_dialled_again() -> None:
    a, b = STATICS[:2]
    p = policy(peers=static(a, b))
    assert p.due(0.0) == [a, b]
    p.failed(a, now=0.0, is_self=True)
    p.failed(b, now=0.0)
    assert view(p, a).state == "self"
    assert p.hint(a, "hello", now=5.0)  # hearing of it again changes nothing
    assert p.due(1e6) == [b]
    assert p.due(1e9) == []
    assert view(p, a).state == "self"


def test_a_banned_node_is_not_dialled_before_its_time_and_an_unban_dials_it_at_once() -> None:
    a, b = STATICS[:2]
    p = policy(peers=static(a, b))
    assert p.due(0.0) == [a, b]
    p.opened(NODES[0], a, initiator=True, now=0.0)
    p.opened(NODES[1], b, initiator=True, now=0.0)
    p.banned(NODES[0], 100.0)
    p.ended(NODES[0], a, initiator=True, now=1.0)
    p.ended(NODES[1], b, initiator=True, now=1.0)
    assert p.due(50.0) == [b]
    assert p.next_due() == 100.0
    assert p.due(99.9) == []
    assert p.due(100.0) == [a]
    p.failed(a, now=100.0)
    p.banned(NODES[0], 1000.0)
    assert p.due(200.0) == []
    p.unbanned(NODES[0], 200.0)
    assert p.due(200.0) == [a]


# -- hints ----------------------------------------------------------------------------


@pytest.mark.parametrize("unspecified", ["0.0.0.0:7744", "[::]:7744", ":7744"])
def test_an_unspecified_host_means_the_host_the_hinting_connection_reached(
    unspecified: str,
) -> None:
    p = policy()
    assert p.hint(unspecified, "hello", now=0.0, reached_at="192.0.2.9:50000")
    assert [v.address for v in p.addresses()] == ["192.0.2.9:7744"]


@pytest.mark.parametrize(
    ("address", "reached_at"),
    [
        ("", None),
        ("192.0.2.9:0", None),
        ("a:b:c", None),
        ("[zz]:7744", None),
        ("192.0.2.9:99999", None),
        ("0.0.0.0:7744", None),
        ("[::]:7744", None),
        ("0.0.0.0:7744", "a:b:c"),
        ("0.0.0.0:7744", ":50000"),
    ],
)
def test_an_unusable_hint_is_refused_and_changes_nothing(
    address: str, reached_at: str | None
) -> None:
    p = policy(peers=static(STATICS[0]), dial_sources=HELLO)
    before, due = p.addresses(), p.next_due()
    assert not p.hint(address, "hello", now=0.0, reached_at=reached_at)
    assert p.addresses() == before
    assert p.next_due() == due


@pytest.mark.parametrize("address", ["nonsense", "nonsense:7744", "192.0.2.9"])
def test_a_hint_that_is_not_an_ip_literal_with_a_port_is_refused(address: str) -> None:
    p = policy(dial_sources=HELLO)
    assert not p.hint(address, "hello", now=0.0)
    assert p.addresses() == []


def test_the_table_keeps_max_hints_evicting_the_idle_one_heard_of_longest_ago() -> None:
    p = policy(peers=static(STATICS[0]), dial_sources=MDNS, outbound_slots=2)
    hints = [f"198.51.{i // 250}.{i % 250 + 1}:7744" for i in range(MAX_HINTS + 1)]
    assert p.hint(hints[0], "mdns", now=0.0)
    assert p.due(0.0) == [STATICS[0], hints[0]]  # in use: never evicted
    for i, hint in enumerate(hints[1:MAX_HINTS], start=1):
        assert p.hint(hint, "mdns", now=float(i))
    assert p.hint(hints[1], "mdns", now=500.0)  # heard of again: now the newest
    assert p.hint(hints[MAX_HINTS], "mdns", now=501.0)
    kept = {v.address for v in p.addresses() if v.origin != STATIC}
    assert len(kept) == MAX_HINTS
    assert kept == set(hints) - {hints[2]}
    assert view(p, STATICS[0]).origin == STATIC  # static peers do not count


@pytest.mark.parametrize(("origin", "quota"), sorted(peering.QUOTAS.items()))
def test_the_sources_peers_control_keep_to_their_quota_and_push_out_no_other(
    origin: str, quota: int
) -> None:
    """A peer that tells of thousands of addresses pushes out only its own kind of hint,
    even from a table full of what discovery found."""
    p = policy(dial_sources=MDNS)
    found = [f"203.0.{i // 250}.{i % 250 + 1}:7744" for i in range(MAX_HINTS - quota // 2)]
    for address in found:
        assert p.hint(address, "mdns", now=0.0)
    told = [f"198.51.{i // 250}.{i % 250 + 1}:7744" for i in range(2 * quota)]
    for i, address in enumerate(told):
        assert p.hint(address, origin, now=1.0 + i)
    kept = [v for v in p.addresses() if v.origin == origin]
    assert [v.address for v in kept] == told[-(quota // 2) :]  # the newest of its kind
    assert {v.address for v in p.addresses() if v.origin == "mdns"} == set(found)


def test_a_full_table_of_hints_in_use_refuses_a_new_one() -> None:
    with patch.object(peering, "MAX_HINTS", 2):
        p = policy(dial_sources=HELLO, outbound_slots=2)
        assert p.hint(HINTS[0], "hello", now=0.0)
        assert p.hint(HINTS[1], "hello", now=0.0)
        assert p.due(0.0) == list(HINTS[:2])
        assert not p.hint(HINTS[2], "hello", now=1.0)
        assert {v.address for v in p.addresses()} == set(HINTS[:2])


# -- rules hypothesis once found broken, and a gap since closed ---------------------------


def test_a_node_that_connects_while_being_dialled_is_not_redialled_when_that_dial_fails() -> None:
    (a,) = STATICS[:1]
    node = NODES[0]
    p = policy(peers=static(a))
    assert p.due(0.0) == [a]
    p.opened(node, a, initiator=True, now=0.0)
    p.ended(node, a, initiator=True, now=0.0)  # a is known to be node's
    assert p.due(2.0) == [a]
    p.opened(node, "203.0.113.1:50000", initiator=False, now=2.0)  # node dials in meanwhile
    p.failed(a, now=2.0)
    assert p.due(100.0) == []  # node is connected from its side


def test_a_failing_hint_keeps_its_backoff_when_the_table_churns() -> None:
    with patch.object(peering, "MAX_HINTS", 1):
        p = policy(dial_sources=HELLO, outbound_slots=1)
        assert p.hint(HINTS[0], "hello", now=0.0)
        for now in (0.0, 10.0, 30.0):  # three failures: it now waits 4 s (3.2 s at the least)
            assert p.due(now) == [HINTS[0]]
            p.failed(HINTS[0], now=now)
        assert p.hint(HINTS[1], "hello", now=30.0)  # evicts HINTS[0], idle and oldest
        assert p.hint(HINTS[0], "hello", now=30.0)  # evicts HINTS[1]; HINTS[0] is back
        assert p.due(30.0) == []


def test_a_static_peer_dialled_with_a_hint_takes_its_slot_first() -> None:
    (a,) = STATICS[:1]
    p = policy(peers=static(a), dial_sources=HELLO, outbound_slots=1, max_peers=4)
    assert p.hint(HINTS[0], "hello", now=0.0)
    assert p.due(0.0) == [a]  # the one slot is a's
    assert p.outbound_in_use() <= 1


def test_sessions_never_exceed_max_peers_when_a_static_peer_comes_back() -> None:
    (a,) = STATICS[:1]
    p = policy(peers=static(a), dial_sources=HELLO, outbound_slots=1, max_peers=3)
    assert p.due(0.0) == [a]
    p.failed(a, now=0.0)  # a waits its backoff
    assert p.hint(HINTS[0], "hello", now=0.0)
    for address in p.due(0.0):  # the engine's part: every dial reaches a node
        p.opened(NODES[1], address, initiator=True, now=0.0)
    for port in range(50000, 50010):
        if p.may_accept():
            p.opened(NODES[2], f"203.0.113.1:{port}", initiator=False, now=0.0)
    assert p.due(2.0) == [a]  # a static peer is always kept connected
    p.opened(NODES[0], a, initiator=True, now=2.0)
    assert sum(p.sessions()) <= 3


def test_each_quota_holds_whichever_way_an_address_came_in() -> None:
    """Room made for one bound (a host's) still leaves the origin's quota to hold, and what
    a hello told cannot be passed into peer exchange's quota past its bound."""
    told = lambda p, origin: sum(1 for v in p.addresses() if v.origin == origin)  # noqa: E731
    with patch.dict(peering.QUOTAS, {"hello": 4, "exchange": 2}):
        p = policy(dial_sources=EXCHANGING)
        assert p.hint("198.51.100.1:7744", "exchange", now=0.0)
        assert p.hint("198.51.100.9:7744", "exchange", now=1.0)
        assert p.hint("198.51.100.9:7745", "hello", now=2.0)
        assert p.hint("198.51.100.9:7746", "exchange", now=3.0)  # the host's oldest goes ...
        assert told(p, "exchange") == 2  # ... and so does one more, for the quota
        assert p.hint("198.51.100.2:7744", "hello", now=4.0)
        assert p.hint("198.51.100.2:7744", "exchange", now=5.0)  # now exchange's: in its quota
        assert told(p, "exchange") == 2 and view(p, "198.51.100.2:7744").origin == "exchange"


def test_hints_are_dialled_at_a_bounded_rate_however_many_are_heard_of() -> None:
    """A room full of advertised addresses that all fail cannot make the node a SYN cannon."""
    p = policy(dial_sources=HELLO, outbound_slots=100, max_peers=128)
    for i in range(200):
        assert p.hint(f"198.51.{i // 250}.{i % 250 + 1}:7744", "hello", now=0.0)
    dialled = 0
    for step in range(101):  # ten seconds, every dial failing at once
        now = step / 10
        for address in p.due(now):
            dialled += 1
            p.failed(address, now=now)
    assert dialled <= peering.HINT_DIAL_BURST + 10 * peering.HINT_DIALS_PER_S + 1
    assert p.next_due() > 10.0


def test_an_address_a_peer_told_of_is_dialled_once_discovery_finds_it_too() -> None:
    """A node that dialled in first is known by its hello; when mDNS hears its service,
    the address is mDNS's, so it is redialled after that session ends."""
    p = policy(dial_sources=MDNS)
    assert p.hint(HINTS[0], "hello", now=0.0)
    assert p.due(0.0) == []
    assert p.hint(HINTS[0], "mdns", now=1.0)
    assert view(p, HINTS[0]).origin == "mdns"
    assert p.due(1.0) == [HINTS[0]]


def test_a_peer_telling_of_a_discovered_address_does_not_take_it_over() -> None:
    p = policy(dial_sources=MDNS)
    assert p.hint(HINTS[0], "mdns", now=0.0)
    assert p.hint(HINTS[0], "exchange", now=1.0)
    assert view(p, HINTS[0]).origin == "mdns"


def test_an_address_of_a_service_already_reached_is_covered_and_never_spins_the_timer() -> None:
    """A service's AAAA record resolved after its A record was dialled: the new address is
    its node's, covered while the node is connected, and asks for no tick (a busy loop once)."""
    p = policy(dial_sources=MDNS, outbound_slots=4)
    assert p.hint(HINTS[0], "mdns", now=0.0, group="svc")
    assert p.due(0.0) == [HINTS[0]]
    p.opened(NODES[0], HINTS[0], initiator=True, now=0.1)
    assert p.hint("[2001:db8::1]:7744", "mdns", now=0.2, group="svc")
    assert view(p, "[2001:db8::1]:7744").state == "covered"
    assert p.next_due() > 1000 and p.due(0.3) == []


def test_an_idle_address_whose_group_is_in_use_asks_for_no_tick() -> None:
    """Its node dialled in while this node's dial of the service failed: the service's other
    address waits, and ``next_due`` agrees with ``due`` that nothing is to be dialled."""
    p = policy(dial_sources=MDNS, outbound_slots=4)
    assert p.hint(HINTS[0], "mdns", now=0.0, group="svc")
    assert p.due(0.0) == [HINTS[0]]
    assert p.hint(HINTS[1], "mdns", now=0.0, group="svc")  # heard while the dial runs
    p.opened(NODES[0], "203.0.113.1:50000", initiator=False, now=0.1)
    p.failed(HINTS[0], now=0.1, node=NODES[0])  # refused: it found its node connected
    assert view(p, HINTS[0]).state == "covered"
    assert p.due(0.2) == []
    assert p.next_due() > 1000


@pytest.mark.parametrize(
    ("told", "key"),
    [
        ("[::ffff:198.51.100.9]:7744", "198.51.100.9:7744"),
        ("[::ffff:c633:6409]:7744", "198.51.100.9:7744"),
        ("[2001:0DB8:0:0::1]:7744", "[2001:db8::1]:7744"),
        ("[2001:db8::1%eth0]:7744", None),  # a scope means nothing on a global address
        ("[fe80::1%eth0]:7744", "[fe80::1%eth0]:7744"),
        ("198.51.100.9:7\u00b2", None),  # not an ASCII digit
    ],
)
def test_an_address_is_kept_in_one_canonical_form_whatever_its_spelling(
    told: str, key: str | None
) -> None:
    p = policy(dial_sources=MDNS)
    assert p.hint(told, "exchange", now=0.0) == (key is not None)
    assert [v.address for v in p.addresses()] == ([key] if key else [])


def test_peers_get_at_most_two_ports_of_one_host_into_the_table() -> None:
    """So that no peer can aim this node's dials at one victim through many ports."""
    p = policy(dial_sources=EXCHANGING)
    for port in range(7744, 7754):
        p.hint(f"198.51.100.9:{port}", "exchange", now=float(port))
    assert [v.address for v in p.addresses()] == ["198.51.100.9:7752", "198.51.100.9:7753"]
    assert p.hint("198.51.100.9:7760", "mdns", now=99.0)  # discovery is not held to it


def test_an_address_first_told_by_a_peer_is_discoverys_once_mdns_finds_it() -> None:
    """With the daemon's sources, both dialled: the address leaves the peers' quota, and
    discovery's withdrawal forgets it."""
    p = policy(dial_sources=EXCHANGING)
    assert p.hint(HINTS[0], "exchange", now=0.0)
    assert p.hint(HINTS[0], "mdns", now=1.0)
    assert view(p, HINTS[0]).origin == "mdns"
    p.withdraw(HINTS[0], "mdns")
    assert p.addresses() == []


def test_a_peer_cannot_keep_an_address_discovery_withdrew() -> None:
    p = policy(dial_sources=EXCHANGING)
    assert p.hint(HINTS[0], "mdns", now=0.0)
    assert p.due(0.0) == [HINTS[0]]
    p.opened(NODES[0], HINTS[0], initiator=True, now=0.1)
    p.withdraw(HINTS[0], "mdns")  # in use: forgotten once its session ends
    assert p.hint(HINTS[0], "exchange", now=0.2)
    p.ended(NODES[0], HINTS[0], initiator=True, now=0.3)
    assert p.addresses() == []
