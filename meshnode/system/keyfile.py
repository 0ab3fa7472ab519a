"""The identity key file's format: an Ed25519 seed as PKCS#8 PEM (RFC 8410).

A key this node wrote is always the one 48-byte DER form RFC 8410 gives, so it
is read and written here with a fixed prefix: ``cryptography``'s serialization
package costs a tenth of the daemon's imports, and every start reads the key.
Any other valid encoding (a key made by ``openssl genpkey``, with its public
key attached, say) goes to ``cryptography``, which reads them all.
"""

from __future__ import annotations

import base64
import binascii

from meshnode.core.identity import SEED_SIZE

# SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 (Ed25519) }, OCTET STRING { OCTET STRING seed } }
_DER_PREFIX = bytes.fromhex("302e020100300506032b657004220420")
_BEGIN = b"-----BEGIN PRIVATE KEY-----\n"
_END = b"-----END PRIVATE KEY-----\n"


class KeyFileError(ValueError):
    """The file is not an unencrypted PKCS#8 Ed25519 private key; the message says what it is,
    to follow "the key is"."""


def encode_key(seed: bytes) -> bytes:
    """The PEM of ``seed``: byte for byte what ``cryptography`` writes for the key."""
    if len(seed) != SEED_SIZE:
        raise ValueError(f"an Ed25519 seed is {SEED_SIZE} bytes, got {len(seed)}")
    return _BEGIN + base64.b64encode(_DER_PREFIX + seed) + b"\n" + _END


def decode_key(pem: bytes) -> bytes:
    """The 32-byte seed in ``pem``; ``KeyFileError`` if there is none."""
    der = _der(pem)
    if der is not None and len(der) == len(_DER_PREFIX) + SEED_SIZE and der.startswith(_DER_PREFIX):
        return der[len(_DER_PREFIX) :]
    return _decode_any(pem)


def _der(pem: bytes) -> bytes | None:
    lines = pem.strip().splitlines()
    if len(lines) < 3 or lines[0] + b"\n" != _BEGIN or lines[-1] + b"\n" != _END:
        return None
    try:
        return base64.b64decode(b"".join(lines[1:-1]), validate=True)
    except binascii.Error:
        return None


def _decode_any(pem: bytes) -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if not pem.strip():
        raise KeyFileError("empty")
    if b"-----BEGIN" not in pem:
        raise KeyFileError("not a PEM private key")
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError("damaged: what it holds is not a private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError("not an Ed25519 key")
    return key.private_bytes_raw()
