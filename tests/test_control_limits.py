"""Control connections cannot hold the daemon: idle timeouts, send timeouts, the reserved slot.

The server is driven through memory streams on a virtual clock (autojump), so
a minute of idling takes no time; the last tests check the same against a real
daemon, with the CLI.
"""

from __future__ import annotations

import json
import socket
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import trio
import trio.testing

from meshnode.core.netkey import PUBLIC_NETWORK_KEY
from meshnode.core.rpc import (
    Notification,
    Response,
    TrustingRpcDecoder,
    encode_request,
)
from meshnode.engine.settings import PeerSettings
from meshnode.runtime.api import Api, Paths
from meshnode.runtime.control import (
    IDLE_TIMEOUT,
    MAX_CLIENTS,
    RESERVED_IDLE_TIMEOUT,
    SEND_TIMEOUT,
    ControlServer,
    Limits,
)
from meshnode.runtime.publisher import Publisher
from meshnode.runtime.watch import WatchHub
from tests.engine_driver import peer_service
from tests.helpers import T0, Daemon, identity, record


class NoListener(trio.abc.Listener[trio.SocketStream]):
    """The server's listener, unused: these tests hand it streams themselves."""

    async def accept(self) -> trio.SocketStream:
        raise NotImplementedError

    async def aclose(self) -> None:
        pass


def control_server(limits: Limits | None = None, watch_buffer: int = 4096) -> ControlServer:
    """A control server on an in-memory node whose publisher never runs (publishes wait)."""
    peers = peer_service(PeerSettings(network_key=PUBLIC_NETWORK_KEY), hub=WatchHub(watch_buffer))
    api = Api(
        peers.mesh.node,
        peers,
        publisher=Publisher(peers),
        paths=Paths("data", "socket"),
        wall_clock_ms=lambda: T0,
    )
    return ControlServer(api, NoListener(), limits)


class TestClient:
    """One client connection to the server, over a memory stream."""

    __test__ = False

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._decoder = TrustingRpcDecoder(1 << 24)
        self._messages: deque[Any] = deque()
        self._msgid = 0

    async def send(self, method: str, **params: Any) -> int:
        self._msgid += 1
        await self.stream.send_all(encode_request(self._msgid, method, [params] if params else []))
        return self._msgid

    async def next(self) -> Response | Notification | None:
        """The next message from the server; None once it closed the connection."""
        while not self._messages:
            data = await self.stream.receive_some()
            if not data:
                return None
            self._messages.extend(self._decoder.feed(data))
        return self._messages.popleft()

    async def call(self, method: str, **params: Any) -> Any:
        msgid = await self.send(method, **params)
        answer = await self.next()
        assert isinstance(answer, Response) and answer.msgid == msgid, answer
        return answer.result if answer.error is None else answer.error

    async def notice_and_close(self) -> tuple[str, str]:
        """The ``error`` notification the server closes with, and check that it closed."""
        notice = await self.next()
        assert isinstance(notice, Notification) and notice.method == "error", notice
        assert await self.next() is None
        return notice.params[0]["code"], notice.params[0]["message"]


async def connect(
    server: ControlServer, nursery: trio.Nursery, lockstep: bool = False
) -> TestClient:
    """A new client of ``server``; with ``lockstep``, the server's sends wait for its reads."""
    pair = trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
    client_end, server_end = pair()
    nursery.start_soon(server.handle, server_end)
    await trio.testing.wait_all_tasks_blocked()
    return TestClient(client_end)


async def test_an_idle_connection_is_told_and_closed_after_the_idle_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    server = control_server()
    async with trio.open_nursery() as nursery:
        client = await connect(server, nursery)
        assert await client.call("ping") == "pong"
        answered = trio.current_time()
        with trio.fail_after(IDLE_TIMEOUT * 2):
            code, message = await client.notice_and_close()
        assert trio.current_time() - answered == pytest.approx(IDLE_TIMEOUT)
        assert code == "idle-timeout" and "no request and no watch" in message
        await trio.testing.wait_all_tasks_blocked()
        assert server.api.clients == 0


async def test_bytes_that_never_complete_a_request_do_not_keep_a_connection(
    autojump_clock: trio.abc.Clock,
) -> None:
    server = control_server()
    async with trio.open_nursery() as nursery:
        client = await connect(server, nursery)
        started = trio.current_time()
        request = encode_request(1, "ping", [])
        for byte in request[:3]:  # a byte every 15 s, never a whole request
            await client.stream.send_all(bytes([byte]))
            await trio.sleep(IDLE_TIMEOUT / 4)
        with trio.fail_after(IDLE_TIMEOUT):
            code, _ = await client.notice_and_close()
        assert code == "idle-timeout"
        assert trio.current_time() - started == pytest.approx(IDLE_TIMEOUT)


