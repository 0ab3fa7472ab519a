"""Telling systemd how the daemon is doing: the sd_notify protocol, written in-tree.

The protocol is one datagram of ``NAME=value`` lines to the Unix socket named by
``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace); systemd sets it
for a ``Type=notify`` unit and nothing else does, so without it every call here does
nothing. libsystemd is not needed for a protocol this small, and a Pi image without
its Python binding still gets readiness, status lines and the watchdog.

A failed send is logged once and never raised: systemd going away must not take the
node down with it.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping, MutableMapping

log = logging.getLogger(__name__)

MAX_STATUS_CHARS = 200  # systemctl status shows one line; a longer one only wraps


class Notifier:
    """The daemon's line to its service manager; a no-op when it has none."""

    def __init__(self, env: Mapping[str, str], pid: int) -> None:
        """``pid`` is this process's: the watchdog is ours only if ``$WATCHDOG_PID`` agrees."""
        self.address = _address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_interval = _watchdog_interval(env, pid)
        self._sock: socket.socket | None = None
        self._failed = False

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str] | None = None) -> Notifier:
        """Read the variables, then remove them, so that hooks and other children never
        inherit a socket that speaks for this daemon (what ``sd_notify(1, ...)`` does)."""
        env = os.environ if environ is None else environ
        notifier = cls(env, os.getpid())
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            env.pop(name, None)
        return notifier

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def ready(self, status: str) -> None:
        self.send(READY="1", STATUS=status)

    def status(self, status: str) -> None:
        self.send(STATUS=status)

    def reloading(self) -> None:
        # systemd 253+ wants the monotonic time with RELOADING=1, to tell this reload
        # from an earlier one; older ones ignore it.
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send(RELOADING="1", MONOTONIC_USEC=str(now_usec))

    def stopping(self, status: str = "stopping") -> None:
        self.send(STOPPING="1", STATUS=status)

    def watchdog(self) -> None:
        self.send(WATCHDOG="1")

    def send(self, **fields: str) -> None:
        """Send one datagram of ``NAME=value`` lines; newlines in a value are flattened."""
        if self.address is None:
            return
        lines = []
        for name, value in fields.items():
            flat = " ".join(value.split("\n"))
            if name == "STATUS":
                flat = flat[:MAX_STATUS_CHARS]
            lines.append(f"{name}={flat}")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as exc:
            if not self._failed:
                log.warning("cannot notify the service manager at %s: %s", self._shown(), exc)
                self._failed = True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _shown(self) -> str:
        address = self.address
        if isinstance(address, bytes):
            return "@" + address[1:].decode(errors="replace")
        return str(address)


def _address(value: str) -> str | bytes | None:
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()  # the abstract namespace: a leading NUL byte
    return None  # unset, or a vsock address (systemd in a VM): not ours to speak


def _watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """How often to send ``WATCHDOG=1``: half the timeout, as sd_watchdog_enabled advises."""
    owner = env.get("WATCHDOG_PID")
    if owner is not None and owner != str(pid):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None
