"""Shared helpers for the network benchmarks (``bench/net_*.py``).

Not a benchmark itself. Builds on ``_common`` (output convention, bench
authors, temporary directories, child environment) and adds what only the
network benchmarks need:

- signing many deterministic records on both cores (``signed_raws``), with the
  same bytes ``_common.foreign_records`` would sign;
- filling one or several data dirs offline from raw records, in parallel
  (``fill_many``);
- ``NetNode``: a ``meshnode run`` that accepts peers only on a loopback port of
  the OS's choosing and may dial other nodes (``--peer``), with a kept-open
  control client, and that is always stopped by ``node_group``;
- polling with a deadline (``wait_for``) and peer-table lookups.

All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import IO, Any, TypeVar

from _common import (
    CREATED_MS,
    INGEST_NOW_MS,
    author_identity,
    log,
    meshnode_executable,
    record_value,
)

from meshnode.client import Client, ClientError
from meshnode.core.record import sign_record
from meshnode.engine.node import Node
from meshnode.store.base import StoreLimits
from meshnode.store.sqlite import SQLiteStore
from meshnode.system import datadir

T = TypeVar("T")

BATCH = 1_000


# -- records ------------------------------------------------------------------


def _sign_authors(args: tuple[int, int, int, str]) -> list[bytes]:
    first, count, per_author, key_prefix = args
    raws: list[bytes] = []
    for a in range(first, first + count):
        identity = author_identity(a)
        for j in range(per_author):
            raws.append(
                sign_record(
                    identity,
                    seq=j + 1,
                    key=f"{key_prefix}{j:05d}",
                    value=record_value(a, j),
                    created_ms=CREATED_MS,
                ).raw
            )
    return raws


def signed_raws(
    authors: int,
    per_author: int,
    *,
    first_author: int = 0,
    key_prefix: str = "bench/item/",
    workers: int | None = None,
) -> list[bytes]:
    """Raw signed records, author by author, signed on every core.

    With the defaults these are byte for byte ``_common.foreign_records``.
    """
    workers = workers or min(os.cpu_count() or 1, 4)
    started = time.perf_counter()
    step = max(1, -(-authors // workers))
    jobs = [
        (first_author + start, min(step, authors - start), per_author, key_prefix)
        for start in range(0, authors, step)
    ]
    if workers == 1 or len(jobs) == 1:
        parts = [_sign_authors(job) for job in jobs]
    else:
        with ProcessPoolExecutor(workers) as pool:
            parts = list(pool.map(_sign_authors, jobs))
    raws = [raw for part in parts for raw in part]
    log(
        f"signed {len(raws):,} records from {authors} authors in"
        f" {time.perf_counter() - started:.1f} s ({workers} processes)"
    )
    return raws


def fill_from_raws(home: Path, raws: Sequence[bytes]) -> int:
    """Store ``raws`` in the data dir at ``home`` offline (creating it if needed).

    Goes through ``Node.ingest`` (so every record is verified) with the dir's own
    identity as the store's owner. Returns the live record count afterwards.
    """
    datadir.prepare(home)
    identity, _ = datadir.load_or_create_identity(home, os.urandom(32))
    store = SQLiteStore(home / datadir.STORE_FILE, identity.public_key, StoreLimits())
    try:
        node = Node(identity, store)
        for start in range(0, len(raws), BATCH):
            report = node.ingest(raws[start : start + BATCH], now_ms=INGEST_NOW_MS)
            if report.rejected:
                raise RuntimeError(f"record rejected: {report.rejected[0]}")
        return store.stats(INGEST_NOW_MS).records
    finally:
        store.close()


def _fill_job(args: tuple[str, Sequence[bytes]]) -> int:
    return fill_from_raws(Path(args[0]), args[1])


def fill_many(jobs: Sequence[tuple[Path, Sequence[bytes]]]) -> list[int]:
    """``fill_from_raws`` for several data dirs at once, one process each."""
    started = time.perf_counter()
    if len(jobs) == 1:
        counts = [fill_from_raws(*jobs[0])]
    else:
        with ProcessPoolExecutor(min(len(jobs), os.cpu_count() or 1)) as pool:
            counts = list(pool.map(_fill_job, [(str(h), r) for h, r in jobs]))
    log(
        f"filled {len(jobs)} data dir(s) offline in {time.perf_counter() - started:.1f} s:"
        f" {', '.join(f'{c:,}' for c in counts)} records"
    )
    return counts


# -- daemons ------------------------------------------------------------------


class NetNode:
    """A ``meshnode run`` listening for peers on 127.0.0.1 (ephemeral port)."""

    def __init__(self, name: str, tmp: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.home = tmp / name
        self.socket_path = tmp / f"{name}.sock"
        self.log_path = tmp / f"{name}.log"
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.address = ""
        self.spawned_at = 0.0  # time.time() when spawned
        self._log_file: IO[bytes] | None = None
        self._client: Client | None = None

    def start(self, peers: Sequence[str] = (), wait: bool = True) -> NetNode:
        if self.process is not None:
            raise RuntimeError(f"{self.name} is already running")
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        command = [
            meshnode_executable(),
            "run",
            "--no-mdns",
            "--data-dir",
            str(self.home),
            "--socket",
            str(self.socket_path),
            "--log-level",
            "warning",
            "--listen",
            "127.0.0.1:0",
        ]
        for peer in peers:
            command += ["--peer", peer]
        self.spawned_at = time.time()
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=self._log_file,
            env=self.env,
        )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log_text()}")
            try:
                listening = self.status()["listening"]
            except ClientError:
                self._drop_client()
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{self.name} not ready after {timeout_s} s:\n{self.log_text()}"
                    ) from None
                time.sleep(0.01)
                continue
            self.address = str(listening[0])
            return

    @property
    def rpc(self) -> Client:
        """A control connection kept open for polling (one thread only)."""
        if self._client is None:
            self._client = Client(self.socket_path, timeout=30.0)
        return self._client

    def client(self) -> Client:
        """A new control connection of its own (for another thread)."""
        return Client(self.socket_path, timeout=30.0)

    def status(self) -> dict[str, Any]:
        return self.rpc.status()

    def records(self) -> int:
        return int(self.status()["records"])

    def peers(self) -> list[dict[str, Any]]:
        return list(self.rpc.call("peers"))

    def node_id(self) -> str:
        return str(self.rpc.node_id()["node_id"])

    def _drop_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def log_text(self) -> str:
        if self._log_file is not None and not self._log_file.closed:
            self._log_file.flush()
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM, then kill if it does not exit in time; return the exit code."""
        self._drop_client()
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log(f"{self.name} (pid {process.pid}) ignored SIGTERM; killing it")
                process.kill()
                process.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        code = process.returncode
        if code not in (0, -signal.SIGTERM):
            log(f"{self.name} exited with {code}; log:\n{self.log_text()[-2000:]}")
        return code


