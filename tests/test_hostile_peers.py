"""A real ``PeerService`` on loopback against hostile peers (issue 7).

The node runs in this process, so its log is counted record by record: a flood
of connections that never finish the handshake must neither keep a peer with
the network key out nor flood the log, and a tampered frame on an
authenticated channel must close the connection with one line and no ban.
Traffic goes to loopback only; the flood comes from 127.0.0.2 (all of
127.0.0.0/8 is local on Linux).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
import trio

from meshnode.core import messages as m
from meshnode.core.channel import SecureChannel
from meshnode.core.handshake import PeerHandshake
from meshnode.core.netkey import PUBLIC_NETWORK_KEY
from meshnode.core.x25519 import KEY_SIZE, KeyPair
from meshnode.engine.settings import PeerSettings
from meshnode.runtime import peers as peers_module
from meshnode.runtime.peers import PeerService
from tests.engine_driver import peer_service
from tests.helpers import identity

pytestmark = pytest.mark.slow

FLOOD_SOURCE = "127.0.0.2"
FLOODERS = 200  # more than MAX_CONNECTIONS, so the old cap was always full
FLOOD_SECONDS = 3.0
JOIN_DEADLINE = 2.0
LOG_INTERVAL = 1.0  # instead of 10 s, so that a short flood shows its summing-up lines


@asynccontextmanager
async def running_node() -> AsyncIterator[tuple[PeerService, tuple[str, int]]]:
    """A node listening for peers on 127.0.0.1 (a port of the OS's choosing), stopped after."""
    config = PeerSettings(network_key=PUBLIC_NETWORK_KEY, listen=(("127.0.0.1", 0),))
    service = peer_service(config)
    listeners = await service.open_listeners()
    host, port = service.listening[0].rsplit(":", 1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(service.run, listeners)
        try:
            yield service, (host, int(port))
        finally:
            nursery.cancel_scope.cancel()


@dataclass
class Joined:
    """A hand-driven peer with the network key, after the node's hello."""

    stream: trio.SocketStream
    channel: SecureChannel
    received: list[m.Message] = field(default_factory=list)


async def join(address: tuple[str, int], who: int) -> Joined:
    """Connect as node ``who``, finish the handshake, send hello and wait for the node's."""
    stream = await trio.open_tcp_stream(*address)
    try:
        handshake = PeerHandshake(
            initiator=True,
            identity=identity(who),
            static_key=KeyPair(os.urandom(KEY_SIZE)),
            network_key=PUBLIC_NETWORK_KEY,
            rng=lambda: os.urandom(32),
        )
        await stream.send_all(handshake.start())
        while handshake.established is None:
            data = await stream.receive_some(65536)
            if not data:
                raise ConnectionError("the node closed the connection during the handshake")
            answer = handshake.receive_data(data)
            if answer:
                await stream.send_all(answer)
        joined = Joined(stream, handshake.established.channel)
        await stream.send_all(joined.channel.seal(m.encode(m.Hello(1, (), (), "test/1"))))
        decoder = m.MessageDecoder()
        data = handshake.established.leftover
        while True:
            joined.received.extend(decoder.feed(joined.channel.open(data)))
            if any(isinstance(r, m.Hello) for r in joined.received):
                return joined
            data = await stream.receive_some(65536)
            if not data:
                raise ConnectionError("the node closed the connection before its hello")
    except BaseException:
        await stream.aclose()
        raise


async def read_until_closed(stream: trio.SocketStream) -> bytes:
    """Everything the node sends until it closes the connection."""
    received = bytearray()
    while data := await stream.receive_some(65536):
        received += data
    return bytes(received)


# -- a connection flood --------------------------------------------------------


@dataclass
class Flood:
    opened: int = 0


async def hold_connections(address: tuple[str, int], flood: Flood, trickle: bool) -> None:
    """Keep one connection from 127.0.0.2 open, never finishing a handshake; reopen it
    whenever the node closes it. With ``trickle``, send garbage a byte at a time."""
    while True:
        with trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                await sock.bind((FLOOD_SOURCE, 0))
                await sock.connect(address)
                flood.opened += 1
                if trickle:
                    await sock.send(b"\x00\x32")  # the length of a message 1, then a byte at a time
                while True:
                    if trickle:
                        await sock.send(b"\x00")
                    with trio.move_on_after(0.3):
                        if not await sock.recv(1):
                            break
            except OSError:
                await trio.sleep(0.01)


async def test_a_connection_flood_neither_keeps_a_keyed_peer_out_nor_floods_the_log(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG, logger="meshnode")
    monkeypatch.setattr(peers_module, "LOG_INTERVAL", LOG_INTERVAL)
    with trio.fail_after(20):
        async with running_node() as (_, address), trio.open_nursery() as flooders:
            flood = Flood()
            for n in range(FLOODERS):
                flooders.start_soon(hold_connections, address, flood, n % 2 == 1)
            await trio.sleep(0.5)  # let the flood fill the node
            began, logged_before = trio.current_time(), len(caplog.records)
            waits = []
            while trio.current_time() - began < FLOOD_SECONDS:
                started = trio.current_time()
                with trio.fail_after(JOIN_DEADLINE):
                    joined = await join(address, 2)
                waits.append(trio.current_time() - started)
                await joined.stream.aclose()
                await trio.sleep(0.3)
            flooders.cancel_scope.cancel()
    legit = identity(2).node_id
    flood_lines = [
        r.getMessage() for r in caplog.records[logged_before:] if legit not in r.getMessage()
    ]
    assert flood.opened > 2 * FLOODERS  # the node kept closing flood connections
    assert len(waits) >= 5 and max(waits) < JOIN_DEADLINE
    most = 2 * (FLOOD_SECONDS / LOG_INTERVAL + 1)  # a line per kind per interval
    assert len(flood_lines) <= most, flood_lines[:10]
    summed_up = [line for line in flood_lines if f"top sources: {FLOOD_SOURCE}" in line]
    assert summed_up and "peer connections refused or evicted" in summed_up[0]


async def test_a_connection_that_sends_no_message_1_is_closed_after_two_seconds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="meshnode")
    with trio.fail_after(6):
        async with running_node() as (_, address):
            stream = await trio.open_tcp_stream(*address)
            async with stream:
                started = trio.current_time()
                assert await read_until_closed(stream) == b""
                waited = trio.current_time() - started
    assert 1.5 < waited < 3.0  # not the whole handshake's 10 s
    assert any("timed out before message 1" in r.getMessage() for r in caplog.records)


# -- a tampered frame ------------------------------------------------------------


async def test_a_tampered_frame_closes_the_connection_with_one_line_and_no_ban(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with trio.fail_after(10):
        async with running_node() as (service, address):
            joined = await join(address, 3)
            tampered = bytearray(joined.channel.seal(m.encode(m.Ping(42))))
            tampered[5] ^= 0x10  # a bit of the ciphertext, past the 2-byte length
            logged_before = len(caplog.records)
            async with joined.stream:
                await joined.stream.send_all(bytes(tampered))
                assert await read_until_closed(joined.stream) == b""  # not even a goodbye
            while len(caplog.records) == logged_before:  # the node lingers until we close
                await trio.sleep(0.01)
            after = caplog.records[logged_before:]
            assert [r.levelno for r in after] == [logging.INFO], [r.getMessage() for r in after]
            assert "does not decrypt" in after[0].getMessage()
            assert all(r.exc_info is None for r in caplog.records)
            assert await service.ban_list() == []
            again = await join(address, 3)  # the same node is welcome at once
            await again.stream.aclose()
            assert not any(isinstance(r, m.Goodbye) for r in again.received)
