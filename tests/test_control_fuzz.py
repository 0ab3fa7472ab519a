"""The control socket under hostile input: nothing a client sends crashes the daemon."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from meshnode.core.rpc import RpcDecoder, encode_request
from tests.helpers import Daemon

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shared_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    daemon = Daemon(tmp_path_factory.mktemp("fuzz") / "node").start()
    yield daemon
    daemon.cleanup()  # first: a daemon left running would fail a later test, not this one
    assert "Traceback" not in daemon.log()


def exchange(path: Path, data: bytes, timeout: float = 2.0) -> list[object]:
    """Send ``data``, half-close, and read every message until the daemon closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    return list(msgpack.Unpacker(_raw(received), raw=False, strict_map_key=False))


def _raw(data: bytes) -> object:
    import io

    return io.BytesIO(data)


def assert_alive(daemon: Daemon) -> None:
    with daemon.client() as client:
        assert client.call("ping") == "pong"


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text()
    | st.binary(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
methods = st.sampled_from(
    ["ping", "id", "status", "publish", "get", "query", "delete", "watch", "unwatch", "nope", ""]
)
requests = st.builds(
    lambda msgid, method, params: msgpack.packb([0, msgid, method, params], use_bin_type=True),
    st.integers(0, 2**32 - 1),
    methods,
    st.lists(msgpack_values, max_size=2)
    | st.builds(
        lambda d: [d],
        st.dictionaries(
            st.sampled_from(
                [
                    "key",
                    "value",
                    "ttl_ms",
                    "author",
                    "prefix",
                    "limit",
                    "include_deleted",
                    "watch",
                    "x",
                ]
            ),
            msgpack_values,
            max_size=4,
        ),
    ),
)
frames = st.lists(
    requests
    | st.binary(max_size=64)
    | msgpack_values.map(lambda v: msgpack.packb(v, use_bin_type=True)),
    min_size=1,
    max_size=4,
).map(b"".join)


@settings(max_examples=150)
@given(frames)
@example(b"\xdd\xff\xff\xff\xff")  # array32 claiming 4 billion items
@example(b"\xdb\xff\xff\xff\xff" + b"x" * 100)  # str32 claiming 4 GiB
@example(b"\x91" * 100_000)  # nesting far beyond any limit
@example(
    encode_request(
        1, "publish", [{"key": "a", "value": [[[[[[[[[[[[[[[[[["deep"]]]]]]]]]]]]]]]]]]}]
    )
)
def test_random_and_malformed_frames_never_crash_the_daemon(
    shared_daemon: Daemon, data: bytes
) -> None:
    for message in exchange(shared_daemon.socket, data):
        assert isinstance(message, list) and message[0] in (1, 2)
        if message[0] == 1 and message[2] is not None:
            assert set(message[2]) == {"code", "message"}
    assert_alive(shared_daemon)


def test_an_oversized_request_gets_an_error_and_a_closed_connection(shared_daemon: Daemon) -> None:
    big = encode_request(1, "publish", [{"key": "k", "value": b"x" * 2_000_000}])
    [message] = exchange(shared_daemon.socket, big)
    assert message == [
        2,
        "error",
        [{"code": "bad-request", "message": "a message is larger than 1048576 bytes"}],
    ]
    assert_alive(shared_daemon)


def test_an_unknown_method_gets_an_error_response_and_the_connection_stays(
    shared_daemon: Daemon,
) -> None:
    data = encode_request(7, "frobnicate", []) + encode_request(8, "ping", [])
    assert exchange(shared_daemon.socket, data) == [
        [1, 7, {"code": "unknown-method", "message": "no method 'frobnicate'"}, None],
        [1, 8, None, "pong"],
    ]


def test_misspelt_arguments_are_refused_by_name(shared_daemon: Daemon) -> None:
    [reply] = exchange(shared_daemon.socket, encode_request(1, "query", [{"prefx": "a/"}]))
    assert reply[2]["code"] == "invalid-params" and "prefx" in reply[2]["message"]


def test_requests_may_be_pipelined_and_answers_come_in_order(shared_daemon: Daemon) -> None:
    data = b"".join(encode_request(n, "ping", []) for n in range(100))
    assert [m[1] for m in exchange(shared_daemon.socket, data)] == list(range(100))


def test_many_clients_at_once(shared_daemon: Daemon) -> None:
    sockets = []
    try:
        for _ in range(40):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(shared_daemon.socket))
            sockets.append(sock)
        for n, sock in enumerate(sockets):
            sock.sendall(encode_request(n, "ping", []))
        for n, sock in enumerate(sockets):
            sock.settimeout(5)
            decoder = RpcDecoder(4096)
            messages: list[object] = []
            while not messages:
                messages = list(decoder.feed(sock.recv(4096)))
            assert messages[0].msgid == n  # type: ignore[attr-defined]
    finally:
        for sock in sockets:
            sock.close()
    assert_alive(shared_daemon)


def test_a_watcher_that_stops_reading_is_cut_off_not_buffered_forever(
    shared_daemon: Daemon,
) -> None:
    slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(str(shared_daemon.socket))
    slow.sendall(encode_request(1, "watch", [{"prefix": "flood/"}]))
    try:
        with shared_daemon.client() as client:
            # Pipelined (group commits): one durable publish after another can take
            # longer than the daemon's 10 s send timeout, which would drop the watcher
            # for stalling before its watch falls behind.
            client.publish_many((f"flood/{n % 10}", "x" * 200, None) for n in range(6000))
            assert client.status()["watches"] == 0
    finally:
        slow.close()
    assert "fell behind" in shared_daemon.log()
