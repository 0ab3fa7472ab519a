"""sd_notify: what the daemon tells systemd, heard on a fake ``$NOTIFY_SOCKET``."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshnode.system.notify import Notifier
from tests.helpers import Daemon


class FakeSystemd:
    """The service manager's end of the notify socket: datagrams in, as field maps."""

    def __init__(self, path: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.05)
        self.heard: list[dict[str, str]] = []

    def receive(self) -> list[dict[str, str]]:
        while True:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                return self.heard
            self.heard.append(dict(line.split("=", 1) for line in data.decode().split("\n")))

    def wait_for(
        self, name: str, value: str | None = None, *, after: int = 0, timeout: float = 15.0
    ) -> dict[str, str]:
        """The first message from the ``after``-th on that sets ``name`` (to ``value``)."""
        deadline = time.monotonic() + timeout
        seen = after
        while time.monotonic() < deadline:
            heard = self.receive()
            for message in heard[seen:]:
                if name in message and (value is None or message[name] == value):
                    return message
            seen = len(heard)
        raise AssertionError(f"systemd never heard {name}={value}; heard {self.heard}")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[FakeSystemd]:
    fake = FakeSystemd(str(tmp_path / "notify"))
    yield fake
    fake.close()


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = Notifier({}, os.getpid())
    assert not notifier.enabled
    notifier.ready("fine")  # does nothing, raises nothing
    assert notifier.watchdog_interval is None


def test_ready_and_status_are_one_datagram_of_lines(systemd: FakeSystemd, tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify")}, os.getpid())
    notifier.ready("2 peers,\n10 records")
    notifier.stopping()
    notifier.close()
    assert systemd.receive() == [
        {"READY": "1", "STATUS": "2 peers, 10 records"},
        {"STOPPING": "1", "STATUS": "stopping"},
    ]


def test_an_abstract_socket_is_named_with_an_at_sign() -> None:
    name = f"meshnode-test-{os.getpid()}"
    fake = FakeSystemd(b"\0" + name.encode())
    try:
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name}, os.getpid())
        notifier.watchdog()
        notifier.close()
        assert fake.receive() == [{"WATCHDOG": "1"}]
    finally:
        fake.close()


def test_reloading_carries_the_monotonic_time(systemd: FakeSystemd, tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify")}, os.getpid())
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    notifier.close()
    [message] = systemd.receive()
    assert message["RELOADING"] == "1"
    assert int(message["MONOTONIC_USEC"]) >= before


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # another process's
        ({"WATCHDOG_USEC": "nonsense"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
    ],
)
def test_the_watchdog_is_pinged_at_half_its_timeout(
    env: dict[str, str], interval: float | None
) -> None:
    assert Notifier(env, pid=1234).watchdog_interval == interval


def test_the_variables_are_not_left_for_children(tmp_path: Path) -> None:
    environ = {"NOTIFY_SOCKET": str(tmp_path / "n"), "WATCHDOG_USEC": "1", "PATH": "/bin"}
    Notifier.from_environ(environ)
    assert environ == {"PATH": "/bin"}


def test_a_gone_service_manager_is_logged_once_and_never_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody")}, os.getpid())
    notifier.ready("x")
    notifier.status("y")
    notifier.close()
    assert len([r for r in caplog.records if "cannot notify" in r.message]) == 1


@pytest.mark.slow
def test_a_daemon_tells_systemd_ready_status_reloading_watchdog_stopping(
    tmp_path: Path, systemd: FakeSystemd
) -> None:
    daemon = Daemon(tmp_path / "node")
    notify = str(tmp_path / "notify")
    env = {"NOTIFY_SOCKET": notify, "WATCHDOG_USEC": "400000"}  # a ping every 0.2 s
    try:
        daemon.start(env=env, wait=False)
        ready = systemd.wait_for("READY", "1")
        # READY=1 only once the control socket accepts: a client can ask at once.
        assert daemon.call("ping") == "pong"
        assert ready["STATUS"] == "ready"
        systemd.wait_for("STATUS", "0 peers, 0 records")
        systemd.wait_for("WATCHDOG", "1")
        assert daemon.process is not None
        before = len(systemd.receive())
        daemon.process.send_signal(signal.SIGHUP)
        systemd.wait_for("RELOADING", "1", after=before)
        reloading = next(i for i, m in enumerate(systemd.heard) if "RELOADING" in m)
        systemd.wait_for("READY", "1", after=reloading + 1)
        daemon.process.send_signal(signal.SIGTERM)
        systemd.wait_for("STOPPING", "1", after=reloading + 1)
        assert daemon.process.wait(timeout=10) == 0
    finally:
        daemon.cleanup()
