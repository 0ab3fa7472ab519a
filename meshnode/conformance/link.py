"""One connection to a node under test, driven by hand: blocking, bounded, byte-exact.

The suite plays a peer that follows ``protocol/peer.md`` where a case needs it and breaks
it where a case is about that. Everything it sends is built from meshnode's own codecs,
or from raw msgpack where a case needs bytes those codecs would never produce.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable

import msgpack
from msgspec import Struct

from meshnode.core import messages as m
from meshnode.core.channel import ChannelError, SecureChannel
from meshnode.core.handshake import HandshakeError, PeerHandshake
from meshnode.core.identity import Identity
from meshnode.core.x25519 import KEY_SIZE, KeyPair

RECEIVE_SIZE = 65536


class Failure(Exception):
    """The node under test did not do what the spec says; the message says what it did."""


class Target(Struct, frozen=True):
    host: str
    port: int
    network_key: bytes
    timeout: float


def fresh_identity() -> Identity:
    """A throwaway identity per case, so a ban one case earns never blocks the next."""
    return Identity(os.urandom(32))


class Link:
    """A TCP connection to the target; ``handshake`` turns it into a session."""

    def __init__(self, target: Target, identity: Identity | None = None) -> None:
        self.target = target
        self.identity = identity or fresh_identity()
        self.sock = socket.create_connection((target.host, target.port), timeout=target.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.channel: SecureChannel | None = None
        self.first_message = b""
        self._decoder = m.MessageDecoder()
        self._pending = b""
        self._unread: list[m.Message] = []  # decoded, not yet handed out
        self.features: frozenset[str] = frozenset()  # what our hello listed
        self.target_hello: m.Hello | None = None  # the node's hello, once read

    def __enter__(self) -> Link:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def handshake(self, network_key: bytes | None = None) -> Link:
        shake = PeerHandshake(
            initiator=True,
            identity=self.identity,
            static_key=KeyPair(os.urandom(KEY_SIZE)),
            network_key=self.target.network_key if network_key is None else network_key,
            rng=lambda: os.urandom(32),
        )
        self.first_message = shake.start()
        self.sock.sendall(self.first_message)
        while shake.established is None:
            data = self._recv()
            if not data:
                raise Failure("the node closed the connection during the handshake")
            try:
                answer = shake.receive_data(data)
            except HandshakeError as exc:
                raise Failure(f"the node's handshake message is wrong: {exc}") from None
            if answer:
                self.sock.sendall(answer)
        self.channel = shake.established.channel
        self._pending = shake.established.leftover
        return self

    def send(self, *messages: m.Message) -> None:
        for message in messages:
            if isinstance(message, m.Hello):
                self.features = frozenset(message.features)
        self.send_plain(b"".join(m.encode(message) for message in messages))

    def send_raw(self, *objects: object) -> None:
        """Send msgpack values as they are, whatever shape they have."""
        self.send_plain(b"".join(msgpack.packb(obj, use_bin_type=True) for obj in objects))

    def send_plain(self, plaintext: bytes) -> None:
        """Send; a node that closes meanwhile is no failure here (what it said can be read)."""
        assert self.channel is not None, "handshake first"
        # e.g. goodbye 1 before a 2 MiB message was all sent: the case reads the goodbye.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.sock.sendall(self.channel.seal(plaintext))

    def receive_until(self, done: Callable[[m.Message], bool]) -> list[m.Message]:
        """Messages until one satisfies ``done`` or the node closes; Failure on a timeout."""
        assert self.channel is not None, "handshake first"
        received: list[m.Message] = []
        data, self._pending = self._pending, b""
        while True:
            if data:
                try:
                    decoded = self._decoder.feed(self.channel.open(data))
                    self._unread += [self._feature_message(x) for x in decoded]
                except (ChannelError, m.PeerProtocolError) as exc:
                    raise Failure(f"the node sent bytes that do not decode: {exc}") from None
            while self._unread:
                message = self._unread.pop(0)
                received.append(message)
                if done(message):
                    return received
            data = self._recv()
            if not data:
                return received

    def _feature_message(self, message: m.Message | m.Deferred) -> m.Message:
        """A feature's message, decoded; Failure if our hello did not list its feature (§4.3)."""
        if not isinstance(message, m.Deferred):
            return message
        feature = m.FEATURE_OF_TYPE[message.kind]
        if feature not in self.features:
            raise Failure(f"the node sent a {feature} message to a peer that did not list it")
        return m.parse_deferred(message)

    def goodbye(self) -> m.Goodbye:
        """The goodbye the node ends the session with; Failure if it closes without one."""
        received = self.receive_until(lambda message: isinstance(message, m.Goodbye))
        goodbyes = [x for x in received if isinstance(x, m.Goodbye)]
        if not goodbyes:
            raise Failure("the node closed the connection without a goodbye")
        return goodbyes[0]

    def hello(self) -> m.Hello:
        received = self.receive_until(lambda message: isinstance(message, m.Hello))
        if not received or not isinstance(received[0], m.Hello):
            raise Failure(f"the node's first message is not hello: {received[:1]}")
        return received[0]

    def closed_silently(self) -> None:
        """Pass if the node closes the connection having sent nothing more."""
        data = self._recv()
        if data:
            raise Failure(f"the node answered ({len(data)} bytes) where it must close silently")

    def _recv(self) -> bytes:
        try:
            return self.sock.recv(RECEIVE_SIZE)
        except TimeoutError:
            raise Failure(f"no answer within {self.target.timeout:g} s") from None
        except ConnectionResetError:
            return b""
