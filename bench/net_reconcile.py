"""Reconnect cost: what two nodes that share 100,000 records pay to find out what differs.

Goals (from the issue): two nodes already in sync settle with at most 100 bytes
of reconciliation, both ways together, in one round trip
(``in_sync_reconcile_bytes <= 100``, ``in_sync_round_trips == 1``); nodes that
differ by d records (d = 10 and d = 1000) spend at most 1 KB per difference on
top of the missing records themselves (``d*_overhead_bytes_per_diff <= 1024``).

Set-up: n = 100,000 records from 100 bench authors are signed once and stored
offline (``Node.ingest``) into two data dirs, A and B, each with its own
identity. Every case starts A, then B with ``--peer A`` (B dials, B runs the
reconciliation rounds).

- in_sync: wait until B's session with A is open and its reconciliation has
  settled (at least one round, an even number of Reconcile messages, the same
  count on A's side), then read from B's peer entry ``reconcile_bytes_in +
  reconcile_bytes_out`` (encoded Reconcile messages, both ways) and
  ``reconcile_messages`` (2 = one round trip); ``handshake_bytes`` separately;
  ``in_sync_seconds`` is from the session opening until it is seen settled
  (polled every 20 ms).
- d = 10 and d = 1000: with both daemons stopped, d extra records are stored
  offline, half only in A and half only in B (so both directions are
  exercised: B wants d/2 records and sends d/2). Both daemons start again (a
  reconnect) and the clock runs from B's session opening (``since_ms`` of
  its peer entry) until both stores hold the union: each side's ``peers``
  entry shows the d/2 records it lacked received (polled every 20 ms, the
  resolution; ``peers`` does not query SQLite, ``status`` would count 100,000
  rows on every poll), then ``status`` confirms the counts. Overhead per difference = (B's session
  ``bytes_in + bytes_out``, which exclude the handshake, minus the sum of the
  d records' ``len(raw)``) / d, read once reconciliation has settled and the
  counters no longer move. The time includes building the Negentropy item
  set of 100,000 records in a freshly started daemon.

Prints the figures as one JSON line, last on stdout.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from _common import child_env, emit, log, temp_dir
from net_common import (
    NetNode,
    fill_many,
    node_group,
    peer_entry,
    reconcile_settled,
    records_in,
    signed_raws,
    wait_for,
)

N_AUTHORS = 100
PER_AUTHOR = 1_000
DIFFS = (10, 1000)
DIFF_AUTHORS = 2  # extra authors whose records make the differences
RECONCILE_GOAL_BYTES = 100
OVERHEAD_GOAL_BYTES = 1024
POLL_S = 0.02


def settled_session(
    a: NetNode, b: NetNode, a_id: str, b_id: str, timeout_s: float = 60.0
) -> dict[str, Any]:
    """B's open session with A once its reconciliation has settled."""

    def check() -> dict[str, Any] | None:
        entry = peer_entry(b, a_id)
        if entry is not None and reconcile_settled(b, entry, a, b_id):
            return entry
        return None

    return wait_for(check, "B's reconciliation with A to settle", timeout_s, POLL_S)


def stable_session(a: NetNode, b: NetNode, a_id: str, b_id: str) -> tuple[dict[str, Any], float]:
    """Like ``settled_session``, and the byte counters unchanged over 200 ms.

    Also returns when (``time.time()``) the session was first seen settled.
    """
    entry = settled_session(a, b, a_id, b_id)
    first_settled = time.time()
    while True:
        time.sleep(0.2)
        again = settled_session(a, b, a_id, b_id)
        if (again["bytes_in"], again["bytes_out"]) == (entry["bytes_in"], entry["bytes_out"]):
            return again, first_settled
        entry = again


