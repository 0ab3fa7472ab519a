"""A blocking client for a node's control socket, for the CLI and for scripts.

    from meshnode.client import Client

    with Client.for_data_dir() as node:
        node.publish("profile/name", "Ada")
        print(node.get("profile/name")["value"])

Imports neither trio nor zeroconf nor a crypto backend, so it starts fast.

The daemon closes a connection that sits idle (protocol/control.md,
Transport); a ``Client`` notices before its next call and connects again, so
a script may keep one open for as long as it likes.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import itertools
import os
import socket
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType

import msgpack

from meshnode.core.rpc import (
    Notification,
    Response,
    RpcProtocolError,
    TrustingRpcDecoder,
    encode_request,
)
from meshnode.system import paths

# ``typing`` is for the type checker only: importing it costs the CLI ~5 ms of start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeAlias

    PublishItem: TypeAlias = tuple[str, Any, int | None]
    PublishResult: TypeAlias = "dict[str, Any] | RemoteError"

MAX_RESPONSE_BYTES = 512 * 1024 * 1024
RECEIVE_CHUNK = 65536
# publish_many keeps at most this many bytes of requests unanswered (and at most
# ``window`` requests): enough to keep the daemon's group commits full, little
# enough that its answers never wait long for this client to read them.
MAX_IN_FLIGHT_BYTES = 128 * 1024
IDLE_TIMEOUT_CODE = "idle-timeout"


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


class Unencodable(ClientError, ValueError):
    """The caller's request cannot be put into msgpack-RPC; nothing was sent.

    A ValueError too, as msgpack's own error was: a caller that caught that still does."""


def _request(msgid: int, method: str, params: list[Any]) -> bytes:
    """The request's bytes; Unencodable for a value msgpack cannot carry, said in the
    terms of whoever typed it (a key that is not UTF-8, an integer from JSON). A Python
    object that is no value at all is the caller's mistake: its TypeError goes out as is."""
    try:
        return encode_request(msgid, method, params)
    except UnicodeEncodeError:
        raise Unencodable(
            "text that is not valid UTF-8 cannot be sent (a value of bytes can be published"
            " from stdin: meshnode publish KEY -)"
        ) from None
    except OverflowError:
        raise Unencodable(
            "an integer beyond 64 bits cannot be stored (from -2**63 to 2**64 - 1)"
        ) from None
    except ValueError as exc:  # msgpack's limits (a value of 4 GiB, nesting too deep)
        raise Unencodable(f"this cannot be sent: {exc}") from None


