"""The record format (protocol/records.md): vectors, signing, strict decoding."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshnode.conformance import ed25519, record_vectors
from meshnode.core.identity import Identity
from meshnode.core.keypath import KeyPathError, check_key
from meshnode.core.record import (
    MAX_VALUE_BYTES,
    Invalid,
    RecordError,
    decode_many,
    decode_record,
    sign_record,
    signing_input,
)
from tests.helpers import T0, identity, record

VECTORS_DIR = Path(__file__).parents[1] / "protocol" / "vectors"
VECTORS = json.loads((VECTORS_DIR / "records.json").read_text(encoding="utf-8"))


def test_committed_vectors_are_what_the_generator_produces() -> None:
    assert (VECTORS_DIR / "records.json").read_text(encoding="utf-8") == record_vectors.render()


def test_integers_beyond_what_a_double_holds_are_strings() -> None:
    for vector in VECTORS["valid"]:
        assert all(type(vector[f]) is str for f in ("seq", "created_ms"))
        assert vector["expires_ms"] is None or type(vector["expires_ms"]) is str


@pytest.mark.parametrize("vector", VECTORS["valid"], ids=lambda v: v["name"])
def test_valid_vector_signs_to_the_same_bytes_and_id(vector: dict[str, Any]) -> None:
    author = Identity(bytes.fromhex(vector["seed"]))
    assert author.node_id == vector["author"]
    assert author.public_key.hex() == vector["author_public_key"]
    raw = bytes.fromhex(vector["record"])
    decoded = decode_record(raw)
    resigned = sign_record(
        author,
        seq=int(vector["seq"]),
        key=vector["key"],
        value=decoded.value,
        created_ms=int(vector["created_ms"]),
        expires_ms=None if vector["expires_ms"] is None else int(vector["expires_ms"]),
    )
    assert resigned.raw == raw
    assert signing_input(raw).hex() == vector["signing_input"]
    assert resigned.signature.hex() == vector["signature"]
    assert resigned.id.hex() == decoded.id.hex() == vector["id"]


@pytest.mark.parametrize("vector", VECTORS["invalid"], ids=lambda v: v["name"])
def test_invalid_vector_is_rejected_for_its_reason(vector: dict[str, Any]) -> None:
    with pytest.raises(RecordError) as info:
        decode_record(bytes.fromhex(vector["record"]))
    assert info.value.reason == vector["reason"]


STRICT = [v for v in VECTORS["invalid"] if "lax" in v]


@pytest.mark.parametrize("vector", STRICT, ids=lambda v: v["name"])
def test_each_strict_signature_vector_passes_the_lax_equation_it_names(
    vector: dict[str, Any],
) -> None:
    """So a verifier that checks only that equation accepts the vector, and its test fails."""
    raw = bytes.fromhex(vector["record"])
    author, signature = raw[4:36], raw[-64:]
    cofactored = vector["lax"] == "cofactored"
    assert ed25519.holds(author, signature, signing_input(raw), cofactored=cofactored)


def test_the_strict_vectors_cover_every_check_of_section_6() -> None:
    names = " ".join(v["name"] for v in STRICT)
    for check in (
        "A of order",
        "R of order",
        "S not below L",
        "A not canonical",
        "R not canonical",
        "sign bit set",
        "A and R the identity point, S = 0",
    ):
        assert check in names


def test_every_rejection_reason_has_a_vector() -> None:
    assert {v["reason"] for v in VECTORS["invalid"]} == {r.value for r in Invalid}


def test_a_record_reads_back_equal() -> None:
    original = record(identity(1), key="stats/load", value={"cpu": 0.4}, expires_ms=T0 + 1)
    decoded = decode_record(original.raw)
    assert decoded == original and not decoded != original  # noqa: SIM202 - both operators
    assert hash(decoded) == hash(original)
    assert decoded != record(identity(1), key="stats/load", value={"cpu": 0.5})
    assert (decoded.key, decoded.value, decoded.expires_ms) == ("stats/load", {"cpu": 0.4}, T0 + 1)


def test_a_record_signed_by_one_author_cannot_claim_another() -> None:
    raw = bytearray(record(identity(1)).raw)
    raw[4:36] = identity(2).public_key  # after 0x98, version 0x01, bin8 header c4 20
    with pytest.raises(RecordError) as info:
        decode_record(bytes(raw))
    assert info.value.reason is Invalid.BAD_SIGNATURE


@given(st.binary(max_size=300))
def test_decoding_is_total(data: bytes) -> None:
    with contextlib.suppress(RecordError):
        decode_record(data)


@given(st.data())
def test_any_single_byte_change_is_rejected(data: st.DataObject) -> None:
    raw = bytearray(record(identity(1), value={"a": [1, 2.5, "x"]}).raw)
    index = data.draw(st.integers(0, len(raw) - 1))
    raw[index] ^= data.draw(st.integers(1, 255))
    with pytest.raises(RecordError):
        decode_record(bytes(raw))


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"key": "a//b"}, Invalid.BAD_KEY),
        ({"value": b"x" * MAX_VALUE_BYTES}, Invalid.TOO_LARGE),
        ({"value": float("nan")}, Invalid.BAD_VALUE),
        ({"value": {1: 2}}, Invalid.BAD_VALUE),
        ({"seq": 0}, Invalid.BAD_SEQ),
        ({"seq": 2**63}, Invalid.BAD_SEQ),
        ({"created_ms": -1}, Invalid.BAD_TIME),
        ({"expires_ms": T0}, Invalid.BAD_TIME),
    ],
)
def test_signing_refuses_invalid_fields(fields: dict[str, Any], reason: Invalid) -> None:
    args: dict[str, Any] = {"seq": 1, "key": "k", "value": "v", "created_ms": T0, **fields}
    with pytest.raises(RecordError) as info:
        sign_record(identity(1), **args)
    assert info.value.reason is reason


def test_decode_many_keeps_the_good_and_explains_the_bad() -> None:
    good = record(identity(1))
    records, errors = decode_many([good.raw, b"junk", good.raw[:-1]])
    assert records == [good]
    assert [e.reason for e in errors] == [Invalid.MALFORMED, Invalid.MALFORMED]


def test_tombstones_end_at_retention_or_expiry() -> None:
    tombstone = record(identity(1), value=None)
    assert tombstone.is_tombstone
    assert tombstone.dead_at(1000) == T0 + 1000
    assert record(identity(1), value=None, expires_ms=T0 + 10).dead_at(1000) == T0 + 10
    assert record(identity(1)).dead_at(1000) is None


@pytest.mark.parametrize(
    "key", ["a", "profile/name", "café/☕", "a.b/c-d_e~f", "x" * 256, "..a/b..", "a/.b"]
)
def test_valid_keys(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize(
    "key",
    ["", "/a", "a/", "a//b", "a/./b", "..", "a b", "a\tb", "a\x7fb", "a\x85b", "é" * 129, "\ud800"],
)
def test_invalid_keys(key: str) -> None:
    with pytest.raises(KeyPathError):
        check_key(key)
