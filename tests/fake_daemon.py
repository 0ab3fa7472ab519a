"""A scripted fake daemon for the client's and the CLI's failure tests.

A control socket served by a thread, one handler per connection in turn: it
plays what a real daemon does only by chance (an idle connection closed between
calls, a refusal while the client still sends, a connection lost midway).
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from meshnode.core.rpc import (
    Request,
    RpcDecoder,
    encode_notification,
    encode_response,
    error_map,
)

Handler = Callable[[socket.socket], None]


class FakeDaemon:
    """A control socket served by a thread: one scripted handler per connection, in turn."""

    def __init__(self, handlers: list[Handler]) -> None:
        # Unix socket paths are limited to 107 bytes; pytest's tmp paths can be longer.
        self._directory = Path(tempfile.mkdtemp(prefix="mnc", dir="/tmp"))
        self.socket = self._directory / "fake.sock"
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(self.socket))
        self._listener.listen(8)
        self._listener.settimeout(10)
        self._handlers = handlers
        self._thread = threading.Thread(target=self._serve)

    def __enter__(self) -> FakeDaemon:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(10)
        self._listener.close()
        shutil.rmtree(self._directory, ignore_errors=True)
        assert not self._thread.is_alive(), "the fake daemon did not finish its script"

    def _serve(self) -> None:
        for handler in self._handlers:
            conn, _ = self._listener.accept()
            with conn:
                conn.settimeout(10)
                handler(conn)


def read_requests(conn: socket.socket, count: int) -> list[Request]:
    decoder = RpcDecoder(1 << 24)
    requests: list[Request] = []
    while len(requests) < count:
        data = conn.recv(65536)
        if not data:
            break
        requests += [m for m in decoder.feed(data) if isinstance(m, Request)]
    return requests


def each_request(conn: socket.socket) -> Iterator[Request]:
    """The requests on ``conn`` as they come, until the client closes it."""
    decoder = RpcDecoder(1 << 24)
    while data := conn.recv(65536):
        yield from (m for m in decoder.feed(data) if isinstance(m, Request))


def answer(conn: socket.socket, request: Request, result: Any) -> None:
    conn.sendall(encode_response(request.msgid, None, result))


def notice(code: str, message: str) -> bytes:
    return encode_notification("error", [error_map(code, message)])


def answer_pings(count: int) -> Handler:
    def handler(conn: socket.socket) -> None:
        for request in read_requests(conn, count):
            answer(conn, request, "pong")

    return handler


def refuse_as_busy(conn: socket.socket) -> None:
    """What the daemon does with no room: say so, close, read nothing."""
    conn.sendall(notice("busy", "the daemon has too many control clients (65), all busy"))
