"""Mesh formation over real multicast: 8 namespaces on one bridge, daemons started at once.

From the moment all 8 ``meshnode run`` processes are started (no --peer) to the moment every
node has a peer and a record published on the first node (as soon as its control socket
answers) is stored on all 8: the median of 3 runs. Goal: <= 1.0 s. Needs root and network
namespaces (tests/netns.py).

The daemons' start-up is included: eight Pythons starting at once on two cores. Printed
beside the figure: the time from the last daemon answering its socket; the CPU the daemons had
used when the mesh formed (``median_daemon_cpu_s``, per daemon), whose total over the
machine's cores is the part of the figure no network could shorten; what one daemon's imports
cost alone (``daemon_import_s``); trio's imports alone (``trio_import_s``, none of
meshnode's code), the yardstick when the machine's speed varies from day to day; and,
just before each run, as many Pythons importing trio alone started at once
(``median_trio_floor_s``): the floor under the figure on this machine that day.

The interpreter matters as much as anything meshnode does, so ``python`` names it. Run
from a venv made with the distribution's ``python3`` (Debian's, the one Raspberry Pi OS
ships, built with profile-guided optimisation and a static libpython), a daemon's imports
take about a quarter less time than under a plain ``./configure && make`` build (pyenv's).

    sudo python bench/mesh_formation.py [--nodes 8] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from _common import emit, log
from _lan import (
    Lan,
    daemon_import_s,
    require_namespaces,
    start_daemons,
    trio_floor_s,
    trio_import_s,
    warm_up,
)

from meshnode.client import Client, ClientError

GOAL_S = 1.0
TIMEOUT_S = 20.0


class Run(NamedTuple):
    formed_s: float  # from the start to every node having a peer and the record
    all_up_s: float  # from the start to every daemon answering its control socket
    cpu_s: float  # CPU the daemons had used by then, all together
    floor_s: float  # as many Pythons importing trio alone, started at once just before


def once(nodes: int) -> Run:
    """One formation, timed from the moment the daemons are started.

    A daemon found ready is not asked again until all are, then all are asked once more:
    asking every daemon twice every 10 ms would take the CPU the last ones need to start.
    """
    floor = trio_floor_s(nodes)
    with tempfile.TemporaryDirectory() as tmp, Lan.create(hosts=nodes) as lan:
        started = time.monotonic()
        sockets = start_daemons(lan, tmp)
        author = None
        answering: set[Path] = set()
        ready: set[Path] = set()
        all_up = None
        while time.monotonic() - started < TIMEOUT_S:
            for sock in set(sockets) - answering:
                if _answers(sock):
                    answering.add(sock)
            if all_up is None and len(answering) == nodes:
                all_up = time.monotonic() - started
            if author is None:
                author = _publish(sockets[0])
            if author is not None:
                ready |= {sock for sock in answering - ready if _ready(sock, author)}
                if len(ready) == nodes:
                    ready = {sock for sock in sockets if _ready(sock, author)}
                    if len(ready) == nodes:
                        formed = time.monotonic() - started
                        cpu = sum(_cpu_s(p.pid) for host in lan.hosts for p in host.processes)
                        return Run(formed, formed if all_up is None else all_up, cpu, floor)
            time.sleep(0.01)
        raise SystemExit(f"the mesh did not form within {TIMEOUT_S} s")


def _cpu_s(pid: int) -> float:
    """User and system CPU seconds process ``pid`` has used (Linux: /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _answers(sock: Path) -> bool:
    try:
        with Client(sock, timeout=5) as client:
            client.call("ping")
    except ClientError:
        return False
    return True


def _publish(sock: Path) -> str | None:
    """The author's node id once the record is published; None while it cannot be."""
    try:
        with Client(sock, timeout=5) as client:
            client.publish("bench/formation", "here")
            return str(client.node_id()["node_id"])
    except ClientError:
        return None


def _ready(sock: Path, author: str) -> bool:
    """The daemon has a peer and the record."""
    try:
        with Client(sock, timeout=5) as client:
            if not client.call("peers"):
                return False
            client.get("bench/formation", author=author)
    except ClientError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    require_namespaces()
    warm_up()
    imports, trio_alone = daemon_import_s(), trio_import_s()
    python = f"{platform.python_version()} {os.path.realpath(sys.executable)}"
    log(f"python {python}")
    log(f"one daemon's imports alone: {imports:.3f} s; trio's alone: {trio_alone:.3f} s")
    cores = os.cpu_count() or 1
    runs = []
    for number in range(args.runs):
        run = once(args.nodes)
        runs.append(run)
        log(
            f"run {number + 1}: {run.formed_s:.3f} s, {run.formed_s - run.all_up_s:.3f} s after"
            f" all answered; the daemons had used {run.cpu_s:.2f} CPU-s by then,"
            f" {run.cpu_s / cores:.2f} s of this machine's {cores} cores; {args.nodes}"
            f" Pythons importing trio alone took {run.floor_s:.3f} s just before"
        )
    times = [run.formed_s for run in runs]
    median = statistics.median(times)
    emit(
        {
            "bench": "mesh-formation",
            "nodes": args.nodes,
            "python": python,
            "runs_s": [round(t, 3) for t in times],
            "median_s": round(median, 3),
            "median_after_all_answer_s": round(
                statistics.median(run.formed_s - run.all_up_s for run in runs), 3
            ),
            "median_daemon_cpu_s": round(
                statistics.median(run.cpu_s for run in runs) / args.nodes, 3
            ),
            "cores": cores,
            "daemon_import_s": round(imports, 3),
            "trio_import_s": round(trio_alone, 3),
            "median_trio_floor_s": round(statistics.median(run.floor_s for run in runs), 3),
            "goal_s": GOAL_S,
            "meets_goal": median <= GOAL_S,
        }
    )


if __name__ == "__main__":
    main()
