"""The conformance suite, run against a real meshnode daemon: every case must pass."""

from __future__ import annotations

import subprocess
import sys

import pytest

from meshnode.conformance.suite import CASES
from meshnode.core.netkey import encode_network_key
from tests.helpers import Daemon

pytestmark = pytest.mark.slow


def test_meshnode_passes_its_own_conformance_suite(daemon: Daemon) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "meshnode.conformance", daemon.peer_address],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines[-1] == f"{len(CASES) - 1} passed, 0 failed, 1 skipped"  # the idle case is slow
    assert len(lines) == len(CASES) + 1
    assert "Traceback" not in daemon.log()


def test_a_silent_peer_is_pinged_within_5_s_and_closed_after_10_s(daemon: Daemon) -> None:
    command = [sys.executable, "-m", "meshnode.conformance", daemon.peer_address]
    result = subprocess.run(
        [*command, "--slow", "-k", "goodbye 4"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "1 passed, 0 failed"


def _suite(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "meshnode.conformance", *args, "-k", "right network key"]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_a_failing_case_fails_the_run(daemon: Daemon) -> None:
    result = _suite(daemon.peer_address, "--network-key", "mesh1" + "q" * 52)  # a bad invite
    assert result.returncode == 2 and "network key" in result.stderr.lower()
    result = _suite(daemon.peer_address, "--network-key", encode_network_key(bytes(32)))
    assert result.returncode == 1  # not the daemon's key: the handshake case fails
    assert result.stdout.splitlines()[-1] == "0 passed, 1 failed"