async def test_a_connection_with_a_watch_is_not_idle_until_the_watch_ends(
    autojump_clock: trio.abc.Clock,
) -> None:
    server = control_server()
    async with trio.open_nursery() as nursery:
        client = await connect(server, nursery)
        watch = (await client.call("watch", prefix="a/"))["watch"]
        await trio.sleep(IDLE_TIMEOUT * 10)
        assert await client.call("ping") == "pong"  # no notice came first
        assert await client.call("unwatch", watch=watch) is True
        unwatched = trio.current_time()
        with trio.fail_after(IDLE_TIMEOUT * 2):
            code, _ = await client.notice_and_close()
        assert code == "idle-timeout"
        assert trio.current_time() - unwatched == pytest.approx(IDLE_TIMEOUT)


async def test_a_watcher_that_stops_reading_is_dropped_after_the_send_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    server = control_server()
    async with trio.open_nursery() as nursery:
        client = await connect(server, nursery, lockstep=True)
        await client.call("watch", prefix="")
        server.api.hub.publish([record(identity(2), key=f"k{n}") for n in range(3)])
        stopped_reading = trio.current_time()
        with trio.fail_after(SEND_TIMEOUT * 3):
            while server.api.clients:
                await trio.sleep(0.5)
        assert trio.current_time() - stopped_reading == pytest.approx(SEND_TIMEOUT, abs=0.5)
        assert len(server.api.hub) == 0
        await client.stream.aclose()


async def test_an_overflowed_watcher_is_told_and_its_connection_closed(
    autojump_clock: trio.abc.Clock,
) -> None:
    server = control_server(watch_buffer=2)
    async with trio.open_nursery() as nursery:
        client = await connect(server, nursery)
        watch = (await client.call("watch", prefix=""))["watch"]
        server.api.hub.publish([record(identity(2), key=f"k{n}") for n in range(5)])
        with trio.fail_after(1):
            end = await client.next()
            assert isinstance(end, Notification) and end.method == "watch-end"
            assert end.params[0]["watch"] == watch and end.params[0]["code"] == "overflow"
            code, message = await client.notice_and_close()
        assert code == "idle-timeout" and "fell behind" in message
        await trio.testing.wait_all_tasks_blocked()
        assert server.api.clients == 0


async def test_an_overflowed_watch_leaves_a_connection_with_another_watch_open(
    autojump_clock: trio.abc.Clock,
) -> None:
    server = control_server(watch_buffer=2)
    async with trio.open_nursery() as nursery:
        client = await connect(server, nursery)
        await client.call("watch", prefix="a/")
        await client.call("watch", prefix="b/")
        server.api.hub.publish([record(identity(2), key=f"a/{n}") for n in range(5)])
        end = await client.next()
        assert isinstance(end, Notification) and end.method == "watch-end"
        await trio.sleep(IDLE_TIMEOUT * 2)
        assert await client.call("ping") == "pong"
        assert server.api.clients == 1
        nursery.cancel_scope.cancel()


async def test_with_every_slot_idle_a_newcomer_gets_the_slot_of_the_longest_idle(
    autojump_clock: trio.abc.Clock,
) -> None:
    server = control_server(Limits(max_clients=2))
    async with trio.open_nursery() as nursery:
        oldest, other = await connect(server, nursery), await connect(server, nursery)
        for client in (oldest, other):
            assert await client.call("ping") == "pong"
            await trio.sleep(1)
        reserved = await connect(server, nursery)  # beyond the regular slots
        assert await reserved.call("ping") == "pong"
        assert server.api.clients == 3
        newcomer = await connect(server, nursery)  # every slot taken: the oldest idler goes
        assert await newcomer.call("ping") == "pong"
        code, message = await oldest.notice_and_close()
        assert code == "idle-timeout" and "make room" in message
        assert await other.call("ping") == "pong"
        assert server.api.clients == 3
        nursery.cancel_scope.cancel()


async def test_with_every_regular_slot_watching_the_reserved_slot_answers_but_may_not_watch(
    autojump_clock: trio.abc.Clock,
) -> None:
    server = control_server(Limits(max_clients=2))
    async with trio.open_nursery() as nursery:
        for _ in range(2):
            await (await connect(server, nursery)).call("watch", prefix="")
        reserved = await connect(server, nursery)
        assert await reserved.call("ping") == "pong"
        refused = await reserved.call("watch", prefix="")
        assert refused["code"] == "busy" and "reserved slot" in refused["message"]
        answered = trio.current_time()
        code, _ = await reserved.notice_and_close()
        assert code == "idle-timeout"
        assert trio.current_time() - answered == pytest.approx(RESERVED_IDLE_TIMEOUT)
        nursery.cancel_scope.cancel()


