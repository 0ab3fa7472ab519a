"""Framing and encryption of a peer connection, after and during the handshake.

Every Noise message on the wire, handshake or transport, is preceded by its
length as 2 bytes big-endian, so it is at most 65,535 bytes
(``protocol/peer.md`` §3). After the handshake, application bytes are cut into
chunks of at most 65,519 bytes, each encrypted into one transport message.

Any failure, a frame that does not decrypt, a reordered, replayed or truncated
frame (the nonces no longer match), or nonce exhaustion, is a
``ChannelError``: the connection is finished, as Noise requires.
"""

from __future__ import annotations

from meshnode.core.noise import TAGLEN, CipherState, NoiseError

MAX_FRAME = 65535
MAX_CHUNK = MAX_FRAME - TAGLEN
_HEADER = 2


class ChannelError(Exception):
    """The peer's bytes cannot be accepted; close the connection."""


def frame(message: bytes) -> bytes:
    if len(message) > MAX_FRAME:
        raise ValueError(f"a frame holds at most {MAX_FRAME} bytes")
    return len(message).to_bytes(_HEADER, "big") + message


class FrameDecoder:
    """Length-prefixed frames out of a byte stream; buffers at most one frame."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        # The usual case, one whole frame in one read: no copy through the buffer.
        whole = len(data) >= _HEADER and int.from_bytes(data[:_HEADER]) + _HEADER == len(data)
        if whole and not self._buffer:
            return [data[_HEADER:]]
        self._buffer += data
        frames = []
        while len(self._buffer) >= _HEADER:
            size = int.from_bytes(self._buffer[:_HEADER], "big")
            end = _HEADER + size
            if len(self._buffer) < end:
                break
            frames.append(bytes(self._buffer[_HEADER:end]))
            del self._buffer[:end]
        return frames

    def take_pending(self) -> bytes:
        """The bytes of an incomplete frame, handed over (the decoder is left empty)."""
        pending = bytes(self._buffer)
        self._buffer.clear()
        return pending


class SecureChannel:
    """Encrypts outgoing and decrypts incoming application bytes."""

    def __init__(self, send: CipherState, receive: CipherState) -> None:
        self._send = send
        self._receive = receive
        self._frames = FrameDecoder()
        self._failed = False

    def _check(self) -> None:
        if self._failed:
            raise ChannelError("the channel failed before; the connection is finished")

    def seal(self, plaintext: bytes) -> bytes:
        self._check()
        out = bytearray()
        try:
            if 0 < len(plaintext) <= MAX_CHUNK:
                return frame(self._send.encrypt_with_ad(b"", plaintext))
            for start in range(0, len(plaintext), MAX_CHUNK):
                chunk = plaintext[start : start + MAX_CHUNK]
                out += frame(self._send.encrypt_with_ad(b"", chunk))
        except NoiseError as exc:
            self._failed = True
            raise ChannelError(f"cannot encrypt: {exc}") from None
        return bytes(out)

    def open(self, data: bytes) -> bytes:
        self._check()
        plaintext = bytearray()
        frames = self._frames.feed(data)
        try:
            if len(frames) == 1:
                return self._receive.decrypt_with_ad(b"", frames[0])
            for message in frames:
                plaintext += self._receive.decrypt_with_ad(b"", message)
        except NoiseError as exc:
            self._failed = True
            raise ChannelError(f"a frame does not decrypt: {exc}") from None
        return bytes(plaintext)
