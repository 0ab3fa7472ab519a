"""Generate ``bundle.json``: bundles of ``protocol/bundle.md``, good, cut short and bad.

Run from the repository root: ``python protocol/vectors/generate_bundle.py``.
The authors' keys are fixed below and Ed25519 is deterministic, so a second
implementation that signs the same fields gets the same records byte for byte.
``tests/test_bundle.py`` checks that the committed file is what this script
produces and that meshnode's reader and importer agree with every case.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from meshnode.core import canonical
from meshnode.core.bundle import MAGIC, BundleError, BundleHeader, BundleReader, encode_bundle
from meshnode.core.identity import Identity
from meshnode.core.record import Record, sign_record

OUT = Path(__file__).with_name("bundle.json")
T0 = 1_790_000_000_000  # 2026-09-21, when the records and bundles are made


def _author(n: int) -> Identity:
    return Identity(hashlib.sha256(f"meshnode bundle vector author {n}".encode()).digest())


def records() -> list[Record]:
    ada, bob = _author(1), _author(2)
    return [
        sign_record(ada, seq=T0 * 1000, key="offer/tea", value="hot", created_ms=T0),
        sign_record(
            bob,
            seq=T0 * 1000 + 1,
            key="offer/soldering",
            value={"table": 4, "bring": ["board", "iron"]},
            created_ms=T0 + 1,
        ),
        sign_record(ada, seq=T0 * 1000 + 2, key="offer/cake", value=None, created_ms=T0 + 2),
    ]


def _tampered(raw: bytes) -> bytes:
    """The record with the last byte of its signature flipped."""
    return raw[:-1] + bytes([raw[-1] ^ 0x01])


def _entries(data: bytes) -> list[dict[str, Any]]:
    reader = BundleReader()
    found = reader.feed(data)
    return [{"offset": offset, "record": raw.hex()} for offset, raw in found]


def _header(**extra: Any) -> bytes:
    return MAGIC + canonical.pack({"v": 1, "created_ms": T0, "count": None, **extra})


def valid() -> list[dict[str, Any]]:
    good = [r.raw for r in records()]
    cases = [
        (
            "three records (the last a tombstone), with a count and a prefix",
            encode_bundle(BundleHeader(T0, count=3, prefix="offer/"), good),
        ),
        ("an empty bundle: header and end", encode_bundle(BundleHeader(T0), [])),
        (
            "an unknown header key (ignored) and entries in bin16 and bin32 form (accepted)",
            _header(later={"x": [1, 2]})
            + b"\xc5"
            + len(good[0]).to_bytes(2, "big")
            + good[0]
            + b"\xc6"
            + len(good[1]).to_bytes(4, "big")
            + good[1]
            + b"\xc0",
        ),
    ]
    return [
        {"name": name, "bundle": data.hex(), "entries": _entries(data), "complete": True}
        for name, data in cases
    ]


def truncated() -> list[dict[str, Any]]:
    whole = encode_bundle(BundleHeader(T0), [r.raw for r in records()])
    first_entry = len(_header())
    second_entry = first_entry + 2 + len(records()[0].raw)
    cuts = [
        ("cut inside the magic", 5),
        ("cut inside the header", first_entry - 3),
        ("cut right after the header", first_entry),
        ("cut inside the second entry's payload", second_entry + 40),
        ("cut before the end marker", len(whole) - 1),
    ]
    return [
        {
            "name": name,
            "bundle": whole[:cut].hex(),
            "entries": _entries(whole[:cut]),
            "complete": False,
        }
        for name, cut in cuts
    ]


def invalid() -> list[dict[str, Any]]:
    good = [r.raw for r in records()]
    one = encode_bundle(BundleHeader(T0), good[:1])[:-1]  # magic, header, one entry; no end
    cases = [
        ("empty input", b"", "empty", 0),
        ("a text file", b"offer/tea hot\n", "not-a-bundle", 0),
        ("a PNG image's signature", b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR", "not-a-bundle", 0),
        (
            "a bundle whose CR LF became LF in a text-mode transfer",
            b"\x89MNB\n\x1a\n" + encode_bundle(BundleHeader(T0), good)[8:],
            "not-a-bundle",
            0,
        ),
        ("format version 2", _header(v=2) + b"\xc0", "version", 8),
        ("a header that is an array", MAGIC + b"\x92\x01\x02\xc0", "bad-header", 8),
        (
            "a header without v",
            MAGIC + canonical.pack({"created_ms": T0}) + b"\xc0",
            "bad-header",
            8,
        ),
        ("a header with a string v", _header(v="1") + b"\xc0", "bad-header", 8),
        (
            "a header over 4,096 bytes",
            _header(note="x" * 5000) + b"\xc0",
            "bad-header",
            8,
        ),
        ("an entry that is a str, not a bin", one + b"\xa3tea" + b"\xc0", "bad-entry", len(one)),
        (
            "an entry of 17,409 bytes (its length is enough)",
            one + b"\xc5\x44\x01",
            "too-large",
            len(one),
        ),
        ("a byte after the end marker", one + b"\xc0\x00", "trailing", len(one) + 1),
    ]
    found = []
    for name, data, reason, offset in cases:
        found.append(
            {
                "name": name,
                "bundle": data.hex(),
                "reason": reason,
                "offset": offset,
                "entries_before": len(_entries_until_error(data)),
            }
        )
    return found


def _entries_until_error(data: bytes) -> list[tuple[int, bytes]]:
    """What a reader fed ``data`` a byte at a time hands on before its error."""
    reader = BundleReader()
    found: list[tuple[int, bytes]] = []
    try:
        for i in range(len(data)):
            found += reader.feed(data[i : i + 1])
    except BundleError:
        return found
    return found


def imported() -> dict[str, Any]:
    good = [r.raw for r in records()]
    raws = [good[0], _tampered(good[1]), b"\x93\x01\x02\x03", b"not a record", good[2], good[0]]
    data = encode_bundle(BundleHeader(T0), raws)
    return {
        "name": "a tampered record and two foreign entries among good ones, into an empty node",
        "now_ms": T0 + 60_000,
        "bundle": data.hex(),
        "verdicts": ["new", "bad-signature", "not-a-record", "malformed", "new", "known"],
    }


def vectors() -> dict[str, Any]:
    return {
        "notes": (
            "Bundles of protocol/bundle.md in hex. 'records': the records used, each with its"
            " id and fields. 'valid' and 'truncated': what a reader hands on (each entry's"
            " offset and record bytes) and whether the end marker came. 'invalid': the error"
            " a reader reports (reason, and the offset where it is found) and how many entries"
            " it handed on before it. 'import': the verdict of each entry when the bundle is"
            " imported into a node holding nothing, at now_ms (bundle.md section 5)."
        ),
        "magic": MAGIC.hex(),
        "records": [
            {
                "record": r.raw.hex(),
                "id": r.id.hex(),
                "author": r.author.hex(),
                "seq": str(r.seq),
                "key": r.key,
                "created_ms": r.created_ms,
            }
            for r in records()
        ],
        "valid": valid(),
        "truncated": truncated(),
        "invalid": invalid(),
        "import": imported(),
    }


def render() -> str:
    return json.dumps(vectors(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
    sys.stdout.write(f"wrote {OUT}\n")
