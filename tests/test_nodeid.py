"""Node ids (protocol/records.md §1): bech32m of the public key, and fingerprints."""

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshnode.core import bech32m
from meshnode.core.nodeid import NodeIdError, decode_node_id, encode_node_id, fingerprint

KEY = bytes(range(32))


@given(st.binary(min_size=32, max_size=32))
def test_node_ids_round_trip(key: bytes) -> None:
    text = encode_node_id(key)
    assert text.startswith("node1") and len(text) == 63
    assert decode_node_id(text) == key
    assert decode_node_id(text.upper()) == key


def test_bip350_reference_vectors_decode() -> None:
    # Valid bech32m strings from BIP-350.
    assert bech32m.decode("a", "a1lqfn3a") == b""
    assert bech32m.decode(
        "abcdef", "abcdef1l7aum6echk45nj3s0wdvt2fg8x9yrzpqzd3ryx"
    ) == bytes.fromhex("ffbbcdeb38bdab49ca307b9ac5a928398a418820")


@pytest.mark.parametrize("position", range(5, 63))
def test_any_single_typo_is_rejected(position: int) -> None:
    text = encode_node_id(KEY)
    wrong = "q" if text[position] != "q" else "p"
    with pytest.raises(NodeIdError, match="checksum"):
        decode_node_id(text[:position] + wrong + text[position + 1 :])


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "does not start with node1"),
        ("nonsense", "does not start with node1"),
        ("node1", "separator"),
        ("mesh1qwss00lnecgtu8tsm5vwwj7qn9n7f43snwjs6hcamjrxgyj4xxuqsrve55", "start with node1"),
        ("Node1qwss00lnecgtu8tsm5vwwj7qn9n7f43snwjs6hcamjrxgyj4xxuqsrve55", "mixed"),
        ("node1qwss00lnecgtu8tsm5vwwj7qn9n7f43snwjs6hcamjrxgyj4xxuqsrve5b", "character"),
        ("node1" + "q" * 100, "too long"),
    ],
)
def test_malformed_ids_say_why(text: str, why: str) -> None:
    with pytest.raises(NodeIdError, match=why):
        decode_node_id(text)


def test_an_id_of_another_length_is_rejected() -> None:
    with pytest.raises(NodeIdError, match="length"):
        decode_node_id(bech32m.encode("node", bytes(31)))


@given(st.text(max_size=100))
def test_decoding_is_total(text: str) -> None:
    with contextlib.suppress(NodeIdError):
        decode_node_id(text)


def test_fingerprint_is_two_groups_of_five_from_the_key_hash() -> None:
    assert fingerprint(KEY) == fingerprint(KEY)
    assert fingerprint(KEY) != fingerprint(bytes(32))
    first, second = fingerprint(KEY).split("-")
    assert len(first) == len(second) == 5
    assert set(first + second) <= set(bech32m.CHARSET)
