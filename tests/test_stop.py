"""Stopping: SIGTERM says goodbye to peers and ends within 5 s; a second signal ends it at once.

Real daemons on loopback. A peer hears the goodbye (it drops the session at once, not
after the 10 s idle timeout), and a stop cut short by a second signal leaves a store
that opens clean with every record that was answered.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from meshnode.client import ClientError
from tests.helpers import Daemon

pytestmark = pytest.mark.slow


def wait_until(condition, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_sigterm_says_goodbye_to_peers_and_stops_within_5_s(tmp_path: Path) -> None:
    a, b = Daemon(tmp_path / "a"), Daemon(tmp_path / "b")
    try:
        a.start()
        b.start("--peer", a.peer_address)
        wait_until(lambda: len(a.call("peers")) == 1)
        a.call("publish", key="profile/name", value="Ada")
        assert a.process is not None
        started = time.monotonic()
        a.process.send_signal(signal.SIGTERM)
        assert a.process.wait(timeout=5) == 0
        took = time.monotonic() - started
        assert took < 5.0, f"the stop took {took:.2f} s"
        # The goodbye, not the idle timeout, ended the session on the other side.
        wait_until(lambda: b.call("peers") == [], timeout=2.0)
        assert "event=stopped" in a.log()
        a.process = None
        a.start()  # and the store it closed opens again, record and all
        assert a.call("get", key="profile/name")["value"] == "Ada"
    finally:
        a.cleanup()
        b.cleanup()


def test_a_second_signal_ends_the_stop_at_once_and_loses_no_answered_record(
    tmp_path: Path,
) -> None:
    node = Daemon(tmp_path / "node")
    answered: list[str] = []
    stop = threading.Event()

    def publish_until_stopped() -> None:
        with node.client() as client:
            n = 0
            while not stop.is_set():
                try:
                    client.publish(f"k/{n}", "v" * 100)
                except ClientError:
                    return
                answered.append(f"k/{n}")
                n += 1

    try:
        node.start()
        writer = threading.Thread(target=publish_until_stopped)
        writer.start()
        wait_until(lambda: len(answered) > 50)
        assert node.process is not None
        node.process.send_signal(signal.SIGTERM)
        node.process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = node.process.wait(timeout=5)
        assert time.monotonic() - started < 2.0
        assert code in (0, 130)  # 130: cut short; 0: the first stop was done already
        stop.set()
        writer.join(timeout=10)
        db = sqlite3.connect(node.data_dir / "store.sqlite3")
        try:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        finally:
            db.close()
        node.process = None
        node.start()
        status = node.call("status")
        assert status["store_warnings"] == []
        assert status["own_records"] >= len(answered)
    finally:
        stop.set()
        node.cleanup()


def test_a_second_signal_while_the_stop_winds_down_exits_at_once(tmp_path: Path) -> None:
    """The stop is slowed by a hook that ignores SIGTERM (it gets SIGKILL 1 s later)."""
    pid_file = tmp_path / "hook.pid"
    hook = ["sh", "-c", f"echo $$ > {pid_file}; trap '' TERM; sleep 30"]
    config = tmp_path / "node.toml"
    config.write_text(f'[[hooks]]\nexec = {json.dumps(hook)}\ntimeout = "60s"\n')
    node = Daemon(tmp_path / "node")
    try:
        node.start("--config", str(config))
        node.call("publish", key="k", value="v")
        wait_until(pid_file.exists)
        assert node.process is not None
        node.process.send_signal(signal.SIGTERM)
        wait_until(lambda: "event=stopping" in node.log())
        time.sleep(0.2)
        node.process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert node.process.wait(timeout=5) == 130
        assert time.monotonic() - started < 1.0
        assert "event=stop_cut_short signal=SIGTERM" in node.log()
        hook_group = int(pid_file.read_text())
        wait_until(lambda: not _alive(hook_group), timeout=2.0)  # the hook went with it
    finally:
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)
        node.cleanup()


def _alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True
