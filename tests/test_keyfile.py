"""The identity key file: PKCS#8 PEM that OpenSSL and ``cryptography`` read as theirs, and
what the operator is told when it cannot be read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from meshnode.system import datadir
from meshnode.system.keyfile import KeyFileError, decode_key, encode_key

SEED = bytes(range(32))


def pkcs8(key: Ed25519PrivateKey | X25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def test_a_written_key_is_byte_for_byte_what_cryptography_writes() -> None:
    assert encode_key(SEED) == pkcs8(Ed25519PrivateKey.from_private_bytes(SEED))


def test_a_written_key_reads_back_as_its_seed() -> None:
    assert decode_key(encode_key(SEED)) == SEED
    loaded = serialization.load_pem_private_key(encode_key(SEED), password=None)
    assert isinstance(loaded, Ed25519PrivateKey) and loaded.private_bytes_raw() == SEED


@pytest.mark.parametrize(
    "pem",
    [
        encode_key(SEED).replace(b"\n", b"\r\n"),
        b"the key of the Pi in the hall\n" + encode_key(SEED),  # RFC 7468 allows text before
    ],
)
def test_other_spellings_of_an_ed25519_key_are_read_too(pem: bytes) -> None:
    assert decode_key(pem) == SEED


@pytest.mark.parametrize(
    ("pem", "says"),
    [
        (b"", "empty"),
        (b"kept", "not a PEM private key"),
        (encode_key(SEED).replace(b"MC4C", b"MC4D"), "damaged"),
        (encode_key(SEED)[:-30] + b"\n-----END PRIVATE KEY-----\n", "damaged"),
        (pkcs8(X25519PrivateKey.from_private_bytes(SEED)), "not an Ed25519 key"),
    ],
)
def test_anything_else_is_refused_with_what_it_is(pem: bytes, says: str) -> None:
    with pytest.raises(KeyFileError, match=says):
        decode_key(pem)


def test_a_seed_of_the_wrong_size_is_our_misuse() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        encode_key(SEED[:31])


@pytest.mark.parametrize("make", [lambda key: key.write_bytes(b""), lambda key: key.mkdir()])
def test_a_key_that_cannot_be_read_says_how_to_go_on(tmp_path: Path, make: Any) -> None:
    key = tmp_path / datadir.KEY_FILE
    make(key)
    if key.is_file():
        key.chmod(0o600)
    with pytest.raises(datadir.DataDirError) as refused:
        datadir.load_or_create_identity(tmp_path, SEED)
    assert "restore it from a backup, or move it away" in str(refused.value)
    assert "chmod" not in str(refused.value)