@contextlib.contextmanager
def node_group(nodes: Sequence[NetNode]) -> Iterator[Sequence[NetNode]]:
    """Every node in ``nodes`` is stopped on exit, last started first."""
    try:
        yield nodes
    finally:
        for node in reversed(nodes):
            try:
                node.stop()
            except Exception as exc:  # keep stopping the others
                log(f"stopping {node.name} failed: {exc}")


# -- waiting ------------------------------------------------------------------


def wait_for(
    check: Callable[[], T | None],
    what: str,
    timeout_s: float = 60.0,
    interval_s: float = 0.02,
) -> T:
    """Call ``check`` until it returns something other than None (or False)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


def peer_entry(node: NetNode, remote_id: str) -> dict[str, Any] | None:
    """``node``'s open session with the node ``remote_id``, if there is one."""
    for peer in node.peers():
        if peer["node_id"] == remote_id and peer["state"] == "open":
            return peer
    return None


def reconcile_settled(
    dialer: NetNode, dialer_entry: dict[str, Any], listener: NetNode, dialer_id: str
) -> bool:
    """The dialer's round(s) ended: an even message count, the same on both sides."""
    messages = dialer_entry["reconcile_messages"]
    if dialer_entry["reconcile_rounds"] < 1 or messages < 2 or messages % 2:
        return False
    other = peer_entry(listener, dialer_id)
    return other is not None and other["reconcile_messages"] == messages


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a process has used so far (Linux ``/proc``), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pid_of(node: NetNode) -> int:
    if node.process is None:
        raise RuntimeError(f"{node.name} is not running")
    return node.process.pid


def records_in(node: NetNode, remote_id: str) -> int:
    """Records ``node`` has received (and handled) in its open session with ``remote_id``.

    Polling this (``peers``) instead of ``status`` keeps the benchmark off the
    node's SQLite: ``status`` counts the records table, which on 100,000 records
    holds the store thread for milliseconds. A record counted here has been
    verified and stored (or found a duplicate) in the same store-thread call.
    """
    entry = peer_entry(node, remote_id)
    return 0 if entry is None else int(entry["records_in"])
