"""Shared helpers for the benchmarks in ``bench/``.

Not a benchmark itself. Provides:

- deterministic foreign records (fixed author seeds, fixed times), pre-signed;
- a data dir filled offline through ``Node.ingest`` into ``store.sqlite3``;
- a ``meshnode run`` daemon in a context manager that waits until its control
  socket answers ``ping`` and always stops the process (SIGTERM, then kill);
- short temporary directories (Unix socket paths are limited to 107 bytes),
  removed afterwards;
- an environment for child processes that caches bytecode in the temporary
  directory (``child_env``), so that a checkout behaves like an installed
  package even where ``PYTHONDONTWRITEBYTECODE`` is set, without writing
  ``__pycache__`` into the source tree;
- the output convention: progress on stderr, the figures last on stdout as one
  JSON object on one line.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from meshnode.client import Client, ClientError
from meshnode.core.identity import Identity
from meshnode.core.record import CLOCK_FLOOR_MS, Record, sign_record
from meshnode.engine.node import Node
from meshnode.store.base import StoreLimits
from meshnode.store.sqlite import SQLiteStore
from meshnode.system import datadir

# Fixed times so every run signs the same bytes: records are created at the
# clock floor (2026-01-01) and never expire, so a daemon started later with the
# real clock still serves all of them.
CREATED_MS = CLOCK_FLOOR_MS
INGEST_NOW_MS = CLOCK_FLOOR_MS + 3_600_000

DEFAULT_AUTHORS = 100
DEFAULT_PER_AUTHOR = 1_000
DEFAULT_BATCH = 1_000


def log(message: str) -> None:
    """Progress for people, on stderr so that stdout ends with the JSON line."""
    print(message, file=sys.stderr, flush=True)


def emit(results: dict[str, Any]) -> None:
    """Print the figures as one JSON object on one line: the last thing on stdout."""
    sys.stdout.flush()
    print(json.dumps(results, sort_keys=True), flush=True)


def median_ms(seconds: Sequence[float]) -> float:
    return round(statistics.median(seconds) * 1000, 2)


# -- records ------------------------------------------------------------------


def author_identity(index: int) -> Identity:
    """The bench author number ``index``, always the same key."""
    return Identity(hashlib.sha256(f"meshnode-bench/author/{index}".encode()).digest())


def record_key(index: int) -> str:
    return f"bench/item/{index:05d}"


def record_value(author: int, index: int) -> str:
    return f"value {author}.{index}"


def foreign_records(
    authors: int = DEFAULT_AUTHORS, per_author: int = DEFAULT_PER_AUTHOR
) -> tuple[list[Identity], list[Record]]:
    """``authors * per_author`` signed records: distinct keys per author, small values.

    Deterministic (fixed seeds, seqs and times), ordered author by author.
    """
    identities = [author_identity(a) for a in range(authors)]
    records = [
        sign_record(
            identity,
            seq=j + 1,
            key=record_key(j),
            value=record_value(a, j),
            created_ms=CREATED_MS,
        )
        for a, identity in enumerate(identities)
        for j in range(per_author)
    ]
    return identities, records


def timed_foreign_records(
    authors: int = DEFAULT_AUTHORS, per_author: int = DEFAULT_PER_AUTHOR
) -> tuple[list[Identity], list[Record]]:
    """``foreign_records`` with a progress line saying how long signing took."""
    log(f"signing {authors * per_author:,} records from {authors} authors ...")
    started = time.perf_counter()
    identities, records = foreign_records(authors, per_author)
    log(f"  signed in {time.perf_counter() - started:.1f} s")
    return identities, records


def batches(items: Sequence[bytes], size: int) -> Iterator[Sequence[bytes]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def ingest_all(
    node: Node, raws: Sequence[bytes], batch: int = DEFAULT_BATCH, now_ms: int = INGEST_NOW_MS
) -> int:
    """Feed ``raws`` to ``node.ingest`` in batches; return how many were stored."""
    stored = 0
    for chunk in batches(raws, batch):
        report = node.ingest(chunk, now_ms=now_ms)
        if report.rejected:
            raise RuntimeError(f"{len(report.rejected)} records rejected: {report.rejected[0]}")
        stored += len(report.result.stored)
    return stored


# -- data dirs ----------------------------------------------------------------


@contextlib.contextmanager
def temp_dir(prefix: str = "mnb-") -> Iterator[Path]:
    """A fresh directory with a short path (for sockets), removed afterwards."""
    base = tempfile.gettempdir()
    if len(base) > 40 and os.path.isdir("/tmp"):
        base = "/tmp"
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def fill_data_dir(
    home: Path, records: Sequence[Record], batch: int = DEFAULT_BATCH
) -> tuple[Identity, int]:
    """Create a node's data dir offline: a new identity, and ``records`` in its store.

    Returns the node's identity and the number of live records in the store.
    """
    datadir.prepare(home)
    identity, _ = datadir.load_or_create_identity(home, os.urandom(32))
    store = SQLiteStore(home / datadir.STORE_FILE, identity.public_key, StoreLimits())
    try:
        ingest_all(Node(identity, store), [r.raw for r in records], batch)
        count = store.stats(INGEST_NOW_MS).records
    finally:
        store.close()
    return identity, count


def filled_data_dir(home: Path) -> tuple[Identity, list[Identity], list[Record], int]:
    """Sign the default 100,000 records and store them in a new data dir at ``home``.

    Returns the node's identity, the authors, the records and the stored count.
    """
    authors, records = timed_foreign_records()
    log(f"filling the data dir {home} ...")
    started = time.perf_counter()
    identity, count = fill_data_dir(home, records)
    size = (home / datadir.STORE_FILE).stat().st_size
    log(
        f"  {count:,} records stored in {time.perf_counter() - started:.1f} s,"
        f" {size / 1e6:.1f} MB on disk"
    )
    if count != len(records):
        raise RuntimeError(f"stored {count} records, expected {len(records)}")
    return identity, authors, records, count


# -- child processes ------------------------------------------------------------


def child_env(tmp: Path) -> dict[str, str]:
    """``os.environ`` with bytecode caching on, under ``tmp/pycache``.

    pip compiles an installed package's bytecode; an editable checkout run with
    ``PYTHONDONTWRITEBYTECODE=1`` would instead recompile meshnode's modules on
    every start. With this environment the first (warm-up) run fills the cache
    and later runs load from it, as on a user's machine.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    return env


