"""The overlay a room of nodes builds by itself, on the simulator: everyone hears of everyone
(as by mDNS at an event), and the peer policy still picks a bounded, random, connected graph."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec import structs

from meshnode.engine import events as e
from meshnode.engine.mesh import SWAPPED
from meshnode.engine.node import Publication
from meshnode.engine.settings import PeerSettings
from meshnode.sim.overlay import shape_of
from meshnode.sim.scenario import Run, Scenario, run
from tests.meshnet import closes

ROOM = 200  # the room: everyone at an event hears everyone by mDNS


def diameter_goal(nodes: int) -> float:
    return 2 * math.log(nodes, 4)


def test_shape_of_a_path_a_star_and_two_parts() -> None:
    path = shape_of({0: [1], 1: [0, 2], 2: [1]})
    assert (path.diameter, path.degree_min, path.degree_max, path.components) == (2, 1, 2, 1)
    star = shape_of({0: [1, 2, 3], 1: [0], 2: [0], 3: [0]})
    assert star.diameter == 2 and star.degrees == {3: 1, 1: 3}
    parts = shape_of({0: [1], 1: [0], 2: []})
    assert parts.components == 2 and parts.diameter is None and parts.isolated == 1


@pytest.fixture(scope="module", params=[4, 11], ids=lambda seed: f"seed {seed}")
def room(request: pytest.FixtureRequest) -> dict[str, object]:
    return run(Scenario(ROOM, 20, 20.0, seed=request.param, room=True)).as_json()


def test_a_room_forms_one_overlay_of_low_diameter(room: dict[str, object]) -> None:
    shape = room["overlay"]
    assert isinstance(shape, dict)
    assert shape["components"] == 1 and shape["isolated"] == 0
    assert shape["diameter"] <= diameter_goal(ROOM)
    assert room["converged"] and room["delivered_fraction"] == 1.0


def test_a_room_stays_within_the_connection_bounds_far_below_everyone(
    room: dict[str, object],
) -> None:
    shape = room["overlay"]
    assert isinstance(shape, dict)
    settings = PeerSettings()
    assert shape["degree_max"] <= settings.max_peers
    assert shape["degree_mean"] <= 3 * settings.outbound_slots  # not everyone with everyone
    assert shape["degree_min"] >= settings.target_degree  # every node found its 6


def test_a_room_with_churn_holds_every_invariant() -> None:
    report = run(Scenario(60, 20, 60.0, seed=5, room=True, churn=0.2))
    assert report.converged, report.invariants
    assert report.overlay.components == 1


def test_half_the_room_crashing_leaves_the_rest_connected_within_10_s() -> None:
    """The survivors replace their dead neighbours from the addresses they know."""
    scenario = Scenario(ROOM, 0, 60.0, seed=6, room=True)
    sim = Run(scenario)
    sim.build()
    net = sim.net
    net.run_until(5.0)
    victims = sim.rng.sample([n.index for n in net.live()], ROOM // 2)
    for index in victims:
        net.crash(index, forever=True)
    crashed_at = net.now
    while net.now < crashed_at + 10.0:
        net.run_until(net.now + 0.5)
        shape = sim.overlay()
        if shape.components == 1 and shape.isolated == 0:
            break
    assert shape.components == 1 and shape.isolated == 0, shape
    author = net.live()[0].index
    net.handle(author, e.Publish([Publication("after/crash", "still here")]))
    net.run_until(net.now + 2.0)
    now_ms = net.instant().wall_ms
    assert all(
        n.store.get(net.nodes[author].identity.public_key, "after/crash", now_ms)
        for n in net.live()
    )


STEPS = st.lists(
    st.tuples(st.sampled_from(["join", "leave", "crash", "restart"]), st.floats(0.05, 8.0)),
    max_size=12,
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nodes=st.integers(3, 24), seed=st.integers(0, 2**16), steps=STEPS)
def test_random_joins_leaves_and_crashes_never_break_the_bounds_and_the_room_reconnects(
    nodes: int, seed: int, steps: list[tuple[str, float]]
) -> None:
    """Whatever the order of arrivals and departures, every node keeps within its bounds,
    and once the room is quiet again the live nodes form one overlay: in a room every
    node knows every other's address, so the known addresses always allow it."""
    sim = Run(Scenario(nodes, 0, 3600.0, seed=seed, room=True))
    sim.build()
    net, rng = sim.net, random.Random(seed)
    settings_ = PeerSettings()
    net.run_until(1.0)
    for kind, pause in steps:
        live = net.live()
        down = [n for n in net.nodes if not n.up and not n.gone]
        if kind == "join":
            sim.join_room()
        elif kind in ("leave", "crash") and len(live) > 2:
            net.crash(rng.choice(live).index, forever=kind == "leave")
        elif kind == "restart" and down:
            restarted = rng.choice(down).index
            net.start(restarted)
            sim.hear_room(restarted)  # mDNS answers its first query
        net.run_until(net.now + pause)
        for node in net.live():
            assert node.mesh is not None
            inbound, outbound = node.mesh.sessions()
            assert outbound <= settings_.outbound_slots
            assert inbound + outbound <= settings_.max_peers
    net.run_until(net.now + 2 * settings_.backoff_max)
    shape = sim.overlay()
    assert shape.components == 1 and shape.isolated == 0, shape


def test_nodes_at_their_target_swap_neighbours_yet_keep_their_bounds_and_the_room_whole() -> None:
    """A swap dials one more and lets another go: degrees stay near the target, never past
    the maximum, and the room stays one overlay while neighbours change."""
    peers = structs.replace(PeerSettings(), target_degree=3, max_peers=6, outbound_slots=3)
    scenario = Scenario(12, 0, 90.0, seed=3, room=True)
    sim = Run(structs.replace(scenario, settings=structs.replace(scenario.settings, peers=peers)))
    sim.build()
    ended = closes(sim.net)
    sim.net.run_until(90.0)
    swapped = [why for _, why in ended if why.reason == SWAPPED and not why.by_peer]
    assert len(swapped) >= 6  # chances at about 10, 30 and 70 s; taken where a slot was free
    shape = sim.overlay()
    assert shape.components == 1 and shape.isolated == 0, shape
    assert shape.degree_min >= 3 and shape.degree_max <= 6, shape
