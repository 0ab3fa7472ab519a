"""Node ids: the printable form of a node's Ed25519 public key.

A node id is the bech32m encoding (see ``bech32m``) of the 32-byte public key
under the prefix ``node``: 63 characters such as ``node1qw508d...``. It
round-trips exactly and any single typo is rejected by the checksum.

The fingerprint is for people comparing two ids at a glance: the first 50 bits
of SHA-256 over the public key, in the same alphabet, as two groups of five
(``7xk2q-d9fvm``).

This module imports no cryptography backend, so the CLI can validate ids
cheaply.
"""

from __future__ import annotations

import functools

from meshnode.core import bech32m

NODE_ID_PREFIX = "node"
PUBLIC_KEY_SIZE = 32


class NodeIdError(ValueError):
    """A string is not a valid node id."""


@functools.lru_cache(maxsize=4096)
def encode_node_id(public_key: bytes) -> str:
    """Printable node id for a 32-byte Ed25519 public key.

    Cached: every record shown through the API names its author, authors
    repeat, and bech32m in Python costs ~90 µs.
    """
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise NodeIdError(f"a public key is {PUBLIC_KEY_SIZE} bytes, got {len(public_key)}")
    return bech32m.encode(NODE_ID_PREFIX, public_key)


def decode_node_id(text: str) -> bytes:
    """Public key bytes of a printable node id, or ``NodeIdError`` saying why not."""
    try:
        return bech32m.decode_fixed(NODE_ID_PREFIX, text, PUBLIC_KEY_SIZE)
    except bech32m.Bech32Error as exc:
        raise NodeIdError(f"invalid node id {text!r}: {exc}") from None


def fingerprint(public_key: bytes) -> str:
    """Short, comparable digest of a public key: ``xxxxx-xxxxx``."""
    import hashlib  # here, not at the top: the CLI validates ids and must start fast

    digest = hashlib.sha256(public_key).digest()
    bits = int.from_bytes(digest[:7], "big") >> 6  # the first 50 bits
    chars = [bech32m.CHARSET[(bits >> (5 * (9 - i))) & 31] for i in range(10)]
    return "".join(chars[:5]) + "-" + "".join(chars[5:])