class RemoteError(ClientError):
    """The daemon answered with an error; ``code`` is stable, ``message`` is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class PublishIncomplete(ClientError):
    """``publish_many`` stopped part-way; it says which publications were stored.

    ``results`` has one entry per item taken from the iterable before the
    failure, in order: the record (stored: answered, or confirmed by reading it
    back on a fresh connection), the ``RemoteError`` that refused it, or None.
    None is either ``unknown`` (sent but neither answered nor confirmed: it may
    or may not have been stored, perhaps even later) or ``not_sent`` (never
    fully sent, so never stored). ``cause`` is what stopped the run.
    """

    def __init__(self, cause: Exception, results: list[PublishResult | None], sent: int) -> None:
        self.cause = cause
        self.results = results
        self.stored = [i for i, r in enumerate(results) if isinstance(r, dict)]
        self.refused = [i for i, r in enumerate(results) if isinstance(r, RemoteError)]
        self.unknown = [i for i in range(sent) if results[i] is None]
        self.not_sent = list(range(sent, len(results)))
        super().__init__(
            f"publishing stopped after {len(results)} items ({cause}): {len(self.stored)}"
            f" stored, {len(self.refused)} refused, {len(self.unknown)} unknown (sent, not"
            f" confirmed), {len(self.not_sent)} not sent"
        )


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
        return cls(paths.client_socket(data_dir, socket_path, env))

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
        """Close the connection; the next call opens a new one, with nothing left over."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._decoder = TrustingRpcDecoder(MAX_RESPONSE_BYTES)
        self._received.clear()
        self._notifications.clear()

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
                if exc.errno == errno.EACCES and self.socket_path == paths.SYSTEM_SOCKET:
                    raise ClientError(
                        f"cannot connect to the system node at {self.socket_path}: permission"
                        " denied; join its group (sudo usermod -aG meshnode $USER, then log in"
                        " again) or use sudo"
                    ) from None
                raise ClientError(f"cannot connect to {self.socket_path}: {exc}") from None
            self._sock = sock
        return self._sock

    def _ready(self) -> socket.socket:
        """The connection for a new request: a new one if the daemon closed the old one."""
        if self._sock is not None and self._daemon_hung_up(self._sock):
            self.close()
        return self._connect()

    def _daemon_hung_up(self, sock: socket.socket) -> bool:
        """Whether the daemon closed ``sock`` since the last call (idle, or restarted).

        Takes what is pending without waiting: end of stream, a reset or an
        ``idle-timeout`` notice mean it did; anything else is kept for later.
        """
        messages, closed = self._pending(sock)
        for message in messages:
            if isinstance(message, Notification) and _is_idle_notice(message):
                return True
            self._received.append(message)
        return closed

    def _pending(self, sock: socket.socket) -> tuple[list[Response | Notification], bool]:
        """The messages already received on ``sock``, and whether it has ended."""
        messages: list[Response | Notification] = []
        with _nonblocking(sock):
            while True:
                try:
                    data = sock.recv(RECEIVE_CHUNK)
                except BlockingIOError:
                    return messages, False
                except OSError:
                    return messages, True
                if not data:
                    return messages, True
                try:
                    messages += self._decode(data)
                except ConnectionLost:
                    return messages, True

    def _decode(self, data: bytes) -> list[Response | Notification]:
        try:
            messages = self._decoder.feed(data)
        except RpcProtocolError as exc:
            raise ConnectionLost(f"unreadable answer from the daemon: {exc}") from None
        answers = [m for m in messages if isinstance(m, Response | Notification)]
        if len(answers) != len(messages):
            raise ConnectionLost("the daemon sent a request")
        return answers

    def _send(self, sock: socket.socket, data: bytes) -> None:
        try:
            sock.sendall(data)
        except OSError as exc:
            raise self._send_failure(sock, exc) from None

    def _send_failure(self, sock: socket.socket, exc: OSError) -> ClientError:
        """What to raise when sending failed: the daemon's own reason if it sent one.

        The daemon refuses a connection (``busy``) or closes an idle one with an
        ``error`` notice and does not read what was sent; the send then fails
        with EPIPE or ECONNRESET, but the notice is waiting to be read.
        """
        messages, _ = self._pending(sock)
        self.close()
        for message in messages:
            if isinstance(message, Notification) and message.method == "error":
                return _notice_error(message)
        return ConnectionLost(f"lost the connection to the daemon: {exc}")

    def _read_message(self) -> Response | Notification:
        sock = self._sock
        while not self._received:
            if sock is None:
                raise ConnectionLost("the connection to the daemon is closed")
            try:
                data = sock.recv(RECEIVE_CHUNK)
            except TimeoutError:
                self.close()
                raise ConnectionLost("the daemon did not answer in time") from None
            except OSError as exc:
                raise self._lost(exc) from None
            self._take(data)
        return self._received.popleft()

    def _lost(self, exc: OSError) -> ConnectionLost:
        self.close()
        return ConnectionLost(f"lost the connection to the daemon: {exc}")

    def _take(self, data: bytes) -> None:
        """Keep what the daemon sent; nothing at all means it closed the connection."""
        if not data:
            self.close()
            raise ConnectionLost("the daemon closed the connection")
        self._received.extend(self._decode(data))

    def call(self, method: str, **params: Any) -> Any:
        """Call ``method`` with named arguments; return its result or raise ``RemoteError``."""
        try:
            answer = self._call_once(method, params)
        except RemoteError as exc:
            if exc.code != IDLE_TIMEOUT_CODE:
                raise
            # The daemon closed the connection as idle, so it did not read this
            # request: sending it again on a new connection is safe.
            answer = self._call_once(method, params)
        if isinstance(answer, RemoteError):
            raise answer
        return answer

    def _call_once(self, method: str, params: dict[str, Any]) -> Any:
        msgid = next(self._msgids)
        self._send(self._ready(), _request(msgid, method, [params] if params else []))
        return self._answer(msgid)

    # -- the methods, with Python signatures -----------------------------------

    def node_id(self) -> dict[str, str]:
        return self.call("id")  # type: ignore[no-any-return]

    def status(self) -> dict[str, Any]:
        return self.call("status")  # type: ignore[no-any-return]

    def publish(self, key: str, value: Any, ttl_ms: int | None = None) -> dict[str, Any]:
        if ttl_ms is None:
            return self.call("publish", key=key, value=value)  # type: ignore[no-any-return]
        return self.call("publish", key=key, value=value, ttl_ms=ttl_ms)  # type: ignore[no-any-return]

    def publish_many(self, items: Iterable[PublishItem], window: int = 256) -> list[PublishResult]:
        """Publish ``(key, value, ttl_ms)`` items, pipelining up to ``window`` requests.

        The daemon stores pipelined publishes in group commits, so this is far
        faster than one ``publish`` after another. Results come in item order: a
        record, or the ``RemoteError`` that refused that item. If the run stops
        part-way (connection lost, timeout, an item that cannot be encoded),
        ``PublishIncomplete`` says which items were stored.
        """
        pipeline = _Pipeline(items, window, self._msgids)
        started_ms = time.time_ns() // 1_000_000
        try:
            self._run(pipeline)
        except ClientError as exc:
            raise self._incomplete(pipeline, exc, started_ms) from exc
        except BaseException:
            self.close()  # answers may still be on their way: the connection is of no use
            raise
        if pipeline.failure is not None:
            raise PublishIncomplete(
                pipeline.failure, pipeline.results, pipeline.sent
            ) from pipeline.failure
        return pipeline.answers()

    def _run(self, pipeline: _Pipeline) -> None:
        """Write requests and read answers as each becomes possible, until all are answered.

        The daemon stops reading a connection while it writes answers to it; a
        client that wrote everything before reading would fill both socket
        buffers and stall both sides. Reading whenever answers arrive, with the
        requests in flight bounded, nothing can block, whatever the buffer sizes.
        """
        import selectors  # only publish_many needs it; the CLI starts without it

        sock = self._ready()
        self._take_answers(pipeline)
        with selectors.DefaultSelector() as selector, _nonblocking(sock):
            selector.register(sock, selectors.EVENT_READ)
            watching = selectors.EVENT_READ
            while not pipeline.refill():
                wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if pipeline.outbox else 0)
                if wanted != watching:
                    selector.modify(sock, wanted)
                    watching = wanted
                ready = selector.select(self._timeout)
                if not ready:
                    raise ConnectionLost("the daemon did not answer in time")
                events = ready[0][1]
                if events & selectors.EVENT_WRITE:
                    pipeline.wrote(self._send_some(sock, pipeline.outbox))
                if events & selectors.EVENT_READ:
                    self._receive_some(sock)
                    self._take_answers(pipeline)

    def _send_some(self, sock: socket.socket, data: bytearray) -> int:
        try:
            return sock.send(data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise self._send_failure(sock, exc) from None

    def _receive_some(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(RECEIVE_CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            raise self._lost(exc) from None
        self._take(data)

    def _take_answers(self, pipeline: _Pipeline) -> None:
        while self._received:
            message = self._received.popleft()
            if isinstance(message, Response):
                pipeline.answer(message)
            elif message.method == "error":
                self.close()
                raise _notice_error(message)
            else:
                self._notifications.append(message)

    def _incomplete(
        self, pipeline: _Pipeline, cause: ClientError, started_ms: int
    ) -> PublishIncomplete:
        """The report of a run that failed, with unanswered items read back where possible."""
        self.close()
        results = list(pipeline.results)
        for index, record in self._read_back(pipeline, started_ms).items():
            results[index] = record
        return PublishIncomplete(cause, results, pipeline.sent)

    def _read_back(self, pipeline: _Pipeline, started_ms: int) -> dict[int, dict[str, Any]]:
        """The records, read on a fresh connection, that show unanswered items were stored.

        An item is confirmed when its key's live record has its value and ttl,
        was created since the run began, and is newer than any record the run was
        answered with for that key. Of several unanswered items with one key only
        the last can be confirmed; the others stay unknown, as does everything if
        the daemon cannot be asked.
        """
        last_of_key = {pipeline.taken[i][0]: i for i in range(pipeline.sent)}
        # A record the run was already answered with is no proof of a later item.
        answered_seq: dict[str, int] = {}
        for i in range(pipeline.sent):
            result = pipeline.results[i]
            if isinstance(result, dict):
                key = pipeline.taken[i][0]
                answered_seq[key] = max(answered_seq.get(key, 0), int(result.get("seq", 0)))
        unanswered = [
            i
            for i in range(pipeline.sent)
            if pipeline.results[i] is None and last_of_key[pipeline.taken[i][0]] == i
        ]
        confirmed: dict[int, dict[str, Any]] = {}
        with contextlib.suppress(ClientError), Client(self.socket_path, self._timeout) as reader:
            for index in unanswered:
                key, value, ttl_ms = pipeline.taken[index]
                try:
                    record = reader.get(key)
                except RemoteError:
                    continue  # not found: not stored, or not yet
                newer = int(record.get("seq", 0)) > answered_seq.get(key, 0)
                if newer and _shows(record, value, ttl_ms, started_ms):
                    confirmed[index] = record
        return confirmed

    def _answer(self, msgid: int) -> Any:
        """The result of request ``msgid``, or its ``RemoteError``; notifications are kept.

        An ``error`` notification ends the connection and is raised.
        """
        while True:
            message = self._read_message()
            if isinstance(message, Notification):
                if message.method == "error":
                    self.close()
                    raise _notice_error(message)
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
            if message.method == "error":
                self.close()
                raise _notice_error(message)
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


class _Pipeline:
    """The state of one ``publish_many`` run: items taken, bytes written, answers in.

    ``sent`` counts the items whose request was written whole: the daemon can
    have stored only those.
    """

    def __init__(self, items: Iterable[PublishItem], window: int, msgids: Iterator[int]) -> None:
        self._items = iter(items)
        self._window = max(1, window)
        self._msgids = msgids
        self.taken: list[PublishItem] = []
        self.results: list[PublishResult | None] = []
        self.outbox = bytearray()  # requests not yet written
        self.failure: Exception | None = None  # an item that could not be taken or encoded
        self._written = 0
        self._ends: list[int] = []  # where each item's request ends in the byte stream
        self._unanswered: deque[tuple[int, int]] = deque()  # (msgid, item index), in order
        self._exhausted = False

    @property
    def sent(self) -> int:
        return bisect.bisect_right(self._ends, self._written)

    def refill(self) -> bool:
        """Queue requests while the window allows; True once every item is answered."""
        while not self._exhausted and self._has_room():
            try:
                self._queue(*next(self._items))
            except StopIteration:
                self._exhausted = True
            except Exception as exc:  # a bad item or iterator: answer what was sent, then stop
                self.failure = exc
                self._exhausted = True
        return self._exhausted and not self._unanswered

    def _has_room(self) -> bool:
        if not self._unanswered:
            return True
        first = self._unanswered[0][1]
        in_flight = self._ends[-1] - (self._ends[first - 1] if first else 0)
        return len(self._unanswered) < self._window and in_flight < MAX_IN_FLIGHT_BYTES

    def _queue(self, key: str, value: Any, ttl_ms: int | None) -> None:
        params: dict[str, Any] = {"key": key, "value": value}
        if ttl_ms is not None:
            params["ttl_ms"] = ttl_ms
        msgid = next(self._msgids)
        request = _request(msgid, "publish", [params])
        self._unanswered.append((msgid, len(self.taken)))
        self.taken.append((key, value, ttl_ms))
        self.results.append(None)
        self.outbox += request
        self._ends.append((self._ends[-1] if self._ends else 0) + len(request))

    def wrote(self, count: int) -> None:
        del self.outbox[:count]
        self._written += count

    def answer(self, response: Response) -> None:
        """Take the answer to the oldest request; the daemon answers in request order."""
        if not self._unanswered or response.msgid != self._unanswered[0][0]:
            return  # an answer to an earlier, abandoned call
        _, index = self._unanswered.popleft()
        if response.error is not None:
            self.results[index] = _remote_error(response.error)
        else:
            self.results[index] = response.result

    def answers(self) -> list[PublishResult]:
        """Every result, once all are in."""
        answers = [r for r in self.results if r is not None]
        assert len(answers) == len(self.results)
        return answers


@contextlib.contextmanager
def _nonblocking(sock: socket.socket) -> Iterator[None]:
    """``sock`` without waiting (a timeout makes even MSG_DONTWAIT wait), then as before."""
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        yield
    finally:
        if sock.fileno() != -1:
            sock.settimeout(timeout)


def _shows(record: dict[str, Any], value: Any, ttl_ms: int | None, since_ms: int) -> bool:
    """Whether ``record`` is the one a publication of ``value`` made since ``since_ms``."""
    expires_ms = record.get("expires_ms")
    ttl_matches = (
        expires_ms is None if ttl_ms is None else expires_ms == record["created_ms"] + ttl_ms
    )
    return record["created_ms"] >= since_ms and ttl_matches and record["value"] == _as_read(value)


def _as_read(value: Any) -> Any:
    """``value`` as the daemon would give it back (tuples as lists, and so on)."""
    return msgpack.unpackb(msgpack.packb(value, use_bin_type=True), raw=False, strict_map_key=False)


def _is_idle_notice(message: Notification) -> bool:
    return message.method == "error" and _notice_error(message).code == IDLE_TIMEOUT_CODE


def _notice_error(message: Notification) -> RemoteError:
    return _remote_error(message.params[0] if message.params else None)


def _remote_error(error: Any) -> RemoteError:
    if isinstance(error, dict):
        return RemoteError(str(error.get("code", "unknown")), str(error.get("message", error)))
    return RemoteError("unknown", str(error))
