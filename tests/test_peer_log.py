"""What an operator reads in the log as peers come and go, with two real peer services
on loopback: a line when a peer connects and one when it is gone, not one per session.

Two nodes that learn of each other at once dial each other at once, and the duplicate
rule (§5.5) keeps one of the two sessions. That is how every mesh forms at an event,
so the session it closes is a detail for the debug log, not a disconnection; but when
it closes the session the log named, the log names the one kept, so that the address
and direction an operator greps for are the session's that runs.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import pytest
import trio

from meshnode.core.netkey import PUBLIC_NETWORK_KEY
from meshnode.engine.settings import PeerSettings
from meshnode.runtime.peers import PeerService
from tests.engine_driver import peer_service
from tests.helpers import identity

pytestmark = pytest.mark.slow


def free_ports(count: int) -> list[int]:
    """Ports of 127.0.0.1 that nothing listens on just now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def node_dialling(who: int, port: int, peer_port: int) -> PeerService:
    config = PeerSettings(
        network_key=PUBLIC_NETWORK_KEY,
        listen=(("127.0.0.1", port),),
        peers=(("127.0.0.1", peer_port),),
    )
    return peer_service(config, who=who)


def lines(records: list[logging.LogRecord], level: int, about: str) -> Iterator[str]:
    for record in records:
        if record.levelno == level and about in record.getMessage():
            yield record.getMessage()


async def test_two_nodes_dialling_each_other_at_once_log_one_connection_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="meshnode")
    ports = free_ports(2)
    nodes = [node_dialling(1, ports[0], ports[1]), node_dialling(2, ports[1], ports[0])]
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for node in nodes:
                nursery.start_soon(node.run, await node.open_listeners())
            while not all(node.sessions for node in nodes):
                await trio.sleep(0.01)
            await trio.sleep(0.3)  # long enough for the duplicate to be closed
            assert [node.sessions for node in nodes] == [1, 1]
            kept = [await node.peer_list() for node in nodes]
            logged = list(caplog.records)
            await nodes[1].goodbye()  # node 2 leaves: node 1 says so, once
            while nodes[0].sessions:
                await trio.sleep(0.01)
            gone = caplog.records[len(logged) :]
            nursery.cancel_scope.cancel()
    for peer, [session] in zip((2, 1), kept, strict=True):  # each node logs the other
        about = f"peer={identity(peer).node_id}"
        connected = list(lines(logged, logging.INFO, f"event=connected {about}"))
        assert 1 <= len(connected) <= 2  # the first session, and the one kept if not that
        assert connected[-1].endswith(
            f"address={session['address']} direction={session['direction']}"
        )
        assert not list(lines(logged, logging.INFO, f"event=disconnected {about}"))
    assert list(lines(logged, logging.DEBUG, "already connected")), "no duplicate was closed"
    about = f"event=disconnected peer={identity(2).node_id}"
    assert len(list(lines(gone, logging.INFO, about))) == 1
