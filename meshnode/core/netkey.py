"""Network keys: the shared secret that keeps outsiders out of a mesh.

A network key is 32 random bytes (never a passphrase: it is the Noise PSK, and
a guessable PSK would let anyone in). It is passed around as an invite string,
bech32m under the prefix ``mesh``: ``mesh1...``. A node given no key is on the
public default network, whose key is published here and in
``protocol/peer.md``; it keeps meshnode traffic apart from other protocols,
not outsiders out.
"""

from __future__ import annotations

from meshnode.core import bech32m

NETWORK_KEY_PREFIX = "mesh"
NETWORK_KEY_SIZE = 32
# SHA-256("meshnode public network v1"), written out so that the CLI need not
# import hashlib to start (tests/test_netkey.py checks the two agree).
PUBLIC_NETWORK_KEY = bytes.fromhex(
    "5548fa12b9ff2523afcc41e4f4e17ab53d3be755679d86a2e1cd9dbd1756eff0"
)


class NetworkKeyError(ValueError):
    """A string that is not a valid network key invite."""


def encode_network_key(key: bytes) -> str:
    if len(key) != NETWORK_KEY_SIZE:
        raise NetworkKeyError(f"a network key is {NETWORK_KEY_SIZE} bytes, got {len(key)}")
    return bech32m.encode(NETWORK_KEY_PREFIX, key)


def decode_network_key(text: str) -> bytes:
    try:
        return bech32m.decode_fixed(NETWORK_KEY_PREFIX, text, NETWORK_KEY_SIZE)
    except bech32m.Bech32Error as exc:
        raise NetworkKeyError(f"invalid network key: {exc}") from None
