"""Propagation in a mesh formed by mDNS: 16 namespaces on one bridge, records published on one.

Once every node has its peers, 20 records are published on the first node, 0.2 s apart; a
watcher on every node notes when each arrives. The figure is the median over records of the
time until the last node stored it. Goal: <= 50 ms. Needs root and network namespaces.

    sudo python bench/mesh_propagation.py [--nodes 16] [--records 20]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

from _common import emit, log
from _lan import Lan, require_namespaces, start_daemons, wait_formed, warm_up

from meshnode.client import Client, ClientError

GOAL_MS = 50.0
SETTLE_S = 3.0  # after every node has a peer: the rest of the dials land
PREFIX = "bench/propagation/"


def measure(nodes: int, records: int) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp, Lan.create(hosts=nodes) as lan:
        sockets = start_daemons(lan, tmp)
        wait_formed(sockets)
        time.sleep(SETTLE_S)
        arrived: dict[str, list[float]] = {}
        lock = threading.Lock()
        ready = threading.Barrier(nodes + 1)
        for sock in sockets:
            threading.Thread(target=_watch, args=(sock, arrived, lock, ready), daemon=True).start()
        ready.wait(10)
        time.sleep(0.5)  # the watches are registered
        published: dict[str, float] = {}
        with Client(sockets[0], timeout=10) as client:
            for n in range(records):
                key = f"{PREFIX}{n}"
                published[key] = time.monotonic()
                client.publish(key, f"record {n}")
                time.sleep(0.2)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with lock:
                if all(len(arrived.get(k, [])) == nodes for k in published):
                    break
            time.sleep(0.05)
        with lock:
            return [
                (max(arrived[k]) - published[k]) * 1000
                for k in published
                if len(arrived.get(k, [])) == nodes
            ]


def _watch(
    sock: Path, arrived: dict[str, list[float]], lock: threading.Lock, ready: threading.Barrier
) -> None:
    with Client(sock, timeout=None) as client:
        events = client.watch(prefix=PREFIX)
        ready.wait(10)
        try:
            for event in events:
                with lock:
                    arrived.setdefault(event["record"]["key"], []).append(time.monotonic())
        except ClientError:
            return  # the node is stopping: the measurement is over


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=16)
    parser.add_argument("--records", type=int, default=20)
    args = parser.parse_args()
    require_namespaces()
    warm_up()
    log(f"{args.nodes} nodes forming a mesh by mDNS")
    times = measure(args.nodes, args.records)
    median = statistics.median(times) if times else None
    emit(
        {
            "bench": "mesh-propagation",
            "nodes": args.nodes,
            "records": args.records,
            "reached_all": len(times),
            "median_ms": None if median is None else round(median, 1),
            "max_ms": round(max(times), 1) if times else None,
            "goal_ms": GOAL_MS,
            "meets_goal": median is not None and median <= GOAL_MS,
        }
    )


if __name__ == "__main__":
    main()
