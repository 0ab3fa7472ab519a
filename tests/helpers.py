"""Shared test helpers: deterministic identities and records, and real daemons."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meshnode.client import Client, DaemonNotRunning
from meshnode.core.identity import Identity
from meshnode.core.record import Record, sign_record
from meshnode.store import Store

T0 = 1_790_000_000_000  # a plausible "now" in ms (2026-09-21)
MakeStore = Callable[..., Store]  # the ``make_store`` fixture: limits in, a fresh store out


def identity(n: int) -> Identity:
    return Identity(hashlib.sha256(f"test identity {n}".encode()).digest())


STORE_OWNER = identity(0)  # whose node the ``make_store`` stores belong to


def record(
    author: Identity,
    key: str = "k",
    value: Any = "v",
    seq: int = 1,
    created_ms: int = T0,
    expires_ms: int | None = None,
) -> Record:
    return sign_record(
        author, seq=seq, key=key, value=value, created_ms=created_ms, expires_ms=expires_ms
    )


class Daemon:
    """A real ``meshnode run`` in a subprocess, with its own data dir and socket."""

    def __init__(
        self, data_dir: Path, socket_dir: Path | None = None, package: Path | None = None
    ) -> None:
        """``package``: a directory holding another ``meshnode`` package to run (an old release)."""
        self.data_dir = data_dir
        self.package = package
        self._own_socket_dir = socket_dir is None
        # Unix socket paths are limited to 107 bytes; pytest's tmp paths can be longer.
        self.socket_dir = socket_dir or Path(tempfile.mkdtemp(prefix="mn", dir="/tmp"))
        self.socket = self.socket_dir / "control.sock"
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}.log"

    @property
    def cli_args(self) -> list[str]:
        return ["--data-dir", str(self.data_dir), "--socket", str(self.socket)]

    def start(
        self,
        *extra: str,
        wait: bool = True,
        mdns: bool = False,
        env: dict[str, str] | None = None,
    ) -> Daemon:
        """``mdns``: announce and browse on the local link (tests do so only in namespaces).

        ``env``: variables to set for the daemon, on top of this process's.
        """
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed by the child's exit
        listen = () if "--listen" in extra else ("--listen", "127.0.0.1:0")
        quiet = () if mdns else ("--no-mdns",)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "meshnode", "run", *self.cli_args, *listen, *quiet, *extra],
            stdout=log,
            stderr=log,
            # ``-m`` puts the working directory first on the path: run another package from
            # its own directory, or this checkout's would be imported instead.
            env={
                **os.environ,
                **({} if self.package is None else {"PYTHONPATH": str(self.package)}),
                **(env or {}),
            },
            cwd=self.package,
        )
        log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"daemon exited early:\n{self.log()}")
            try:
                with self.client() as client:
                    client.call("ping")
                return
            except DaemonNotRunning:
                time.sleep(0.02)
        raise AssertionError(f"daemon not ready after {timeout} s:\n{self.log()}")

    def client(self) -> Client:
        return Client(self.socket, timeout=10)

    def call(self, method: str, **params: Any) -> Any:
        """One control call on a connection of its own, closed after."""
        with self.client() as client:
            return client.call(method, **params)

    @property
    def peer_address(self) -> str:
        """Where this daemon accepts peers (it listens on an ephemeral loopback port)."""
        with self.client() as client:
            return str(client.status()["listening"][0])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def cli(
        self, *args: str, input: str | None = None, timeout: float = 20
    ) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "meshnode", args[0], *self.cli_args, *args[1:]]
        return subprocess.run(
            command, capture_output=True, text=True, input=input, timeout=timeout, check=False
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        code = self.process.returncode
        self.process = None
        return code

    def cleanup(self) -> None:
        self.stop(signal.SIGKILL)
        if self._own_socket_dir:
            shutil.rmtree(self.socket_dir, ignore_errors=True)


def env_without_xdg() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "MESHNODE_"))}
