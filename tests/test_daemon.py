"""The daemon as a process: first start, files and modes, locking, shutdown, crashes."""

from __future__ import annotations

import os
import signal
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from meshnode.client import ClientError
from tests.helpers import Daemon

pytestmark = pytest.mark.slow

MakeDaemon = Callable[..., Daemon]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_start_creates_a_private_identity_store_and_socket(daemon: Daemon) -> None:
    assert mode(daemon.data_dir) == 0o700
    assert mode(daemon.data_dir / "identity.key") == 0o600
    assert mode(daemon.socket) == 0o600
    assert stat.S_ISSOCK(daemon.socket.stat().st_mode)
    assert mode(daemon.data_dir / "store.sqlite3") == 0o600
    assert "event=identity_created" in daemon.log()


def test_the_identity_survives_a_restart(daemon: Daemon) -> None:
    with daemon.client() as client:
        first = client.node_id()["node_id"]
    daemon.stop()
    daemon.start()
    with daemon.client() as client:
        assert client.node_id()["node_id"] == first


def test_a_key_file_readable_by_others_is_refused_with_the_fix(daemon: Daemon) -> None:
    daemon.stop()
    key = daemon.data_dir / "identity.key"
    os.chmod(key, 0o644)
    daemon.start(wait=False)
    assert daemon.process is not None
    assert daemon.process.wait(10) != 0
    assert f"chmod 600 {key}" in daemon.log()
    assert "Traceback" not in daemon.log()


def test_a_second_daemon_on_the_same_data_dir_names_the_first(
    daemon: Daemon, daemon_factory: MakeDaemon
) -> None:
    second = Daemon(daemon.data_dir, daemon.socket_dir)
    second.log_path = daemon.data_dir.parent / "second.log"
    second.start(wait=False)
    assert second.process is not None
    assert second.process.wait(10) != 0
    assert daemon.process is not None
    assert f"pid {daemon.process.pid}" in second.log()
    with daemon.client() as client:
        assert client.call("ping") == "pong"


def test_two_daemons_with_their_own_data_dirs_run_side_by_side(
    daemon_factory: MakeDaemon,
) -> None:
    a, b = daemon_factory("a").start(), daemon_factory("b").start()
    with a.client() as ca, b.client() as cb:
        assert ca.node_id() != cb.node_id()


def test_a_damaged_store_is_a_clear_error_not_a_traceback(daemon: Daemon) -> None:
    daemon.stop()
    for suffix in ("", "-wal", "-shm"):
        path = daemon.data_dir / f"store.sqlite3{suffix}"
        if path.exists():
            path.unlink()
    (daemon.data_dir / "store.sqlite3").write_bytes(b"garbage" * 1000)
    daemon.start(wait=False)
    assert daemon.process is not None
    assert daemon.process.wait(10) != 0
    assert "unreadable" in daemon.log() and "move it aside" in daemon.log()
    assert "Traceback" not in daemon.log()


def test_an_empty_store_file_is_said_loudly_and_the_daemon_carries_on(daemon: Daemon) -> None:
    daemon.stop()
    (daemon.data_dir / "store.sqlite3-shm").unlink(missing_ok=True)
    (daemon.data_dir / "store.sqlite3-wal").write_bytes(b"\0" * 4096)  # the log SQLite would drop
    (daemon.data_dir / "store.sqlite3").write_bytes(b"")
    daemon.start()
    with daemon.client() as client:
        [warning] = client.status()["store_warnings"]
    assert "was empty (0 bytes)" in warning
    assert f"ERROR meshnode: {warning}" in daemon.log()
    assert list(daemon.data_dir.glob("store.sqlite3.damaged-*"))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_daemon_cleanly_within_two_seconds(daemon: Daemon, sig: int) -> None:
    watcher = daemon.client()
    watch = watcher.watch()
    started = time.monotonic()
    assert daemon.stop(sig) == 0
    assert time.monotonic() - started < 2.0
    assert not daemon.socket.exists()
    assert "Traceback" not in daemon.log()
    with pytest.raises(ClientError):
        next(watch)
    watcher.close()


def test_seqs_are_never_reused_after_kill_9_mid_publish(daemon: Daemon) -> None:
    seen: list[int] = []
    stop = threading.Event()

    def publish_until_killed() -> None:
        with daemon.client() as client:
            n = 0
            while not stop.is_set():
                try:
                    seen.append(client.publish(f"crash/{n % 50}", n)["seq"])
                except ClientError:
                    return
                n += 1

    writers = [threading.Thread(target=publish_until_killed) for _ in range(3)]
    for writer in writers:
        writer.start()
    time.sleep(1.0)
    daemon.stop(signal.SIGKILL)
    stop.set()
    for writer in writers:
        writer.join(10)
    assert len(seen) > 50
    daemon.start()
    with daemon.client() as client:
        after = [client.publish(f"crash/{n}", "after")["seq"] for n in range(20)]
        stored = client.query(prefix="crash/", limit=10_000)["records"]
    assert len(set(seen)) == len(seen)
    assert min(after) > max(seen)
    # Every publish that was answered is durable: the latest seq per key is there or newer.
    highest = {r["key"]: r["seq"] for r in stored}
    assert all(seq <= max(highest.values()) for seq in seen)
