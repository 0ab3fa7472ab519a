"""A Sybil flood beside an honest peer: what the node keeps, and whether it stays responsive.

Goals (issue 7): every record of an honest author the node held before the
flood, or received during it, is kept (``honest_kept_percent == 100``); a
control call during the flood answers within 200 ms (``status_max_ms <= 200``).

A daemon runs with a 64 MiB store that already holds 200 records (1 KB
values) of an honest author, received from an honest peer two hours ago (the
data dir is filled offline). The honest peer connects; then a peer with the
network key pushes 20,000 records of 20,000 fresh authors, 16,000-byte values:
320 MB, five times the store. During the flood the honest peer pushes 300 more
records of its author and a client calls ``status`` every 50 ms. Both peers
read everything the node sends them (the node relays each peer's records to
the other), so neither is throttled for not reading.

Prints ``honest_kept_percent``, ``status_max_ms``, ``status_p99_ms``,
``flood_records_per_s`` and details as one JSON line, last on stdout.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from _common import emit, log, temp_dir, try_ping

from meshnode.client import Client
from meshnode.conformance.link import Link, Target
from meshnode.conformance.suite import HELLO
from meshnode.core import messages as m
from meshnode.core.identity import Identity
from meshnode.core.netkey import PUBLIC_NETWORK_KEY
from meshnode.core.record import Record, sign_record
from meshnode.store.base import StoreLimits
from meshnode.store.sqlite import SQLiteStore
from meshnode.system import datadir

STORE_BYTES = 64 * 1024 * 1024
HELD_FOR_MS = 2 * 3600 * 1000
SYBILS = 20_000
SYBIL_VALUE = "s" * 16_000
HONEST_BEFORE = 200
HONEST_DURING = 300
PER_MESSAGE = 60  # ~1 MB records messages
STATUS_EVERY_S = 0.05
GOAL_STATUS_MS = 200.0

LAUNCH = """
import sys
from pathlib import Path
from meshnode.runtime.daemon import DaemonConfig, run
from meshnode.engine.settings import PeerSettings, Settings
from meshnode.store.base import StoreLimits
home, sock, port, total = sys.argv[1:]
run(DaemonConfig(Path(home), Path(sock), Settings(
    peers=PeerSettings(listen=(("127.0.0.1", int(port)),)),
    store=StoreLimits(max_total_bytes=int(total)),
), log_level="warning"))
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def records_of(author: Identity, prefix: str, count: int, value: str, now: int) -> list[Record]:
    return [
        sign_record(author, seq=n + 1, key=f"{prefix}/{n}", value=value, created_ms=now)
        for n in range(count)
    ]


def held_since_long_ago(home: Path, records: list[Record], peer: Identity) -> None:
    """A data dir whose store got ``records`` from ``peer`` two hours ago."""
    datadir.prepare(home)
    identity, _ = datadir.load_or_create_identity(home, os.urandom(32))
    store = SQLiteStore(home / datadir.STORE_FILE, identity.public_key, StoreLimits(STORE_BYTES))
    try:
        then = int(time.time() * 1000) - HELD_FOR_MS
        store.ingest(records, then, source=peer.public_key)
    finally:
        store.close()


def sybil_records() -> list[Record]:
    now = int(time.time() * 1000)
    return [
        sign_record(Identity(os.urandom(32)), seq=1, key="spam", value=SYBIL_VALUE, created_ms=now)
        for _ in range(SYBILS)
    ]


class Peer:
    """A session with the node whose incoming bytes a thread reads and drops."""

    def __init__(self, target: Target, identity: Identity | None = None) -> None:
        self.link = Link(target, identity).handshake()
        self.link.send(HELLO)
        self.link.sock.settimeout(None)
        self._drain = threading.Thread(target=self._read_all, daemon=True)
        self._drain.start()

    def _read_all(self) -> None:
        try:
            while self.link.sock.recv(1 << 20):
                pass
        except OSError:
            return

    def push(self, records: list[Record]) -> None:
        for start in range(0, len(records), PER_MESSAGE):
            chunk = records[start : start + PER_MESSAGE]
            self.link.send(m.Records(tuple(r.raw for r in chunk)))

    def close(self) -> None:
        self.link.sock.close()


