"""Network keys: the shared secret that keeps outsiders out of a mesh.

A network key is 32 random bytes (never a passphrase: it is the Noise PSK, and
a guessable PSK would let anyone in). It is passed around as an invite string,
bech32m under the prefix ``mesh``: ``mesh1...``. A node given no key is on the
public default network, whose key is published here and in
``protocol/peer.md``; it keeps meshnode traffic apart from other protocols,
not outsiders out.
"""

from __future__ import annotations

import hashlib

from meshnode.core import bech32m

NETWORK_KEY_PREFIX = "mesh"
NETWORK_KEY_SIZE = 32
PUBLIC_NETWORK_KEY = hashlib.sha256(b"meshnode public network v1").digest()


class NetworkKeyError(ValueError):
    """A string that is not a valid network key invite."""


def encode_network_key(key: bytes) -> str:
    if len(key) != NETWORK_KEY_SIZE:
        raise NetworkKeyError(f"a network key is {NETWORK_KEY_SIZE} bytes, got {len(key)}")
    return bech32m.encode(NETWORK_KEY_PREFIX, key)


def decode_network_key(text: str) -> bytes:
    try:
        key = bech32m.decode(NETWORK_KEY_PREFIX, text.strip())
    except bech32m.Bech32Error as exc:
        raise NetworkKeyError(f"invalid network key: {exc}") from None
    if len(key) != NETWORK_KEY_SIZE:
        raise NetworkKeyError("invalid network key: wrong length")
    return key
