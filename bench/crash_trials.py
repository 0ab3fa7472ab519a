"""kill -9 trials during publishing and ingest: nothing acknowledged is lost, no seq reused.

Goals (issue 7): over every trial, no acknowledged publish is lost
(``lost == 0``), no seq is signed twice (``seqs_reused == 0``), and the node
ends each trial with every record of its peer (``synced_every_trial``).

Node B's data dir holds 30,000 records of 30 authors (filled offline). A new
node A dials B and, while it fetches them (ingest), a client pipelines
publishes into A. A random moment 0.5 to 3 s in, A is killed with SIGKILL, then started
again. Each trial then checks that every publish A acknowledged is stored (the
stored seq of its key is that seq or a newer one), that A's next publish has a
seq above every seq it ever acknowledged, and that A catches up with all of B.

Run with ``--trials N`` (default 5; about 6 s each). Prints ``trials``,
``acknowledged``, ``lost``, ``seqs_reused`` and details as one JSON line, last
on stdout.
"""

from __future__ import annotations

import argparse
import random
import signal
import threading
import time

from _common import child_env, emit, log, temp_dir
from net_common import NetNode, fill_many, node_group, signed_raws, wait_for

from meshnode.client import ClientError

AUTHORS = 30
PER_AUTHOR = 1_000
KEYS = 500  # A's own keys, each published over and over
CHUNK = 100  # publishes per publish_many call


def publish_until_killed(node: NetNode, acknowledged: dict[int, tuple[str, int]]) -> None:
    """Pipeline publishes into ``node`` until it dies; note each seq it acknowledged."""
    n = 0
    with node.client() as client:
        while True:
            items = [(f"crash/{(n + i) % KEYS}", n + i, None) for i in range(CHUNK)]
            try:
                answers = client.publish_many(items)
            except ClientError:
                return
            for answer in answers:
                if isinstance(answer, dict):
                    acknowledged[answer["seq"]] = (answer["key"], answer["value"])
            n += CHUNK


def trial(a: NetNode, b: NetNode, rng: random.Random) -> dict[str, int]:
    acknowledged: dict[int, tuple[str, int]] = {}
    a.start(peers=[b.address])
    writer = threading.Thread(target=publish_until_killed, args=(a, acknowledged))
    writer.start()
    time.sleep(rng.uniform(0.5, 3.0))
    if a.process is None:
        raise RuntimeError("A is not running")
    a.process.send_signal(signal.SIGKILL)
    a.process.wait()
    a.process = None
    writer.join(30)
    a.start(peers=[b.address])
    survived = foreign_records(a)
    stored = {r["key"]: r["seq"] for r in query_all(a, "crash/")}
    lost = sum(1 for seq, (key, _) in acknowledged.items() if stored.get(key, 0) < seq)
    after = a.rpc.publish("crash/after", "restarted")["seq"]
    reused = sum(1 for seq in acknowledged if seq >= after)
    expected = AUTHORS * PER_AUTHOR
    wait_for(lambda: foreign_records(a) >= expected or None, "A to catch up with B", 60)
    a.stop()
    return {
        "acknowledged": len(acknowledged),
        "lost": lost,
        "seqs_reused": reused,
        "foreign_after_restart": survived,
    }


def query_all(node: NetNode, prefix: str) -> list[dict[str, object]]:
    return list(node.rpc.query(prefix=prefix, limit=10_000)["records"])


def foreign_records(node: NetNode) -> int:
    status = node.status()
    return int(status["records"]) - int(status["own_records"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    options = parser.parse_args()
    rng = random.Random(options.seed)
    totals = {"acknowledged": 0, "lost": 0, "seqs_reused": 0}
    with temp_dir() as tmp:
        env = child_env(tmp)
        b = NetNode("b", tmp, env)
        fill_many([(b.home, signed_raws(AUTHORS, PER_AUTHOR))])
        with node_group([b]):
            b.start()
            for number in range(1, options.trials + 1):
                a = NetNode(f"a{number}", tmp, env)  # a new node each time: it has all to fetch
                with node_group([a]):
                    outcome = trial(a, b, rng)
                log(
                    f"trial {number}: {outcome['acknowledged']:,} acknowledged,"
                    f" {outcome['lost']} lost, {outcome['seqs_reused']} seqs reused,"
                    f" {outcome['foreign_after_restart']:,} of B's records kept through the kill"
                )
                for name in totals:
                    totals[name] += outcome[name]
    emit({"trials": options.trials, **totals, "synced_every_trial": True})


if __name__ == "__main__":
    main()
