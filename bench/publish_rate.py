"""Publish rate with durable acknowledgements: what flushing each group commit costs.

A publish is acknowledged once its transaction is flushed to the disk
(``synchronous=FULL``), so a power cut cannot undo it; before meshnode 0.3.0 it
was acknowledged with ``synchronous=NORMAL``, which survives ``kill -9`` but
not a power cut. Group commit (``meshnode.runtime.publisher``) pays the flush
once per batch. Measured here, on the disk under the temporary directory:

(a) the store alone: 20,000 pre-signed own records stored in batches of 1, 16
    and 256, once with ``durable=False`` (before) and once with
    ``durable=True`` (after), each into a fresh store;
(b) end to end: a daemon, ``Client.publish_many`` of 20,000 small values
    (pipelined, so the daemon commits them in groups), and one ``publish``
    after another for 500 values (a group of one each).

Prints ``publish_many_per_s``, ``publish_one_by_one_per_s`` and, per batch size,
``store_<n>_normal_per_s`` and ``store_<n>_full_per_s`` as one JSON line, last
on stdout.
"""

from __future__ import annotations

import os
import time

from _common import CREATED_MS, emit, log, running_daemon, temp_dir

from meshnode.core.identity import Identity
from meshnode.core.record import Record, sign_record
from meshnode.store.base import StoreLimits
from meshnode.store.sqlite import SQLiteStore

RECORDS = 20_000
ONE_BY_ONE = 500
BATCH_SIZES = (1, 16, 256)
STORE_RECORDS_FOR_BATCH = {1: 2_000, 16: 20_000, 256: 20_000}


def own_records(identity: Identity, count: int) -> list[Record]:
    return [
        sign_record(
            identity,
            seq=n + 1,
            key=f"bench/{n}",
            value=f"value {n}",
            created_ms=CREATED_MS,
            expires_ms=None,
        )
        for n in range(count)
    ]


def store_rate(
    path: str, identity: Identity, records: list[Record], batch: int, durable: bool
) -> float:
    store = SQLiteStore(path, identity.public_key, StoreLimits())
    try:
        started = time.perf_counter()
        for start in range(0, len(records), batch):
            store.ingest(records[start : start + batch], CREATED_MS, durable=durable)
        return len(records) / (time.perf_counter() - started)
    finally:
        store.close()


def main() -> None:
    results: dict[str, float | int] = {}
    with temp_dir() as tmp:
        identity = Identity(os.urandom(32))
        records = own_records(identity, RECORDS)
        for batch in BATCH_SIZES:
            subset = records[: STORE_RECORDS_FOR_BATCH[batch]]
            for durable, name in ((False, "normal"), (True, "full")):
                path = tmp / f"store-{batch}-{name}.sqlite3"
                rate = store_rate(str(path), identity, subset, batch, durable)
                results[f"store_{batch}_{name}_per_s"] = round(rate)
                log(f"store, batches of {batch:>3}, synchronous={name.upper():<6}: {rate:,.0f}/s")

        with running_daemon(tmp / "node", tmp / "s.sock") as daemon, daemon.client() as client:
            items = [(f"bulk/{n}", f"value {n}", None) for n in range(RECORDS)]
            started = time.perf_counter()
            answers = client.publish_many(items)
            elapsed = time.perf_counter() - started
            if not all(isinstance(a, dict) for a in answers):
                raise SystemExit("a publish was refused")
            results["publish_many_per_s"] = round(RECORDS / elapsed)
            log(f"daemon, publish_many of {RECORDS:,}: {RECORDS / elapsed:,.0f}/s")
            started = time.perf_counter()
            for n in range(ONE_BY_ONE):
                client.publish(f"one/{n}", n)
            elapsed = time.perf_counter() - started
            results["publish_one_by_one_per_s"] = round(ONE_BY_ONE / elapsed)
            log(f"daemon, {ONE_BY_ONE} publishes one by one: {ONE_BY_ONE / elapsed:,.0f}/s")
    results["records"] = RECORDS
    emit(results)


if __name__ == "__main__":
    main()
