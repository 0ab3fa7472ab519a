"""Live throughput: records published on one node reaching its connected peer.

Goal (from the issue): at least 5,000 records/s from the first publish on
node A until node B holds them all (``live_records_per_s >= 5000``), with
nothing dropped (``delivered == 10000``; ``dropped_pushes`` is reported).

Set-up: two empty nodes, B started with ``--peer A``; the benchmark waits
until both sides show the session open and B's first reconciliation has
settled. Then 4 threads, each with its own control connection
(``meshnode.client.Client``), publish 2,500 records each on A as fast as A's
API accepts them: ``Client.publish_many`` keeps up to 256 requests in flight
per connection (msgpack-RPC pipelining), which the daemon stores in group
commits (keys ``live/<thread>/<i>``, short string values). The clock starts
when the threads are released together and stops when B's ``status`` shows
10,000 records received from A (its ``peers`` entry, polled every 20 ms, which unlike
``status`` does not query B's SQLite; a record counted there is verified and
stored); A's publish rate alone is 10,000 / the
time until the last publish was answered. Afterwards B is queried for A's
``live/`` records and must hold exactly the 10,000 keys published, and A's
peer entry gives ``pushes_dropped`` (pushes dropped because B was slow, which
a later reconciliation would repair).

Prints the figures as one JSON line, last on stdout.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from _common import child_env, emit, log, temp_dir
from net_common import (
    NetNode,
    cpu_seconds,
    node_group,
    peer_entry,
    pid_of,
    reconcile_settled,
    records_in,
    wait_for,
)

THREADS = 4
PER_THREAD = 2_500
TOTAL = THREADS * PER_THREAD
GOAL_PER_S = 5_000
POLL_S = 0.02
WINDOW = 256  # requests each connection keeps in flight (msgpack-RPC pipelining)


def publisher(
    node: NetNode, index: int, start: threading.Barrier, finished: list[float], errors: list[str]
) -> None:
    try:
        with node.client() as client:
            client.call("ping")  # connected before the clock starts
            start.wait()
            items = (
                (f"live/{index}/{i:05d}", f"live record {index}.{i}", None)
                for i in range(PER_THREAD)
            )
            refused = [
                r for r in client.publish_many(items, window=WINDOW) if isinstance(r, Exception)
            ]
            if refused:
                errors.append(f"publisher {index}: {len(refused)} refused, first {refused[0]!r}")
        finished[index] = time.perf_counter()
    except Exception as exc:
        errors.append(f"publisher {index}: {exc!r}")
        finished[index] = time.perf_counter()


def main() -> None:
    began = time.perf_counter()
    with temp_dir("mnlv-") as tmp:
        env = child_env(tmp)
        a, b = NetNode("a", tmp, env), NetNode("b", tmp, env)
        with node_group([a, b]):
            a.start()
            a_id = a.node_id()
            b.start([a.address])
            b_id = b.node_id()

            def connected() -> bool:
                entry = peer_entry(b, a_id)
                return entry is not None and reconcile_settled(b, entry, a, b_id)

            wait_for(connected, "B's session with A to open and settle", 30.0)
            log(f"A {a.address} and B connected; publishing {TOTAL:,} records on A ...")

            start = threading.Barrier(THREADS + 1)
            finished = [0.0] * THREADS
            errors: list[str] = []
            threads = [
                threading.Thread(target=publisher, args=(a, i, start, finished, errors))
                for i in range(THREADS)
            ]
            for thread in threads:
                thread.start()
            cpu_before = (cpu_seconds(pid_of(a)), cpu_seconds(pid_of(b)))
            start.wait()
            t0 = time.perf_counter()
            delivered_at = wait_for(
                lambda: time.perf_counter() if records_in(b, a_id) >= TOTAL else None,
                f"B to receive {TOTAL:,} records",
                120.0,
                POLL_S,
            )
            cpu_after = (cpu_seconds(pid_of(a)), cpu_seconds(pid_of(b)))
            for thread in threads:
                thread.join()
            if errors:
                raise RuntimeError("; ".join(errors))
            published_at = max(finished)
            time.sleep(0.3)
            records = b.rpc.query(prefix="live/", author=a_id, limit=TOTAL)
            keys = {r["key"] for r in records["records"]}
            expected = {f"live/{t}/{i:05d}" for t in range(THREADS) for i in range(PER_THREAD)}
            a_entry = peer_entry(a, b_id) or {}
            b_entry = peer_entry(b, a_id) or {}
            b_count = b.records()
    delivered = len(keys & expected)
    if keys != expected or records["more"] or b_count != TOTAL:
        raise RuntimeError(
            f"B holds {delivered:,} of the {TOTAL:,} keys ({len(keys - expected)} unexpected,"
            f" {b_count:,} records in all)"
        )
    elapsed = delivered_at - t0
    publish_s = published_at - t0
    rate = TOTAL / elapsed
    cpu = [
        None if x is None or y is None else round(y - x, 2)
        for x, y in zip(cpu_before, cpu_after, strict=True)
    ]
    log(
        f"B held all {TOTAL:,} records {elapsed:.2f} s after the first publish:"
        f" {rate:,.0f} records/s (goal >= {GOAL_PER_S:,}); A answered the last publish after"
        f" {publish_s:.2f} s ({TOTAL / publish_s:,.0f} publishes/s); pushes dropped"
        f" {a_entry.get('pushes_dropped')}; A sent {a_entry.get('records_out')} records,"
        f" {a_entry.get('bytes_out'):,} bytes; CPU seconds during the run A {cpu[0]}, B {cpu[1]};"
        f" total {time.perf_counter() - began:.1f} s"
    )
    results: dict[str, Any] = {
        "live_records_per_s": round(rate),
        "live_seconds": round(elapsed, 3),
        "publish_rate_per_s": round(TOTAL / publish_s),
        "publish_seconds": round(publish_s, 3),
        "delivered": delivered,
        "dropped_pushes": a_entry.get("pushes_dropped"),
        "b_records_in": b_entry.get("records_in"),
        "cpu_s_a": cpu[0],
        "cpu_s_b": cpu[1],
        "goals_missed": [] if rate >= GOAL_PER_S else ["live_records_per_s"],
    }
    emit(results)


if __name__ == "__main__":
    main()
