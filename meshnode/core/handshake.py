"""meshnode's handshake: ``Noise_XXpsk0_25519_ChaChaPoly_SHA256`` with identity binding.

Specification: ``protocol/peer.md`` §2. Three messages, each framed as in
``channel``::

    1. initiator -> responder   psk, e            payload: empty
    2. responder -> initiator   e, ee, s, es      payload: binding
    3. initiator -> responder   s, se             payload: binding

Why psk0: the network key is mixed in before anything else, so a node
without it cannot produce a first message that decrypts. The responder drops
such a connection before any Diffie-Hellman and without a reply: an outsider
learns nothing, not even that a meshnode listens. Message 1 could be replayed
by an eavesdropper; a bounded cache of recent first messages refuses replays.

The Noise static key is a fresh X25519 key per process. The *binding* ties
it to the node's long-term Ed25519 identity as libp2p does: the 32-byte
Ed25519 public key followed by its 64-byte signature over
``BINDING_CONTEXT || noise_static_public_key``. A binding that does not verify,
or that names this node itself, ends the handshake.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from msgspec import Struct

from meshnode.core.channel import FrameDecoder, SecureChannel, frame
from meshnode.core.identity import Identity, verify_signature
from meshnode.core.noise import HandshakeState, NoiseError
from meshnode.core.x25519 import KeyPair

PROTOCOL_NAME = "Noise_XXpsk0_25519_ChaChaPoly_SHA256"
PROLOGUE = b"meshnode/peer/1"
BINDING_CONTEXT = b"meshnode/noise-static-key/v1\x00"
BINDING_SIZE = 96
REPLAY_CACHE_SIZE = 16384


class HandshakeError(Exception):
    """The handshake failed; ``reason`` is a stable code for logs and metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class Established(Struct, frozen=True):
    """A finished handshake: who the peer is, and the channel to talk to it."""

    remote_node: bytes  # the peer's Ed25519 public key
    channel: SecureChannel
    handshake_hash: bytes
    leftover: bytes  # bytes that arrived after the last handshake message


class ReplayCache:
    """Remembers recent first messages; a bounded set, oldest forgotten first."""

    def __init__(self, capacity: int = REPLAY_CACHE_SIZE) -> None:
        self._capacity = capacity
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def check_and_add(self, message: bytes) -> bool:
        """True if ``message`` is new (and now remembered), False for a replay."""
        if message in self._seen:
            return False
        self._seen[message] = None
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        return True


def binding(identity: Identity, static_public: bytes) -> bytes:
    return identity.public_key + identity.sign(BINDING_CONTEXT + static_public)


class PeerHandshake:
    """One side of the handshake: bytes in, bytes out, until ``established`` is set."""

    def __init__(
        self,
        *,
        initiator: bool,
        identity: Identity,
        static_key: KeyPair,
        network_key: bytes,
        rng: Callable[[], bytes],
        replay_cache: ReplayCache | None = None,
    ) -> None:
        self.initiator = initiator
        self._identity = identity
        self._binding = binding(identity, static_key.public)
        self._noise = HandshakeState(
            PROTOCOL_NAME,
            initiator=initiator,
            prologue=PROLOGUE,
            s=static_key,
            psks=[network_key],
            rng=rng,
        )
        self._replays = replay_cache
        self._frames = FrameDecoder()
        self._received = 0
        self._remote_node: bytes | None = None
        self._failed = False
        self.established: Established | None = None

    def start(self) -> bytes:
        """The bytes to send first: message 1 for the initiator, nothing for the responder."""
        return self._write(b"") if self.initiator else b""

    def receive_data(self, data: bytes) -> bytes:
        """Take received bytes; return the bytes to send in answer (maybe none).

        Raises ``HandshakeError`` once, after which the connection must close.
        """
        if self._failed or self.established is not None:
            raise HandshakeError("state", "the handshake is over")
        out = bytearray()
        frames = self._frames.feed(data)
        try:
            while frames and self.established is None:
                out += self._on_message(frames.pop(0))
        except HandshakeError:
            self._failed = True
            raise
        if self.established is not None:
            leftover = b"".join(frame(f) for f in frames) + self._frames.take_pending()
            self.established = Established(
                self.established.remote_node,
                self.established.channel,
                self.established.handshake_hash,
                leftover,
            )
        return bytes(out)

    def _on_message(self, message: bytes) -> bytes:
        self._received += 1
        if not self.initiator and self._received == 1:
            self._read_first(message)
            return self._write(self._binding)
        self._check_binding(self._read(message))
        if self.initiator:
            answer = self._write(self._binding)
            self._finish()
            return answer
        self._finish()
        return b""

    def _read_first(self, message: bytes) -> None:
        try:
            payload = self._noise.read_message(message)
        except NoiseError as exc:
            raise HandshakeError("network-key", f"message 1 does not decrypt ({exc})") from None
        # It decrypted, so the sender holds the network key.
        if payload:
            raise HandshakeError("protocol", "message 1 must carry no payload")
        if self._replays is not None and not self._replays.check_and_add(message):
            raise HandshakeError("replay", "message 1 was seen before")

    def _read(self, message: bytes) -> bytes:
        try:
            return self._noise.read_message(message)
        except NoiseError as exc:
            raise HandshakeError("protocol", f"message {self._received} failed: {exc}") from None

    def _write(self, payload: bytes) -> bytes:
        try:
            return frame(self._noise.write_message(payload))
        except NoiseError as exc:
            raise HandshakeError("protocol", str(exc)) from None

    def _check_binding(self, payload: bytes) -> None:
        if len(payload) != BINDING_SIZE:
            raise HandshakeError("binding", "the identity binding is not 96 bytes")
        node, signature = payload[:32], payload[32:]
        static = self._noise.remote_static
        if static is None or not verify_signature(node, signature, BINDING_CONTEXT + static):
            raise HandshakeError("binding", "the identity binding does not verify")
        if node == self._identity.public_key:
            raise HandshakeError("self", "connected to this node itself")
        self._remote_node = node

    def _finish(self) -> None:
        result = self._noise.result()
        assert self._remote_node is not None
        self.established = Established(
            remote_node=self._remote_node,
            channel=SecureChannel(result.send, result.receive),
            handshake_hash=result.handshake_hash,
            leftover=b"",
        )
