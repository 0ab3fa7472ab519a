"""X25519 (RFC 7748): the DH function of the peer protocol's Noise handshake (Noise §12.1).

Computed by libsodium, which ``core.identity`` has loaded for Ed25519 already.
``cryptography``'s X25519 loads its whole OpenSSL backend at the first key, some
20 ms of CPU in the first handshake of every daemon, when a mesh forms and eight
of them share two cores, and it takes about twice as long for each key and DH.
"""

from __future__ import annotations

from nacl.bindings import crypto_scalarmult, crypto_scalarmult_base
from nacl.exceptions import RuntimeError as SodiumError

KEY_SIZE = 32


class AllZeroOutput(ValueError):
    """The DH gave all zeros: the other side's public key is of small order (RFC 7748 §6.1)."""


class KeyPair:
    """An X25519 private key and its public key; the private key is clamped when used."""

    __slots__ = ("_private", "public")

    def __init__(self, private: bytes) -> None:
        if len(private) != KEY_SIZE:
            raise ValueError(f"an X25519 private key is {KEY_SIZE} bytes, got {len(private)}")
        self._private = bytes(private)
        self.public: bytes = crypto_scalarmult_base(self._private)

    def exchange(self, public: bytes) -> bytes:
        """The shared secret with ``public``; AllZeroOutput for a key of small order."""
        if len(public) != KEY_SIZE:
            raise ValueError(f"an X25519 public key is {KEY_SIZE} bytes, got {len(public)}")
        try:
            return crypto_scalarmult(self._private, bytes(public))
        except SodiumError:  # libsodium refuses to return the all-zero output
            raise AllZeroOutput("X25519 gave an all-zero output") from None

    def __repr__(self) -> str:
        return f"KeyPair(public={self.public.hex()})"
