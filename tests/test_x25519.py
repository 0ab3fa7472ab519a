"""X25519 as RFC 7748 defines it: its test vectors, agreement with an independent
implementation, and a refusal (not zeros) for public keys of small order."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from hypothesis import given
from hypothesis import strategies as st

from meshnode.core.x25519 import AllZeroOutput, KeyPair

# RFC 7748 §6.1.
ALICE_PRIVATE = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
ALICE_PUBLIC = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
BOB_PRIVATE = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
BOB_PUBLIC = bytes.fromhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
SHARED = bytes.fromhex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")

# Points of small order (RFC 7748 §7, and the list libsodium checks against).
SMALL_ORDER = [
    bytes(32),
    bytes([1]) + bytes(31),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
]


def test_the_rfc_7748_key_pairs_and_shared_secret() -> None:
    alice, bob = KeyPair(ALICE_PRIVATE), KeyPair(BOB_PRIVATE)
    assert (alice.public, bob.public) == (ALICE_PUBLIC, BOB_PUBLIC)
    assert alice.exchange(BOB_PUBLIC) == bob.exchange(ALICE_PUBLIC) == SHARED


@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32))
def test_it_agrees_with_openssl_for_any_keys(mine: bytes, theirs: bytes) -> None:
    """Any 32 bytes as the other side's public key: the top bit set, u past p, twist points."""
    ours, reference = KeyPair(mine), X25519PrivateKey.from_private_bytes(mine)
    assert ours.public == reference.public_key().public_bytes_raw()
    try:
        expected: bytes | None = reference.exchange(X25519PublicKey.from_public_bytes(theirs))
    except ValueError:  # OpenSSL's refusal of an all-zero output
        expected = None
    try:
        got: bytes | None = ours.exchange(theirs)
    except AllZeroOutput:
        got = None
    assert got == expected


@pytest.mark.parametrize("point", SMALL_ORDER, ids=lambda point: point.hex()[:8])
def test_a_public_key_of_small_order_is_refused_not_answered_with_zeros(point: bytes) -> None:
    with pytest.raises(AllZeroOutput):
        KeyPair(ALICE_PRIVATE).exchange(point)


@pytest.mark.parametrize("size", [0, 31, 33])
def test_keys_of_the_wrong_size_are_refused_before_libsodium_reads_them(size: int) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        KeyPair(bytes(size))
    with pytest.raises(ValueError, match="32 bytes"):
        KeyPair(ALICE_PRIVATE).exchange(bytes(size))


def test_the_private_key_is_never_shown() -> None:
    assert ALICE_PRIVATE.hex() not in repr(KeyPair(ALICE_PRIVATE))
