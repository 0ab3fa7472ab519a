"""Ingest throughput: verify-and-store of foreign records vs the raw Ed25519 verify rate.

Goal (from the issue): storing verified foreign records runs at >= 75% of the
raw single-thread Ed25519 verify rate of the ``cryptography`` package, that is
``ingest_ratio >= 0.75``.

100,000 records from 100 authors (1,000 each, distinct keys, small values) are
signed before any timing. Then, in the same run:

(a) raw verify: ``Ed25519PublicKey.verify(signature, signing_input(raw))`` over
    every record, single thread, public keys loaded once per author and the
    signing inputs built outside the timing (pure verify cost);
(b) the real path: ``Node.ingest(batch_of_raw_bytes, now_ms=...)`` into a fresh
    ``SQLiteStore``, in batches of 1,000, then a check that all were stored.

(a) and (b) are interleaved batch by batch (verify batch i, ingest batch i, ...)
and each is timed on its own, so that a noisy shared machine slows both alike
and the ratio stays comparable across runs.

For information only: where PyNaCl is installed (meshnode verifies with
libsodium since it depends on PyNaCl), libsodium's raw single-thread rate
(``crypto_sign_open``) is measured the same way, interleaved, and the ingest
rate is also given relative to it (``ingest_ratio_vs_nacl``); and the
``cryptography`` rate with 2 threads is measured on a 20,000-record subset.

Prints ``ingest_records_per_s``, ``raw_verify_per_s``, ``ingest_ratio`` and
``records`` (plus details) as one JSON line, last on stdout.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from _common import (
    DEFAULT_BATCH,
    INGEST_NOW_MS,
    emit,
    ingest_all,
    log,
    temp_dir,
    timed_foreign_records,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from meshnode.core.identity import Identity
from meshnode.core.record import signing_input
from meshnode.engine.node import Node
from meshnode.store.base import StoreLimits
from meshnode.store.sqlite import SQLiteStore

try:
    from nacl.bindings import crypto_sign_open

    HAVE_NACL = True
except ImportError:  # meshnode before PyNaCl: no libsodium figure
    HAVE_NACL = False

GOAL_RATIO = 0.75
T = TypeVar("T")

Job = tuple[Ed25519PublicKey, bytes, bytes]  # key, signature, signed message
NaclJob = tuple[bytes, bytes]  # signature + message, public key


def verify_all(jobs: list[Job]) -> None:
    for key, signature, message in jobs:
        key.verify(signature, message)  # raises InvalidSignature: none expected


def nacl_verify_all(jobs: list[NaclJob]) -> None:
    for signed, public_key in jobs:
        crypto_sign_open(signed, public_key)  # raises BadSignatureError: none expected


def threaded_verify_rate(jobs: list[Job], threads: int) -> float:
    """Records per second verified by ``cryptography`` alone on ``threads`` threads."""
    parts = [jobs[i::threads] for i in range(threads)]
    with ThreadPoolExecutor(threads) as pool:
        started = time.perf_counter()
        list(pool.map(verify_all, parts))
        elapsed = time.perf_counter() - started
    return len(jobs) / elapsed


def timed(fn: Callable[[list[T]], None], jobs: list[T]) -> float:
    started = time.perf_counter()
    fn(jobs)
    return time.perf_counter() - started


def main() -> None:
    _, records = timed_foreign_records()
    raws = [r.raw for r in records]

    keys = {r.author: Ed25519PublicKey.from_public_bytes(r.author) for r in records}
    jobs: list[Job] = [(keys[r.author], r.signature, signing_input(r.raw)) for r in records]
    nacl_jobs: list[NaclJob] = [
        (sig + msg, r.author) for r, (_, sig, msg) in zip(records, jobs, strict=True)
    ]
    log("raw Ed25519 verify (cryptography), 2 threads, 20,000 records ...")
    raw_rate_2 = threaded_verify_rate(jobs[:20_000], threads=2)
    log(f"  {raw_rate_2:,.0f} verifies/s")

    verify_s = nacl_s = ingest_s = 0.0
    stored = 0
    with temp_dir() as tmp:
        owner = Identity(bytes(32))  # the node; not one of the authors
        # As the daemon does (runtime/daemon.py): verification jobs on a two-thread pool.
        verifiers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="verify")
        store = SQLiteStore(tmp / "store.sqlite3", owner.public_key, StoreLimits())
        try:
            node = Node(owner, store, parallel_map=verifiers.map)
            log(
                "raw verify (cryptography"
                + (", libsodium" if HAVE_NACL else "")
                + f", 1 thread) and Node.ingest into a fresh SQLiteStore,"
                f" interleaved in batches of {DEFAULT_BATCH} ..."
            )
            for start in range(0, len(raws), DEFAULT_BATCH):
                end = start + DEFAULT_BATCH
                verify_s += timed(verify_all, jobs[start:end])
                if HAVE_NACL:
                    nacl_s += timed(nacl_verify_all, nacl_jobs[start:end])
                started = time.perf_counter()
                stored += ingest_all(node, raws[start:end], DEFAULT_BATCH)
                ingest_s += time.perf_counter() - started
                if end % 20_000 == 0:
                    log(
                        f"  {end:>7,}: cryptography {end / verify_s:,.0f}/s,"
                        + (f" libsodium {end / nacl_s:,.0f}/s," if nacl_s else "")
                        + f" ingest {end / ingest_s:,.0f}/s so far"
                    )
            stats = store.stats(INGEST_NOW_MS)
        finally:
            verifiers.shutdown()
            store.close()
    raw_rate = len(jobs) / verify_s
    nacl_rate = len(jobs) / nacl_s if nacl_s else None
    ingest_rate = len(raws) / ingest_s
    log(
        f"raw verify: cryptography {raw_rate:,.0f}/s ({verify_s:.2f} s)"
        + (f", libsodium {nacl_rate:,.0f}/s ({nacl_s:.2f} s)" if nacl_rate else "")
        + f"; ingest {ingest_rate:,.0f} records/s ({ingest_s:.2f} s), {stored:,} stored,"
        f" store holds {stats.records:,} records of {stats.authors} authors"
    )
    if stats.records != len(records) or stored != len(records):
        raise SystemExit(f"expected {len(records)} records stored, store has {stats.records}")

    ratio = ingest_rate / raw_rate
    log(
        f"ingest_ratio {ratio:.3f} (goal >= {GOAL_RATIO}):"
        f" {'met' if ratio >= GOAL_RATIO else 'MISSED'}"
        + (f"; vs libsodium {ingest_rate / nacl_rate:.3f}" if nacl_rate else "")
    )
    emit(
        {
            "ingest_records_per_s": round(ingest_rate),
            "raw_verify_per_s": round(raw_rate),
            "ingest_ratio": round(ratio, 3),
            "goal_ratio": GOAL_RATIO,
            "raw_verify_nacl_per_s": round(nacl_rate) if nacl_rate else None,
            "ingest_ratio_vs_nacl": round(ingest_rate / nacl_rate, 3) if nacl_rate else None,
            "raw_verify_2threads_per_s": round(raw_rate_2),
            "batch": DEFAULT_BATCH,
            "ingest_s": round(ingest_s, 2),
            "records": stats.records,
        }
    )


if __name__ == "__main__":
    main()
