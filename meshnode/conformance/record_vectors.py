"""The record format's test vectors: what ``protocol/vectors/records.json`` holds.

``python protocol/vectors/generate_records.py`` writes the file from here, and the
conformance suite sends the invalid ones to a node under test. Ed25519 signatures are
deterministic (RFC 8032), so the same seeds always give the same bytes;
``tests/test_record.py`` checks that the committed file is exactly what this module
produces and that every vector holds.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import msgpack

from meshnode.conformance import ed25519
from meshnode.core.identity import Identity
from meshnode.core.record import SIGNING_CONTEXT, Record, sign_record, signing_input

SEED_A = bytes(range(32))
SEED_B = hashlib.sha256(b"meshnode test vector author B").digest()
T0 = 1_790_000_000_000  # 2026-09-21T12:53:20Z


def _valid_cases() -> list[tuple[str, Identity, dict[str, Any]]]:
    a, b = Identity(SEED_A), Identity(SEED_B)
    return [
        ("string value", a, dict(seq=1, key="profile/name", value="Ada", created_ms=T0)),
        (
            "with expiry",
            a,
            dict(
                seq=2,
                key="offer/soldering",
                value="Bring a board, table 4",
                created_ms=T0 + 1000,
                expires_ms=T0 + 1000 + 3 * 3600 * 1000,
            ),
        ),
        (
            "structured value, map keys sorted",
            a,
            dict(
                seq=3,
                key="stats/load",
                value={"cpu": 0.4, "at": [1, -1, 255, 65536, -129], "ok": True},
                created_ms=T0 + 2000,
            ),
        ),
        ("tombstone", a, dict(seq=4, key="offer/soldering", value=None, created_ms=T0 + 3000)),
        (
            "binary value, non-ASCII key",
            b,
            dict(seq=2**40, key="café/ünïcode/☕", value=b"\x00\x01\xfe\xff", created_ms=0),
        ),
        (
            "large seq and times",
            b,
            dict(
                seq=2**63 - 1,
                key="k",
                value=[None, 1.5, "", b"", {}, []],
                created_ms=2**63 - 2,
                expires_ms=2**63 - 1,
            ),
        ),
    ]


def _describe(record: Record, seed: bytes, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "seed": seed.hex(),
        "author": record.author_id,
        "author_public_key": record.author.hex(),
        "seq": str(record.seq),
        "key": record.key,
        "value_msgpack": msgpack.packb(record.value, use_bin_type=True).hex(),
        "created_ms": str(record.created_ms),
        "expires_ms": None if record.expires_ms is None else str(record.expires_ms),
        "signing_input": signing_input(record.raw).hex(),
        "signature": record.signature.hex(),
        "record": record.raw.hex(),
        "id": record.id.hex(),
    }


def _resign(identity: Identity, fields: list[Any]) -> bytes:
    """Encode ``fields`` as given (even invalid ones) and sign them correctly."""
    unsigned: bytes = msgpack.packb(fields, use_bin_type=True)
    signature = identity.sign(SIGNING_CONTEXT + unsigned)
    return msgpack.packb([*fields, signature], use_bin_type=True)  # type: ignore[no-any-return]


def _invalid_cases(good: Record) -> list[tuple[str, str, bytes]]:
    a = Identity(SEED_A)
    raw = good.raw
    assert b"\xa3Ada" in raw
    base = [1, a.public_key, 7, "profile/name", "Ada", T0, None]
    flipped = bytearray(raw)
    flipped[-1] ^= 0x01
    bad_context = msgpack.packb([*base, a.sign(b"\x97" + raw[1:-66])], use_bin_type=True)
    nested: Any = "x"
    for _ in range(17):
        nested = [nested]
    nested_empty: Any = []  # an empty array is a level too
    for _ in range(16):
        nested_empty = [nested_empty]
    return [
        ("signature does not verify (one bit flipped)", "bad-signature", bytes(flipped)),
        ("signed without the domain context", "bad-signature", bad_context),
        ("empty input", "malformed", b""),
        ("truncated", "malformed", raw[:-1]),
        ("trailing byte", "malformed", raw + b"\x00"),
        ("ext type", "bad-value", _resign(a, [*base[:4], msgpack.ExtType(1, b"x"), *base[5:]])),
        ("seq as uint16 where a fixint suffices", "not-canonical", _uint16_seq(a, base)),
        ("float32 value", "not-canonical", _float32(a, base)),
        ("map keys not sorted", "not-canonical", _unsorted_map(a, base)),
        ("not an array", "not-a-record", msgpack.packb({"seq": 1})),
        ("7 fields", "not-a-record", msgpack.packb(base)),
        ("format version 2", "unknown-version", _resign(a, [2, *base[1:]])),
        ("author of 31 bytes", "bad-author", _resign(a, [1, a.public_key[:31], *base[2:]])),
        ("seq 0", "bad-seq", _resign(a, [*base[:2], 0, *base[3:]])),
        ("seq negative", "bad-seq", _resign(a, [*base[:2], -1, *base[3:]])),
        ("seq as a string", "bad-seq", _resign(a, [*base[:2], "7", *base[3:]])),
        ("empty key", "bad-key", _resign(a, [*base[:3], "", *base[4:]])),
        ("key with a doubled slash", "bad-key", _resign(a, [*base[:3], "a//b", *base[4:]])),
        ("key with a space", "bad-key", _resign(a, [*base[:3], "a b", *base[4:]])),
        ("key segment '..'", "bad-key", _resign(a, [*base[:3], "a/../b", *base[4:]])),
        ("key of 257 bytes", "bad-key", _resign(a, [*base[:3], "k" * 257, *base[4:]])),
        ("key as bin", "bad-key", _resign(a, [*base[:3], b"profile/name", *base[4:]])),
        ("value nested 17 levels", "bad-value", _resign(a, [*base[:4], nested, *base[5:]])),
        (
            "value nested 17 levels, the innermost empty",
            "bad-value",
            _resign(a, [*base[:4], nested_empty, *base[5:]]),
        ),
        ("value of 16385 bytes", "too-large", _resign(a, [*base[:4], b"x" * 16382, *base[5:]])),
        ("record over 17408 bytes", "too-large", b"\x98" + b"\x00" * 17408),
        ("created_ms negative", "bad-time", _resign(a, [*base[:5], -1, None])),
        ("expires_ms not after created_ms", "bad-time", _resign(a, [*base[:6], T0])),
        ("signature of 63 bytes", "bad-signature", msgpack.packb([*base, b"s" * 63])),
        ("NaN value", "bad-value", _resign(a, [*base[:4], float("nan"), *base[5:]])),
        ("invalid UTF-8 in a string", "malformed", raw.replace(b"\xa3Ada", b"\xa3A\xffa")),
        ("duplicate map key", "not-canonical", _duplicate_key(a, base)),
    ]


def _uint16_seq(a: Identity, base: list[Any]) -> bytes:
    unsigned: bytes = msgpack.packb(base, use_bin_type=True)
    unsigned = unsigned.replace(b"\x07\xac", b"\xcd\x00\x07\xac", 1)
    signature = a.sign(SIGNING_CONTEXT + unsigned)
    return b"\x98" + unsigned[1:] + b"\xc4\x40" + signature


def _float32(a: Identity, base: list[Any]) -> bytes:
    packer = msgpack.Packer(use_single_float=True, use_bin_type=True)
    unsigned: bytes = packer.pack([*base[:4], 0.5, *base[5:]])
    signature = a.sign(SIGNING_CONTEXT + unsigned)
    return b"\x98" + unsigned[1:] + b"\xc4\x40" + signature


def _duplicate_key(a: Identity, base: list[Any]) -> bytes:
    head: bytes = msgpack.packb(base[:4], use_bin_type=True)
    tail: bytes = msgpack.packb(base[5:], use_bin_type=True)
    unsigned: bytes = b"\x97" + head[1:] + b"\x82\xa1a\x01\xa1a\x02" + tail[1:]
    signature = a.sign(SIGNING_CONTEXT + unsigned)
    return b"\x98" + unsigned[1:] + b"\xc4\x40" + signature


def _unsorted_map(a: Identity, base: list[Any]) -> bytes:
    return _resign(a, [*base[:4], {"b": 1, "a": 2}, *base[5:]])


# The encodings libsodium refuses for A and R whatever their bit 255 (the sign of x): every
# point of small order, and the non-canonical encodings of such points (y = p, y = p + 1).
BLOCKED_ENCODINGS = tuple(
    bytes.fromhex(h)
    for h in (
        "0000000000000000000000000000000000000000000000000000000000000000",  # y = 0, order 4
        "0100000000000000000000000000000000000000000000000000000000000000",  # y = 1, order 1
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  # order 8
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",  # order 8
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y = p - 1, order 2
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y = p (= 0)
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y = p + 1 (= 1)
    )
)
_IDENTITY = BLOCKED_ENCODINGS[1]
_ORDER_8 = BLOCKED_ENCODINGS[2]
_NON_CANONICAL_IDENTITY = BLOCKED_ENCODINGS[6]


def _with_sign_bit(encoding: bytes) -> bytes:
    return encoding[:31] + bytes([encoding[31] | 0x80])


def _strict_cases() -> list[tuple[str, str, bytes]]:
    """Records whose signature passes a lax verifier but not ``records.md`` §6.

    Each is ``(name, lax, record)``: ``lax`` names the equation it satisfies
    (``ed25519.holds``), so a verifier that checks no more than that accepts it.
    """
    a = Identity(SEED_A)
    a_scalar = ed25519.secret_scalar(SEED_A)
    s = ed25519.challenge(b"vector", b"", b"") or 1  # any fixed scalar will do

    def record(author: bytes, sign: Any) -> bytes:
        unsigned: bytes = msgpack.packb(
            [1, author, 7, "profile/name", "Ada", T0, None], use_bin_type=True
        )
        signature: bytes = sign(author, SIGNING_CONTEXT + unsigned)
        return b"\x98" + unsigned[1:] + b"\xc4\x40" + signature

    def any_message(author: bytes, message: bytes) -> bytes:
        # A of order 1 (or its encodings): [S]B = R holds for every message.
        return ed25519.encode(ed25519.multiply(s, ed25519.BASE)) + s.to_bytes(32, "little")

    def ground(author: bytes, message: bytes) -> bytes:
        # A of order 8: [k]A depends on k mod 8 only, so try R = [s]B - [j]A until k = j mod 8.
        point = ed25519.decode_lax(author)
        for tweak in range(1, 1000):
            base = ed25519.multiply(s + tweak, ed25519.BASE)
            for j in range(8):
                r = ed25519.encode(ed25519.add(base, ed25519.negate(ed25519.multiply(j, point))))
                if ed25519.challenge(r, author, message) % 8 == j:
                    return r + (s + tweak).to_bytes(32, "little")
        raise AssertionError("no signature found")  # pragma: no cover - 1 in 8 per try

    def with_r(r: bytes) -> Any:
        # An honest A = [a]B and S = k·a: [S]B = [k]A, so R must count as the identity.
        def sign(author: bytes, message: bytes) -> bytes:
            k = ed25519.challenge(r, author, message)
            return r + (k * a_scalar % ed25519.L).to_bytes(32, "little")

        return sign

    def unreduced(author: bytes, message: bytes) -> bytes:
        signature = a.sign(message)
        big_s = int.from_bytes(signature[32:], "little") + ed25519.L
        return signature[:32] + big_s.to_bytes(32, "little")

    zero = _IDENTITY + bytes(32)
    return [
        (
            "A and R the identity point, S = 0",
            "cofactorless",
            record(_IDENTITY, lambda author, message: zero),
        ),
        ("A of order 1 (the identity point)", "cofactorless", record(_IDENTITY, any_message)),
        ("A of order 8", "cofactorless", record(_ORDER_8, ground)),
        (
            "A of order 8, encoded with the sign bit set",
            "cofactorless",
            record(_with_sign_bit(BLOCKED_ENCODINGS[3]), ground),
        ),
        (
            "A the identity encoded with the sign bit set (x = -0)",
            "cofactorless",
            record(_with_sign_bit(_IDENTITY), any_message),
        ),
        (
            "A not canonical (y = p + 1, the identity)",
            "cofactorless",
            record(_NON_CANONICAL_IDENTITY, any_message),
        ),
        ("R the identity point", "cofactorless", record(a.public_key, with_r(_IDENTITY))),
        ("R of order 8", "cofactored", record(a.public_key, with_r(_ORDER_8))),
        (
            "R the identity encoded with the sign bit set (x = -0)",
            "cofactorless",
            record(a.public_key, with_r(_with_sign_bit(_IDENTITY))),
        ),
        (
            "R not canonical (y = p + 1, the identity)",
            "cofactorless",
            record(a.public_key, with_r(_NON_CANONICAL_IDENTITY)),
        ),
        (
            "S not below L (S + L of a valid signature)",
            "cofactorless",
            record(a.public_key, unreduced),
        ),
    ]


def build() -> dict[str, Any]:
    valid = []
    for name, identity, fields in _valid_cases():
        record = sign_record(identity, **fields)
        valid.append(_describe(record, identity.seed(), name))
    good = sign_record(Identity(SEED_A), seq=7, key="profile/name", value="Ada", created_ms=T0)
    invalid = [
        {"name": name, "reason": reason, "record": raw.hex()}
        for name, reason, raw in _invalid_cases(good)
    ]
    invalid += [
        {"name": name, "reason": "bad-signature", "lax": lax, "record": raw.hex()}
        for name, lax, raw in _strict_cases()
    ]
    return {
        "format": "meshnode-record-v1",
        "notes": NOTES,
        "signing_context": SIGNING_CONTEXT.hex(),
        "valid": valid,
        "invalid": invalid,
    }


NOTES = [
    "Byte strings are lowercase hex. Integers that may exceed 2^53 (seq, created_ms,"
    " expires_ms) are decimal strings, so that JSON parsers with 64-bit floats read them exactly.",
    "valid: seed is the author's RFC 8032 private seed; record is the whole canonical encoding;"
    " signing_input and id are as in records.md section 6; value_msgpack is the value's"
    " canonical encoding.",
    "invalid: reason is the first check that fails, in the order of records.md section 5."
    " Vectors with a 'lax' field pass that verification equation (cofactorless: [S]B = R + [k]A,"
    " cofactored: [8][S]B = [8]R + [8][k]A, points compared, S taken mod L), so only the strict"
    " checks of records.md section 6 reject them.",
]


def render() -> str:
    """The whole of ``records.json``."""
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def invalid_records() -> list[tuple[str, str, bytes]]:
    """Every invalid vector as ``(name, reason, record bytes)``."""
    return [(v["name"], v["reason"], bytes.fromhex(v["record"])) for v in build()["invalid"]]
