"""Sneakernet bundles: ``meshnode export`` and ``meshnode import`` of 100,000 records.

Goals (from the issue): export >= 50,000 records/s; import >= 0.75 x the raw
single-thread Ed25519 verify rate of the ``cryptography`` package measured in
the same run (``import_ratio >= 0.75``).

100,000 records from 1,000 authors (100 each, distinct keys, small values) are
signed before any timing and stored offline in a source data dir. Then, each
timed as the whole command a user runs (process start-up included):

(a) offline: ``meshnode export`` from the stopped source node to a file, and
    ``meshnode import`` of that file into a fresh, stopped node (both under
    the data-dir lock, verifying on two threads as the daemon does);
(b) through daemons: ``meshnode export`` from a daemon on the source data dir,
    and ``meshnode import`` into a daemon on another fresh data dir.

Every import is checked to have stored all 100,000 records. The raw verify
rate (``Ed25519PublicKey.from_public_bytes(author).verify(signature,
signing_input)``, keys loaded once per author, inputs built beforehand, one
thread, over 20,000 of the records) is measured just before and just after
each import, and each import's ratio uses the mean of its two: a shared
machine that slows down meanwhile slows both sides alike.

Prints a table, then ``export_records_per_s``, ``import_records_per_s``,
``raw_verify_per_s`` and ``import_ratio`` (offline; the daemon figures beside
them) as one JSON line, last on stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from _common import (
    child_env,
    emit,
    fill_data_dir,
    log,
    meshnode_executable,
    running_daemon,
    temp_dir,
    timed_foreign_records,
    warm_bytecode_cache,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from meshnode.core.record import Record, signing_input
from meshnode.system import datadir

AUTHORS = 1_000
PER_AUTHOR = 100
GOAL_EXPORT = 50_000
GOAL_RATIO = 0.75
VERIFY_SAMPLE = 20_000

Job = tuple[Ed25519PublicKey, bytes, bytes]


def verify_jobs(records: list[Record]) -> list[Job]:
    keys = {r.author: Ed25519PublicKey.from_public_bytes(r.author) for r in records}
    return [(keys[r.author], r.signature, signing_input(r.raw)) for r in records]


def verify_rate(jobs: list[Job]) -> float:
    """Raw single-thread verifies per second (cryptography)."""
    started = time.perf_counter()
    for key, signature, message in jobs:
        key.verify(signature, message)  # raises InvalidSignature: none expected
    rate = len(jobs) / (time.perf_counter() - started)
    log(f"  raw verify: {rate:,.0f}/s")
    return rate


def beside_verify(jobs: list[Job], run: Callable[[], float]) -> tuple[float, float]:
    """``run``'s rate, and the raw verify rate around it (the mean of before and after)."""
    before = verify_rate(jobs)
    rate = run()
    return rate, (before + verify_rate(jobs)) / 2


def meshnode(env: dict[str, str], home: Path, socket: Path, *args: str) -> tuple[float, str, str]:
    """Run one ``meshnode`` command; its wall time, stdout and stderr."""
    command = [meshnode_executable(), *args, "--data-dir", str(home), "--socket", str(socket)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}): {done.stderr}")
    return elapsed, done.stdout, done.stderr


def fresh_node(home: Path) -> None:
    datadir.prepare(home)
    datadir.load_or_create_identity(home, os.urandom(32))


def export(env: dict[str, str], home: Path, socket: Path, path: Path, expected: int) -> float:
    elapsed, _, stderr = meshnode(env, home, socket, "export", str(path), "--json")
    summary = json.loads(stderr.strip().splitlines()[-1])
    if summary["records"] != expected:
        raise SystemExit(f"exported {summary['records']} records, expected {expected}")
    log(f"  {summary['records']:,} records, {summary['bytes'] / 1e6:.1f} MB in {elapsed:.2f} s")
    return expected / elapsed


def import_(env: dict[str, str], home: Path, socket: Path, path: Path, expected: int) -> float:
    elapsed, stdout, _ = meshnode(env, home, socket, "import", str(path), "--json")
    report = json.loads(stdout)
    if report["new"] != expected or not report["complete"]:
        raise SystemExit(f"import stored {report['new']} of {expected}: {report}")
    log(f"  {report['new']:,} new records in {elapsed:.2f} s")
    return expected / elapsed


def main() -> None:
    _, records = timed_foreign_records(AUTHORS, PER_AUTHOR)
    count = len(records)
    with temp_dir() as tmp:
        env = child_env(tmp)
        source, offline_target, daemon_target = tmp / "source", tmp / "target1", tmp / "target2"
        log(f"filling the source data dir with {count:,} records ...")
        fill_data_dir(source, records)
        fresh_node(offline_target)
        fresh_node(daemon_target)
        warm_bytecode_cache(tmp, env)
        nobody = tmp / "nobody.sock"  # no daemon answers here: the commands go offline

        jobs = verify_jobs(records[::5][:VERIFY_SAMPLE])

        log("offline export ...")
        offline_file = tmp / "offline.mnb"
        export_offline = export(env, source, nobody, offline_file, count)
        log("offline import into a fresh node, between two raw verify runs ...")
        import_offline, verify_offline = beside_verify(
            jobs, lambda: import_(env, offline_target, nobody, offline_file, count)
        )

        daemon_file = tmp / "daemon.mnb"
        with running_daemon(source, tmp / "source.sock", env):
            log("export through a daemon ...")
            export_daemon = export(env, source, tmp / "source.sock", daemon_file, count)
        with running_daemon(daemon_target, tmp / "target.sock", env):
            log("import through a daemon into a fresh node, between two raw verify runs ...")
            import_daemon, verify_daemon = beside_verify(
                jobs, lambda: import_(env, daemon_target, tmp / "target.sock", daemon_file, count)
            )

    ratio_offline, ratio_daemon = import_offline / verify_offline, import_daemon / verify_daemon
    verify = (verify_offline + verify_daemon) / 2
    rows = [
        ("export, offline", export_offline, f"goal >= {GOAL_EXPORT:,}/s"),
        ("export, daemon", export_daemon, f"goal >= {GOAL_EXPORT:,}/s"),
        ("import, offline", import_offline, f"{ratio_offline:.2f} x verify (goal >= {GOAL_RATIO})"),
        ("import, daemon", import_daemon, f"{ratio_daemon:.2f} x verify (goal >= {GOAL_RATIO})"),
        ("raw verify, 1 thread", verify, "cryptography, around the imports"),
    ]
    print(f"{'':<22}{'records/s':>12}")
    for name, rate, note in rows:
        print(f"{name:<22}{rate:>12,.0f}  {note}")
    met = min(export_offline, export_daemon) >= GOAL_EXPORT and ratio_offline >= GOAL_RATIO
    print(f"goals {'met' if met else 'MISSED'} (offline import ratio {ratio_offline:.3f})")
    emit(
        {
            "records": count,
            "authors": AUTHORS,
            "export_records_per_s": round(export_offline),
            "export_daemon_records_per_s": round(export_daemon),
            "import_records_per_s": round(import_offline),
            "import_daemon_records_per_s": round(import_daemon),
            "raw_verify_per_s": round(verify_offline),
            "raw_verify_daemon_run_per_s": round(verify_daemon),
            "import_ratio": round(ratio_offline, 3),
            "import_daemon_ratio": round(ratio_daemon, 3),
            "goal_export_per_s": GOAL_EXPORT,
            "goal_ratio": GOAL_RATIO,
        }
    )


if __name__ == "__main__":
    main()
