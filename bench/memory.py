"""Daemon memory: the RSS of ``meshnode run`` holding 100,000 records.

Goal (from the issue): a daemon holding 100,000 records stays at or under
80 MB resident (``rss_mb <= 80``).

A data dir is built offline (a new identity in ``identity.key``, 100,000
foreign records from 100 authors stored in ``store.sqlite3`` through
``Node.ingest``), then ``meshnode run`` is started on it and exercised through
the control socket: ``status``, ``query`` with the default limit of 1,000, a
query by author, and a few ``get`` calls by author and key. Its RSS is read
with psutil afterwards; its peak (VmHWM) and its USS are shown for information.
The daemon loads its modules from a bytecode cache filled by a warm-up start
(``_common.child_env``), as an installed package would. 1 MB = 10^6 bytes.

Prints ``rss_mb``, ``records`` and ``goal_mb`` (plus details) as one JSON line,
last on stdout.
"""

from __future__ import annotations

from pathlib import Path

import psutil
from _common import (
    child_env,
    emit,
    filled_data_dir,
    log,
    record_key,
    record_value,
    running_daemon,
    temp_dir,
    warm_bytecode_cache,
)

GOAL_MB = 80.0
MB = 1_000_000


def peak_rss_bytes(pid: int) -> int | None:
    """The process's high-water RSS (Linux VmHWM), or None where unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def main() -> None:
    with temp_dir() as tmp:
        home = tmp / "node"
        _, authors, _, count = filled_data_dir(home)
        env = child_env(tmp)
        warm_bytecode_cache(tmp, env)
        with running_daemon(home, tmp / "s.sock", env) as daemon:
            process = psutil.Process(daemon.pid)
            idle_rss = process.memory_info().rss
            log(f"RSS when ready: {idle_rss / MB:.1f} MB")
            with daemon.client() as client:
                status = client.status()
                log(
                    f"status: {status['records']:,} records of {status['authors']} authors,"
                    f" {status['store_bytes'] / MB:.1f} MB on disk"
                )
                if status["records"] != count:
                    raise SystemExit(f"the daemon serves {status['records']} records, not {count}")
                answer = client.query(limit=1000)
                log(f"query --limit 1000: {len(answer['records'])} records, more={answer['more']}")
                by_author = client.query(author=authors[7].node_id, limit=1000)
                log(f"query --author: {len(by_author['records'])} records")
                for a, j in [(0, 0), (13, 500), (57, 999), (99, 123), (42, 42)]:
                    record = client.get(record_key(j), author=authors[a].node_id)
                    if record["value"] != record_value(a, j):
                        raise SystemExit(f"get {record_key(j)} by author {a}: {record!r}")
                log("get by author/key: 5 records as expected")
            rss = process.memory_info().rss
            uss = process.memory_full_info().uss
            peak = peak_rss_bytes(daemon.pid)
    log(
        f"RSS after use: {rss / MB:.1f} MB (USS {uss / MB:.1f} MB"
        + (f", peak {peak / MB:.1f} MB" if peak else "")
        + f"); goal <= {GOAL_MB:.0f} MB: {'met' if rss / MB <= GOAL_MB else 'MISSED'}"
    )
    emit(
        {
            "rss_mb": round(rss / MB, 1),
            "rss_ready_mb": round(idle_rss / MB, 1),
            "uss_mb": round(uss / MB, 1),
            "peak_rss_mb": round(peak / MB, 1) if peak else None,
            "records": count,
            "goal_mb": GOAL_MB,
        }
    )


if __name__ == "__main__":
    main()
