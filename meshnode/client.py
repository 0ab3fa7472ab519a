"""A blocking client for a node's control socket, for the CLI and for scripts.

    from meshnode.client import Client

    with Client.for_data_dir() as node:
        node.publish("profile/name", "Ada")
        print(node.get("profile/name")["value"])

Imports neither trio nor zeroconf nor a crypto backend, so it starts fast.
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType

from meshnode import paths
from meshnode.core.rpc import (
    Notification,
    Response,
    RpcProtocolError,
    TrustingRpcDecoder,
    encode_request,
)

# ``typing`` is for the type checker only: importing it costs the CLI ~5 ms of start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MAX_RESPONSE_BYTES = 512 * 1024 * 1024


class ClientError(Exception):
    """The base of every error this client raises."""


class DaemonNotRunning(ClientError):
    """Nothing listens on the control socket."""

    def __init__(self, socket_path: Path) -> None:
        super().__init__(
            f"no meshnode daemon is running at {socket_path}; start one with: meshnode run"
        )
        self.socket_path = socket_path


class ConnectionLost(ClientError):
    """The daemon closed the connection or sent something unreadable."""


class RemoteError(ClientError):
    """The daemon answered with an error; ``code`` is stable, ``message`` is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Client:
    def __init__(self, socket_path: str | os.PathLike[str], timeout: float | None = 30.0) -> None:
        self.socket_path = Path(socket_path)
        self._timeout = timeout
        self._sock: socket.socket | None = None
        self._decoder = TrustingRpcDecoder(MAX_RESPONSE_BYTES)
        self._msgids = itertools.count(1)
        self._received: deque[Response | Notification] = deque()  # read, not yet handled
        self._notifications: deque[Notification] = deque()  # arrived during a call

    @classmethod
    def for_data_dir(
        cls,
        data_dir: str | os.PathLike[str] | None = None,
        socket_path: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Client:
        """A client for the node living in ``data_dir``, found as the daemon finds it."""
        env = os.environ if env is None else env
        home = paths.data_dir(data_dir, env)
        return cls(paths.socket_path(home, socket_path, env))

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _connect(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self._timeout)
            try:
                sock.connect(os.fspath(self.socket_path))
            except OSError as exc:
                sock.close()
                if exc.errno in (errno.ENOENT, errno.ECONNREFUSED):
                    raise DaemonNotRunning(self.socket_path) from None
                raise ClientError(f"cannot connect to {self.socket_path}: {exc}") from None
            self._sock = sock
        return self._sock

    def _read_message(self) -> Response | Notification:
        sock = self._connect()
        while True:
            if self._received:
                return self._received.popleft()
            try:
                data = sock.recv(65536)
            except TimeoutError:
                raise ConnectionLost("the daemon did not answer in time") from None
            except OSError as exc:
                raise ConnectionLost(f"lost the connection to the daemon: {exc}") from None
            if not data:
                raise ConnectionLost("the daemon closed the connection")
            try:
                for message in self._decoder.feed(data):
                    if not isinstance(message, Response | Notification):
                        raise ConnectionLost("the daemon sent a request")
                    self._received.append(message)
            except RpcProtocolError as exc:
                raise ConnectionLost(f"unreadable answer from the daemon: {exc}") from None

    def call(self, method: str, **params: Any) -> Any:
        """Call ``method`` with named arguments; return its result or raise ``RemoteError``."""
        msgid = next(self._msgids)
        sock = self._connect()
        try:
            sock.sendall(encode_request(msgid, method, [params] if params else []))
        except OSError as exc:
            raise ConnectionLost(f"lost the connection to the daemon: {exc}") from None
        answer = self._answer(msgid)
        if isinstance(answer, RemoteError):
            raise answer
        return answer

    # -- the methods, with Python signatures -----------------------------------

    def node_id(self) -> dict[str, str]:
        return self.call("id")  # type: ignore[no-any-return]

    def status(self) -> dict[str, Any]:
        return self.call("status")  # type: ignore[no-any-return]

    def publish(self, key: str, value: Any, ttl_ms: int | None = None) -> dict[str, Any]:
        if ttl_ms is None:
            return self.call("publish", key=key, value=value)  # type: ignore[no-any-return]
        return self.call("publish", key=key, value=value, ttl_ms=ttl_ms)  # type: ignore[no-any-return]

    def publish_many(
        self, items: Iterable[tuple[str, Any, int | None]], window: int = 256
    ) -> list[dict[str, Any] | RemoteError]:
        """Publish ``(key, value, ttl_ms)`` items, pipelining up to ``window`` requests.

        The daemon stores pipelined publishes in group commits, so this is far
        faster than one ``publish`` after another. Results come in item order: a
        record, or the ``RemoteError`` that refused that item.
        """
        sock = self._connect()
        results: list[dict[str, Any] | RemoteError] = []
        waiting: deque[int] = deque()
        iterator = iter(items)
        exhausted = False
        while True:
            batch = bytearray()
            while not exhausted and len(waiting) < window:
                try:
                    key, value, ttl_ms = next(iterator)
                except StopIteration:
                    exhausted = True
                    break
                params: dict[str, Any] = {"key": key, "value": value}
                if ttl_ms is not None:
                    params["ttl_ms"] = ttl_ms
                msgid = next(self._msgids)
                waiting.append(msgid)
                batch += encode_request(msgid, "publish", [params])
            if batch:
                try:
                    sock.sendall(batch)
                except OSError as exc:
                    raise ConnectionLost(f"lost the connection to the daemon: {exc}") from None
            if not waiting:
                return results
            # Read half a window of answers before sending more, to keep the pipe full.
            for _ in range(max(1, min(len(waiting), window // 2))):
                results.append(self._answer(waiting.popleft()))

    def _answer(self, msgid: int) -> Any:
        """The result of request ``msgid``, or its ``RemoteError``; notifications are kept."""
        while True:
            message = self._read_message()
            if isinstance(message, Notification):
                _raise_if_error(message)
                self._notifications.append(message)
            elif message.msgid == msgid:
                if message.error is not None:
                    return _remote_error(message.error)
                return message.result

    def get(self, key: str, author: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"key": key}
        if author is not None:
            params["author"] = author
        return self.call("get", **params)  # type: ignore[no-any-return]

    def query(
        self,
        prefix: str = "",
        author: str | None = None,
        limit: int | None = None,
        include_deleted: bool = False,
        min_seq: int = 0,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"prefix": prefix, "include_deleted": include_deleted}
        if min_seq:
            params["min_seq"] = min_seq
        if author is not None:
            params["author"] = author
        if limit is not None:
            params["limit"] = limit
        return self.call("query", **params)  # type: ignore[no-any-return]

    def delete(self, key: str) -> dict[str, Any]:
        return self.call("delete", key=key)  # type: ignore[no-any-return]

    def watch(self, prefix: str = "", author: str | None = None) -> Iterator[dict[str, Any]]:
        """Yield ``{"event", "record"}`` for every matching record stored from now on.

        Raises ``RemoteError`` with code ``overflow`` if the reader falls behind.
        """
        params: dict[str, Any] = {"prefix": prefix}
        if author is not None:
            params["author"] = author
        # Registered now, not at the first next(): nothing stored after this call is missed.
        watch_id = self.call("watch", **params)["watch"]
        self._sock_blocking()
        return self._watch_events(watch_id)

    def _watch_events(self, watch_id: int) -> Iterator[dict[str, Any]]:
        while True:
            if self._notifications:
                message = self._notifications.popleft()
            else:
                read = self._read_message()
                if not isinstance(read, Notification):
                    continue
                message = read
            _raise_if_error(message)
            if not message.params or type(message.params[0]) is not dict:
                continue
            body = message.params[0]
            if body.get("watch") != watch_id:
                continue
            if message.method == "watch-end":
                raise RemoteError(str(body.get("code")), str(body.get("message")))
            if message.method == "watch":
                yield {"event": body.get("event"), "record": body.get("record")}

    def _sock_blocking(self) -> None:
        """A watch waits for as long as it takes: no read timeout."""
        self._connect().settimeout(None)


def _remote_error(error: Any) -> RemoteError:
    if isinstance(error, dict):
        return RemoteError(str(error.get("code", "unknown")), str(error.get("message", error)))
    return RemoteError("unknown", str(error))


def _raise_if_error(message: Notification) -> None:
    if message.method == "error":
        raise _remote_error(message.params[0] if message.params else None)