def diff_case(
    tmp: Path,
    env: dict[str, str],
    d: int,
    *,
    only_a: list[bytes],
    only_b: list[bytes],
    expected: int,
) -> dict[str, Any]:
    log(f"d={d}: storing {len(only_a)} records only in A and {len(only_b)} only in B (offline)")
    fill_many([(tmp / "a", only_a), (tmp / "b", only_b)])
    a, b = NetNode("a", tmp, env), NetNode("b", tmp, env)
    with node_group([a, b]):
        a.start()
        a_id = a.node_id()
        b.start([a.address])
        b_id = b.node_id()

        def union() -> float | None:
            if (
                records_in(b, a_id) >= len(only_a)
                and records_in(a, b_id) >= len(only_b)
                and b.records() == expected
                and a.records() == expected
            ):
                return time.time()
            return None

        done_at = wait_for(union, f"both stores to hold {expected:,} records", 120.0, POLL_S)
        entry, _ = stable_session(a, b, a_id, b_id)
        counts = (a.records(), b.records())
    if counts != (expected, expected):
        raise RuntimeError(f"d={d}: stores hold {counts}, expected {expected} each")
    seconds = done_at - entry["since_ms"] / 1000
    session_bytes = entry["bytes_in"] + entry["bytes_out"]
    record_bytes = sum(len(raw) for raw in only_a) + sum(len(raw) for raw in only_b)
    overhead = (session_bytes - record_bytes) / d
    log(
        f"d={d}: union of {expected:,} on both sides {seconds:.3f} s after B's session opened"
        f" ({done_at - b.spawned_at:.3f} s after B was spawned); session {session_bytes:,}"
        f" bytes, records {record_bytes:,} bytes, overhead {overhead:.1f} bytes per difference"
        f" (goal <= {OVERHEAD_GOAL_BYTES}); reconciliation {entry['reconcile_messages']}"
        f" messages in {entry['reconcile_rounds']} round(s),"
        f" {entry['reconcile_bytes_in'] + entry['reconcile_bytes_out']:,} bytes;"
        f" last round have/need {entry['last_reconcile']}"
    )
    return {
        f"d{d}_overhead_bytes_per_diff": round(overhead, 1),
        f"d{d}_seconds": round(seconds, 3),
        f"d{d}_seconds_from_spawn": round(done_at - b.spawned_at, 3),
        f"d{d}_session_bytes": session_bytes,
        f"d{d}_record_bytes": record_bytes,
        f"d{d}_reconcile_bytes": entry["reconcile_bytes_in"] + entry["reconcile_bytes_out"],
        f"d{d}_reconcile_messages": entry["reconcile_messages"],
        f"d{d}_handshake_bytes": entry["handshake_bytes"],
    }


def main() -> None:
    started = time.perf_counter()
    results: dict[str, Any] = {}
    n = N_AUTHORS * PER_AUTHOR
    base = signed_raws(N_AUTHORS, PER_AUTHOR)
    extra = signed_raws(
        DIFF_AUTHORS,
        sum(DIFFS) // DIFF_AUTHORS,
        first_author=N_AUTHORS,
        key_prefix="bench/diff/",
    )
    with temp_dir("mnnr-") as tmp:
        env = child_env(tmp)
        fill_many([(tmp / "a", base), (tmp / "b", base)])

        # -- in sync ----------------------------------------------------------
        a, b = NetNode("a", tmp, env), NetNode("b", tmp, env)
        with node_group([a, b]):
            a.start()
            a_id = a.node_id()
            b.start([a.address])
            b_id = b.node_id()
            entry, settled_at = stable_session(a, b, a_id, b_id)
            counts = (a.records(), b.records())
        if counts != (n, n):
            raise RuntimeError(f"in sync: stores hold {counts}, expected {n} each")
        reconcile_bytes = entry["reconcile_bytes_in"] + entry["reconcile_bytes_out"]
        round_trips = entry["reconcile_messages"] / 2
        log(
            f"in sync: reconciliation {reconcile_bytes} bytes both ways"
            f" ({entry['reconcile_bytes_out']} out, {entry['reconcile_bytes_in']} in),"
            f" {entry['reconcile_messages']} messages = {round_trips:g} round trip(s),"
            f" have/need {entry['last_reconcile']}; handshake {entry['handshake_bytes']} bytes;"
            f" session {entry['bytes_in'] + entry['bytes_out']} bytes; settled"
            f" {settled_at - entry['since_ms'] / 1000:.3f} s after the session opened"
            f" (goal <= {RECONCILE_GOAL_BYTES} bytes, 1 round trip)"
        )
        results.update(
            in_sync_reconcile_bytes=reconcile_bytes,
            in_sync_round_trips=round_trips,
            in_sync_session_bytes=entry["bytes_in"] + entry["bytes_out"],
            handshake_bytes=entry["handshake_bytes"],
            in_sync_seconds=round(settled_at - entry["since_ms"] / 1000, 3),
        )

        # -- d differences, half on each side ----------------------------------
        expected, used = n, 0
        for d in DIFFS:
            chunk = extra[used : used + d]
            used += d
            expected += d
            results.update(
                diff_case(
                    tmp, env, d, only_a=chunk[: d // 2], only_b=chunk[d // 2 :], expected=expected
                )
            )

    misses = []
    if results["in_sync_reconcile_bytes"] > RECONCILE_GOAL_BYTES:
        misses.append("in_sync_reconcile_bytes")
    if results["in_sync_round_trips"] != 1:
        misses.append("in_sync_round_trips")
    misses += [
        f"d{d}_overhead_bytes_per_diff"
        for d in DIFFS
        if results[f"d{d}_overhead_bytes_per_diff"] > OVERHEAD_GOAL_BYTES
    ]
    results.update(n=n, diffs_placed="half only in A, half only in B", goals_missed=misses)
    log(f"goals missed: {', '.join(misses) or 'none'}; total {time.perf_counter() - started:.1f} s")
    emit(results)


if __name__ == "__main__":
    main()