# -- the daemon ---------------------------------------------------------------


def meshnode_executable() -> str:
    """The ``meshnode`` console script of the running interpreter's environment."""
    beside = Path(sys.executable).parent / "meshnode"
    if beside.exists():
        return str(beside)
    found = shutil.which("meshnode")
    if found is None:
        raise RuntimeError("the meshnode command is not installed; run: pip install -e .")
    return found


@functools.cache
def run_options() -> tuple[str, ...]:
    """Extra ``meshnode run`` options: peers only on a loopback port of the OS's choosing.

    Versions with a peer listener default to port 7744 on every interface,
    which a second daemon (or a test run) on the machine could hold; versions
    without one have no ``--listen`` option, so it is passed only if offered.
    """
    done = subprocess.run(
        [meshnode_executable(), "run", "--help"], capture_output=True, text=True, check=False
    )
    return ("--listen", "127.0.0.1:0") if "--listen" in done.stdout else ()


def try_ping(socket_path: Path) -> bool:
    """True if a daemon accepts a connection at ``socket_path`` and answers ping."""
    try:
        with Client(socket_path, timeout=5.0) as client:
            return bool(client.call("ping") == "pong")
    except ClientError:
        return False


class Daemon:
    """A running ``meshnode run`` process; use ``start_daemon`` to get one."""

    def __init__(
        self, process: subprocess.Popen[bytes], socket_path: Path, log_file: IO[bytes]
    ) -> None:
        self.process = process
        self.socket_path = socket_path
        self._log_file = log_file

    @property
    def pid(self) -> int:
        return self.process.pid

    def client(self) -> Client:
        return Client(self.socket_path)

    def wait_ready(self, timeout_s: float = 30.0, poll_s: float = 0.002) -> float:
        """Wait until the socket answers ping; return seconds waited."""
        started = time.perf_counter()
        deadline = started + timeout_s
        while True:
            if try_ping(self.socket_path):
                return time.perf_counter() - started
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"meshnode run exited with {self.process.returncode}:\n{self.log_text()}"
                )
            if time.perf_counter() > deadline:
                raise RuntimeError(
                    f"meshnode run not ready after {timeout_s} s:\n{self.log_text()}"
                )
            time.sleep(poll_s)

    def log_text(self) -> str:
        if not self._log_file.closed:
            self._log_file.flush()
        return Path(self._log_file.name).read_text(errors="replace")

    def stop(self, timeout_s: float = 10.0) -> int:
        """SIGTERM, then kill if it does not exit in time; return the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log(f"daemon {self.pid} ignored SIGTERM for {timeout_s} s; killing it")
                self.process.kill()
                self.process.wait()
        self._log_file.close()
        return self.process.returncode


def spawn_daemon(
    home: Path, socket_path: Path, log_path: Path, env: dict[str, str] | None = None
) -> Daemon:
    """Start ``meshnode run`` without waiting; the caller must ``stop`` it."""
    log_file = open(log_path, "ab")  # noqa: SIM115 - closed with the directory
    process = subprocess.Popen(
        [
            meshnode_executable(),
            "run",
            "--no-mdns",
            "--data-dir",
            str(home),
            "--socket",
            str(socket_path),
            "--log-level",
            "warning",
            *run_options(),
        ],
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=log_file,
        env=env,
    )
    return Daemon(process, socket_path, log_file)


@contextlib.contextmanager
def running_daemon(
    home: Path, socket_path: Path, env: dict[str, str] | None = None
) -> Iterator[Daemon]:
    """A daemon on ``home``, ready (answering ping) on entry, stopped on exit."""
    daemon = spawn_daemon(home, socket_path, socket_path.parent / "daemon.log", env)
    try:
        waited = daemon.wait_ready()
        log(f"daemon {daemon.pid} ready after {waited:.2f} s")
        yield daemon
    finally:
        code = daemon.stop()
        if code not in (0, -signal.SIGTERM):
            log(f"daemon {daemon.pid} exited with {code}")


def warm_bytecode_cache(tmp: Path, env: dict[str, str]) -> None:
    """Start and stop a daemon on a throwaway data dir to fill ``env``'s bytecode cache."""
    warm = tmp / "warm"
    warm.mkdir()
    with running_daemon(warm / "node", warm / "s.sock", env) as daemon, daemon.client() as client:
        client.status()
    shutil.rmtree(warm, ignore_errors=True)
