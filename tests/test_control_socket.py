"""Who may connect to the control socket: its user; the service's group only where systemd says."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from meshnode.runtime.control import bind


async def mode_of_socket_in(directory: Path) -> int:
    listener = await bind(directory / "control.sock")
    try:
        return stat.S_IMODE((directory / "control.sock").stat().st_mode)
    finally:
        await listener.aclose()


async def test_a_socket_is_private_to_its_user_even_in_an_open_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    tmp_path.chmod(0o755)
    assert await mode_of_socket_in(tmp_path) == 0o600


async def test_the_service_runtime_directory_lets_its_group_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    run.mkdir(mode=0o750)
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(run))
    assert await mode_of_socket_in(run) == 0o660
    run.chmod(0o700)  # a directory the group cannot enter: no reason to open the socket
    assert await mode_of_socket_in(run) == 0o600