def poll_status(socket_path: Path, stop: threading.Event, latencies: list[float]) -> None:
    with Client(socket_path) as client:
        while not stop.is_set():
            started = time.perf_counter()
            client.status()
            latencies.append(time.perf_counter() - started)
            time.sleep(STATUS_EVERY_S)


def held_by(client: Client, author: Identity) -> int:
    return len(client.query(author=author.node_id, limit=10_000)["records"])


def wait_quiet(client: Client, seconds: float = 1.0, timeout: float = 120.0) -> None:
    """Until the record count has not changed for ``seconds``."""
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        count = client.status()["records"]
        if count != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since >= seconds:
            return
        time.sleep(0.1)


def main() -> None:
    honest_author, honest_peer = Identity(os.urandom(32)), Identity(os.urandom(32))
    then = int(time.time() * 1000) - HELD_FOR_MS
    before = records_of(honest_author, "before", HONEST_BEFORE, "h" * 1000, then)
    during = records_of(honest_author, "during", HONEST_DURING, "h" * 1000, then + HELD_FOR_MS)
    log(f"signing {SYBILS:,} Sybil records ...")
    flood = sybil_records()
    with temp_dir() as tmp:
        home, socket_path, port = tmp / "node", tmp / "s.sock", free_port()
        held_since_long_ago(home, before, honest_peer)
        log_file = open(tmp / "daemon.log", "wb")  # noqa: SIM115 - closed below
        args = [str(home), str(socket_path), str(port), str(STORE_BYTES)]
        daemon = subprocess.Popen([sys.executable, "-c", LAUNCH, *args], stderr=log_file)
        try:
            while not try_ping(socket_path):
                if daemon.poll() is not None:
                    raise SystemExit(f"the daemon exited: {(tmp / 'daemon.log').read_text()}")
                time.sleep(0.05)
            target = Target("127.0.0.1", port, PUBLIC_NETWORK_KEY, timeout=30.0)
            results = flood_beside_honest(target, socket_path, honest_peer, during, flood)
            with Client(socket_path) as client:
                kept = held_by(client, honest_author)
            results["honest_kept_percent"] = round(100 * kept / (HONEST_BEFORE + HONEST_DURING), 2)
            results["daemon_log_lines"] = len((tmp / "daemon.log").read_text().splitlines())
        finally:
            daemon.terminate()
            daemon.wait(10)
            log_file.close()
    emit(results)


def flood_beside_honest(
    target: Target,
    socket_path: Path,
    honest_peer: Identity,
    during: list[Record],
    flood: list[Record],
) -> dict[str, float | int]:
    honest = Peer(target, honest_peer)
    latencies: list[float] = []
    stop = threading.Event()
    poller = threading.Thread(target=poll_status, args=(socket_path, stop, latencies))
    poller.start()
    sybil = Peer(target)
    started = time.perf_counter()
    step = len(flood) // HONEST_DURING
    for n in range(HONEST_DURING):
        sybil.push(flood[n * step : (n + 1) * step])
        honest.push(during[n : n + 1])
    sybil.push(flood[HONEST_DURING * step :])
    sent = time.perf_counter() - started
    with Client(socket_path) as client:
        wait_quiet(client)
    stop.set()
    poller.join()
    sybil.close()
    honest.close()
    ordered = sorted(latencies)
    log(f"flood of {len(flood):,} records sent in {sent:.1f} s; {len(ordered)} status calls")
    return {
        "flood_records": len(flood),
        "flood_seconds": round(sent, 2),
        "flood_records_per_s": round(len(flood) / sent),
        "status_calls": len(ordered),
        "status_median_ms": round(statistics.median(ordered) * 1000, 1),
        "status_p99_ms": round(ordered[int(len(ordered) * 0.99)] * 1000, 1),
        "status_max_ms": round(ordered[-1] * 1000, 1),
        "goal_status_ms": GOAL_STATUS_MS,
    }


if __name__ == "__main__":
    main()
