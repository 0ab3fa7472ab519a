"""The overlay a room builds by itself, on the simulator: its shape, and how it survives.

- ``shape``: N nodes in one room (everyone hears of everyone, as by mDNS at an
  event), 20 records, 20 virtual seconds: connections per node, nodes without
  neighbours, components, diameter and the degree distribution. Goal:
  diameter <= 2 log4 N.
- ``resilience``: 1,000 nodes in a room; at 5 s half of them crash for good.
  Goal: the survivors' overlay is connected again within 10 virtual seconds,
  and a record published afterwards reaches every survivor. A crashed process's
  connections are reset by its kernel, so its peers know at once. With
  ``--silent`` the half vanishes instead (unplugged: no reset, no goodbye, every
  byte to it lost): its peers find out only from their idle timeout (10 s), and
  ``noticed_s`` says when the last of them had.

    python bench/overlay.py shape [--nodes N ...] | resilience [--nodes N] [--silent]

Prints one JSON line per run, last on stdout.
"""

from __future__ import annotations

import argparse
import math
import time

from _common import emit, log

from meshnode.engine import events as e
from meshnode.engine.mesh import PeerView
from meshnode.engine.node import Publication
from meshnode.sim.network import SimNode
from meshnode.sim.scenario import Run, Scenario, collector_paused, run

CRASH_AT = 5.0
RECONNECT_GOAL_S = 10.0
STEP = 0.25  # virtual seconds between looks at the overlay after the crash


def shape(nodes: int, seed: int) -> dict[str, object]:
    report = run(Scenario(nodes, 20, 20.0, seed=seed, room=True))
    overlay = report.overlay.as_json()
    goal = 2 * math.log(nodes, 4)
    return {
        "bench": "overlay-shape",
        "nodes": nodes,
        "overlay": overlay,
        "diameter_goal": round(goal, 2),
        "meets_goal": overlay["diameter"] is not None and overlay["diameter"] <= goal,
        "delivered_fraction": report.delivered_fraction,
        "copies_per_node": round(report.copies_per_node, 2),
        "wall_s": round(report.wall_s, 1),
    }


def resilience(nodes: int, seed: int, *, silent: bool = False) -> dict[str, object]:
    started = time.perf_counter()
    sim = Run(Scenario(nodes, 0, 60.0, seed=seed, room=True))
    with collector_paused():
        sim.build()
        net = sim.net
        net.run_until(CRASH_AT)
        before = sim.overlay()
        victims = sim.rng.sample([n.index for n in net.live()], nodes // 2)
        if silent:  # cut off for good, as if unplugged: the rest hear nothing more of them
            net.partition(set(victims))
        else:
            for index in victims:
                net.crash(index, forever=True)
        survivors = {n.index for n in net.live()} - set(victims)
        lost = {net.nodes[i].identity.public_key for i in victims}
        reconnected = noticed = None
        until = CRASH_AT + 4 * RECONNECT_GOAL_S
        while net.now < until and (reconnected is None or noticed is None):
            net.run_until(net.now + STEP)
            after = sim.overlay(survivors)
            if reconnected is None and after.components == 1 and after.isolated == 0:
                reconnected = net.now - CRASH_AT
            if noticed is None and not any(
                v.node in lost for i in survivors for v in _peers(net.nodes[i])
            ):
                noticed = net.now - CRASH_AT
        author = net.nodes[min(survivors)]
        net.handle(author.index, e.Publish([Publication("after/crash", "still here")]))
        published = net.now
        reached = None
        while net.now < published + 10.0:
            net.run_until(net.now + 0.01)
            now_ms = net.instant().wall_ms
            key = author.identity.public_key
            if all(net.nodes[i].store.get(key, "after/crash", now_ms) for i in survivors):
                reached = net.now - published
                break
    return {
        "bench": "overlay-resilience",
        "nodes": nodes,
        "crashed": len(victims),
        "how": "cut off, no reset" if silent else "crashed, connections reset",
        "overlay_before": before.as_json(),
        "overlay_after": after.as_json(),
        "reconnected_s": None if reconnected is None else round(reconnected, 2),
        "noticed_s": None if noticed is None else round(noticed, 2),
        "reconnect_goal_s": RECONNECT_GOAL_S,
        "record_reached_all_ms": None if reached is None else round(reached * 1000, 1),
        "meets_goal": reconnected is not None
        and reconnected <= RECONNECT_GOAL_S
        and reached is not None,
        "wall_s": round(time.perf_counter() - started, 1),
    }


def _peers(node: SimNode) -> list[PeerView]:
    assert node.mesh is not None
    return [v for v in node.mesh.peers() if v.state == "open"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("shape", "resilience"))
    parser.add_argument("--nodes", type=int, action="append")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--silent", action="store_true", help="cut the half off, no reset")
    args = parser.parse_args()
    if args.what == "shape":
        for nodes in args.nodes or [200, 1000]:
            log(f"a room of {nodes} nodes")
            emit(shape(nodes, args.seed))
    else:
        for nodes in args.nodes or [1000]:
            how = "vanishing silently" if args.silent else "crashing"
            log(f"a room of {nodes} nodes, half of them {how} at {CRASH_AT:g} s")
            emit(resilience(nodes, args.seed, silent=args.silent))


if __name__ == "__main__":
    main()