async def test_the_reserved_slots_newcomer_is_not_evicted_before_its_first_request(
    autojump_clock: trio.abc.Clock,
) -> None:
    server = control_server(Limits(max_clients=1))
    async with trio.open_nursery() as nursery:
        await (await connect(server, nursery)).call("watch", prefix="")
        cli = await connect(server, nursery)  # on the reserved slot; its request is on the way
        other = await connect(server, nursery)
        code, _ = await other.notice_and_close()
        assert code == "busy"
        assert await cli.call("status")
        nursery.cancel_scope.cancel()


async def test_the_reserved_connection_may_watch_by_taking_an_idle_regular_slot(
    autojump_clock: trio.abc.Clock,
) -> None:
    server = control_server(Limits(max_clients=2))
    async with trio.open_nursery() as nursery:
        watcher, idler = await connect(server, nursery), await connect(server, nursery)
        await watcher.call("watch", prefix="")
        assert await idler.call("ping") == "pong"
        newcomer = await connect(server, nursery)
        assert "watch" in await newcomer.call("watch", prefix="")
        code, _ = await idler.notice_and_close()
        assert code == "idle-timeout"
        await trio.sleep(IDLE_TIMEOUT * 2)  # now in a regular slot, watching: never idle
        assert await newcomer.call("ping") == "pong"
        nursery.cancel_scope.cancel()


async def test_with_every_slot_watching_or_busy_a_newcomer_is_told_how_many(
    autojump_clock: trio.abc.Clock,
) -> None:
    server = control_server(Limits(max_clients=1))
    async with trio.open_nursery() as nursery:
        await (await connect(server, nursery)).call("watch", prefix="")
        busy = await connect(server, nursery)  # the reserved slot, in a publish that waits
        await busy.send("publish", key="k", value="v")
        await trio.sleep(IDLE_TIMEOUT * 2)
        refused = await connect(server, nursery)
        code, message = await refused.notice_and_close()
        assert code == "busy" and "too many control clients (2)" in message
        nursery.cancel_scope.cancel()


# -- against a real daemon ------------------------------------------------------------


def raw_client(daemon: Daemon, receive_buffer: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(10)
    sock.connect(str(daemon.socket))
    return sock


def ping(sock: socket.socket) -> None:
    """Send a ping and read its answer: the daemon has admitted this connection."""
    sock.sendall(encode_request(1, "ping", []))
    assert msgpack.unpackb(sock.recv(4096)) == [1, 1, None, "pong"]


@pytest.fixture
def idle_clients(daemon: Daemon) -> Iterator[list[socket.socket]]:
    """Every regular slot of ``daemon`` held by a connection that answered a ping, then idles."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(MAX_CLIENTS):
            sockets.append(raw_client(daemon))
            ping(sockets[-1])
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def overflow_a_watcher_that_never_reads(daemon: Daemon) -> socket.socket:
    watcher = raw_client(daemon, receive_buffer=4096)
    watcher.sendall(encode_request(1, "watch", [{"prefix": "flood/"}]))
    with daemon.client() as client:
        client.publish_many((f"flood/{n % 10}", "x" * 200, None) for n in range(6000))
    return watcher


@pytest.mark.slow
def test_status_works_with_every_slot_idle_and_an_overflowed_watcher(
    daemon: Daemon, idle_clients: list[socket.socket]
) -> None:
    idle_clients[0].close()  # room for the watcher
    watcher = overflow_a_watcher_that_never_reads(daemon)
    try:
        extra = raw_client(daemon)  # takes the reserved slot and idles in it
        ping(extra)
        for _ in range(3):
            started = time.monotonic()
            done = daemon.cli("status", "--json", timeout=10)
            assert done.returncode == 0, done.stderr
            assert time.monotonic() - started < 5
            assert json.loads(done.stdout)["clients"] >= MAX_CLIENTS
        extra.close()
    finally:
        watcher.close()


@pytest.mark.slow
def test_a_client_kept_open_goes_on_after_the_daemon_closed_it_as_idle(
    daemon: Daemon, idle_clients: list[socket.socket]
) -> None:
    with daemon.client() as client:  # in the reserved slot: a short idle timeout
        assert client.call("ping") == "pong"
        time.sleep(RESERVED_IDLE_TIMEOUT + 0.5)
        assert client.call("ping") == "pong"
        client.watch(prefix="")  # to a regular slot: the longest-idle connection makes room
        with daemon.client() as other:
            assert other.status()["clients"] == MAX_CLIENTS + 1


async def test_publishing_to_a_watch_whose_reader_is_gone_ends_the_watch_not_the_daemon() -> None:
    hub = WatchHub()
    sub = hub.subscribe("", None)
    await sub.receive.aclose()  # its connection's forwarder ended first
    hub.publish([record(identity(1))])
    assert len(hub) == 0
