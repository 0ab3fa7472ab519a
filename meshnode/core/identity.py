"""A node's Ed25519 signing identity, held in memory.

The key is injected (a 32-byte seed), never generated or read from disk here:
``meshnode.keyfile`` owns the file, the runtime owns the randomness.
"""

from __future__ import annotations

import functools

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from meshnode.core.nodeid import encode_node_id, fingerprint

SEED_SIZE = 32
SIGNATURE_SIZE = 64


class Identity:
    """An Ed25519 key pair with the node id derived from it."""

    __slots__ = ("_private", "fingerprint", "node_id", "public_key")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_SIZE:
            raise ValueError(f"an Ed25519 seed is {SEED_SIZE} bytes, got {len(seed)}")
        self._private = Ed25519PrivateKey.from_private_bytes(seed)
        self.public_key: bytes = self._private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.node_id: str = encode_node_id(self.public_key)
        self.fingerprint: str = fingerprint(self.public_key)

    def seed(self) -> bytes:
        """The private seed, for ``meshnode.keyfile`` to persist."""
        return self._private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    def __repr__(self) -> str:
        return f"Identity({self.node_id})"


@functools.lru_cache(maxsize=4096)
def _public_key(raw: bytes) -> Ed25519PublicKey:
    """Loading a key costs a sixth of a verify; authors repeat, so cache them."""
    return Ed25519PublicKey.from_public_bytes(raw)


def verify_signature(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True if ``signature`` is ``public_key``'s Ed25519 signature of ``message``."""
    try:
        _public_key(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True
