"""Generate ``records.json``: the record format's test vectors.

Run from the repository root: ``python protocol/vectors/generate_records.py``.
Ed25519 signatures are deterministic (RFC 8032), so the same seeds always give
the same bytes; ``tests/test_record_vectors.py`` checks that the committed file
is exactly what this script produces and that every vector holds.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import msgpack

from meshnode.core.identity import Identity
from meshnode.core.record import SIGNING_CONTEXT, Record, sign_record, signing_input

OUT = Path(__file__).with_name("records.json")
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
        "seq": record.seq,
        "key": record.key,
        "value_msgpack": msgpack.packb(record.value, use_bin_type=True).hex(),
        "created_ms": record.created_ms,
        "expires_ms": record.expires_ms,
        "signing_input": signing_input(record.raw).hex(),
        "signature": record.signature.hex(),
        "record": record.raw.hex(),
        "id": record.id.hex(),
    }


def _resign(identity: Identity, fields: list[Any]) -> bytes:
    """Encode ``fields`` as given (even invalid ones) and sign them correctly."""
    unsigned = msgpack.packb(fields, use_bin_type=True)
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
    unsigned = msgpack.packb(base, use_bin_type=True)
    unsigned = unsigned.replace(b"\x07\xac", b"\xcd\x00\x07\xac", 1)
    signature = a.sign(SIGNING_CONTEXT + unsigned)
    return b"\x98" + unsigned[1:] + b"\xc4\x40" + signature


def _float32(a: Identity, base: list[Any]) -> bytes:
    packer = msgpack.Packer(use_single_float=True, use_bin_type=True)
    unsigned = packer.pack([*base[:4], 0.5, *base[5:]])
    signature = a.sign(SIGNING_CONTEXT + unsigned)
    return b"\x98" + unsigned[1:] + b"\xc4\x40" + signature


def _duplicate_key(a: Identity, base: list[Any]) -> bytes:
    head = msgpack.packb(base[:4], use_bin_type=True)
    tail = msgpack.packb(base[5:], use_bin_type=True)
    unsigned = b"\x97" + head[1:] + b"\x82\xa1a\x01\xa1a\x02" + tail[1:]
    signature = a.sign(SIGNING_CONTEXT + unsigned)
    return b"\x98" + unsigned[1:] + b"\xc4\x40" + signature


def _unsorted_map(a: Identity, base: list[Any]) -> bytes:
    return _resign(a, [*base[:4], {"b": 1, "a": 2}, *base[5:]])


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
    return {
        "format": "meshnode-record-v1",
        "signing_context": SIGNING_CONTEXT.hex(),
        "valid": valid,
        "invalid": invalid,
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
    sys.stderr.write(f"wrote {OUT}\n")
