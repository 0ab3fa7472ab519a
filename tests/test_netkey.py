"""Network keys and their invites (protocol/peer.md §2)."""

import hashlib

import pytest

from meshnode.core.netkey import (
    PUBLIC_NETWORK_KEY,
    NetworkKeyError,
    decode_network_key,
    encode_network_key,
)


def test_the_public_network_key_is_the_documented_hash() -> None:
    assert hashlib.sha256(b"meshnode public network v1").digest() == PUBLIC_NETWORK_KEY
    assert encode_network_key(PUBLIC_NETWORK_KEY) == (
        "mesh124y05y4elujj8t7vg8j0fct6k57nhe64v7wcdghpekwm696kalcqxlwejc"
    )


def test_invites_round_trip() -> None:
    key = bytes(range(32))
    invite = encode_network_key(key)
    assert invite.startswith("mesh1")
    assert decode_network_key(f"  {invite}\n") == key


@pytest.mark.parametrize(
    "text",
    ["", "mesh1", "node1qwss00lnecgtu8tsm5vwwj7qn9n7f43snwjs6hcamjrxgyj4xxuqsrve55", "passphrase"],
)
def test_anything_but_an_invite_is_refused(text: str) -> None:
    with pytest.raises(NetworkKeyError):
        decode_network_key(text)


def test_a_key_is_32_bytes() -> None:
    with pytest.raises(NetworkKeyError):
        encode_network_key(b"short")
