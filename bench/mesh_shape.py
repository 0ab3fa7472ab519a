"""The overlay real daemons build by themselves: N namespaces on one bridge, everyone hearing
everyone by mDNS, as at an event.

All N ``meshnode run`` (no --peer) start at once; once every node has a peer and the degrees
have not changed for ``--steady`` seconds, each node's sessions are read from its control
socket and the overlay's shape is printed: connections per node against the configured
bounds, nodes without neighbours, components, diameter and the degree distribution. Goal:
diameter <= 2 log4 N. Needs root and network namespaces (tests/netns.py).

    sudo python bench/mesh_shape.py [--nodes 16] [--steady 10]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

from _common import emit, log
from _lan import Lan, require_namespaces, start_daemons, warm_up

from meshnode.client import Client, ClientError
from meshnode.engine.settings import PeerSettings
from meshnode.sim.overlay import shape_of

FORM_TIMEOUT_S = 120.0  # N Pythons starting at once on two cores take a while


def neighbours(sockets: list[Path]) -> dict[str, list[str]] | None:
    """node id -> the node ids of its open sessions; None while a daemon does not answer."""
    found: dict[str, list[str]] = {}
    for sock in sockets:
        try:
            with Client(sock, timeout=10) as client:
                me = client.node_id()["node_id"]
                found[me] = sorted({p["node_id"] for p in client.call("peers")})
        except ClientError:
            return None
    return found


def measure(nodes: int, steady: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp, Lan.create(hosts=nodes) as lan:
        started = time.monotonic()
        sockets = start_daemons(lan, tmp)
        last: dict[str, list[str]] | None = None
        since = time.monotonic()
        while time.monotonic() - started < FORM_TIMEOUT_S:
            now = neighbours(sockets)
            if now is None or not all(now.values()) or len(now) < nodes:
                since, last = time.monotonic(), None
            elif now != last:
                since, last = time.monotonic(), now
            elif time.monotonic() - since >= steady:
                return _report(nodes, now, formed_s=since - started)
            time.sleep(0.5)
        raise SystemExit(f"the overlay did not settle within {FORM_TIMEOUT_S:g} s")


def _report(nodes: int, found: dict[str, list[str]], *, formed_s: float) -> dict[str, object]:
    index = {node: n for n, node in enumerate(sorted(found))}
    shape = shape_of({index[node]: [index[p] for p in peers] for node, peers in found.items()})
    settings = PeerSettings()
    goal = 2 * math.log(nodes, 4)
    return {
        "bench": "mesh-shape-daemons",
        "nodes": nodes,
        "settled_s": round(formed_s, 1),
        "overlay": shape.as_json(),
        "bounds": {"target_degree": settings.target_degree, "max_peers": settings.max_peers},
        "within_bounds": shape.degree_min >= 1 and shape.degree_max <= settings.max_peers,
        "diameter_goal": round(goal, 2),
        "meets_goal": shape.components == 1
        and shape.diameter is not None
        and shape.diameter <= goal,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=16)
    parser.add_argument("--steady", type=float, default=10.0, help="seconds without change")
    args = parser.parse_args()
    require_namespaces()
    warm_up()
    log(f"{args.nodes} daemons in namespaces on one bridge, mDNS on")
    emit(measure(args.nodes, args.steady))


if __name__ == "__main__":
    main()
