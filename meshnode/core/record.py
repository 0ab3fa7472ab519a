"""Signed knowledge records: the unit that nodes store, relay and reconcile.

A record is one key/value fact written by one author (an Ed25519 key). Per
(author, key) the record with the highest ``seq`` wins, so an author updates a
fact by signing a new record with a higher seq, and deletes it by signing a
tombstone (value ``nil``). Specification: ``protocol/records.md``; every
constant below is defined there.

Wire form, canonical msgpack (``canonical``)::

    [version, author, seq, key, value, created_ms, expires_ms, signature]

The signature covers ``SIGNING_CONTEXT`` followed by the canonical encoding of
the first seven fields as a 7-element array; the record id is SHA-256 of the
whole 8-element encoding.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable

import msgpack
from msgspec import Struct

from meshnode.core import canonical
from meshnode.core.canonical import Value
from meshnode.core.identity import SIGNATURE_SIZE, Identity, verify_signature
from meshnode.core.keypath import KeyPathError, check_key
from meshnode.core.nodeid import PUBLIC_KEY_SIZE, encode_node_id

FORMAT_VERSION = 1
SIGNING_CONTEXT = b"meshnode/record/v1\x00"
MAX_VALUE_BYTES = 16 * 1024
MAX_RECORD_BYTES = 17 * 1024
MAX_INT63 = 2**63 - 1
# 2026-01-01T00:00:00Z. A clock before this is unset (a Raspberry Pi without network
# time boots in 1970): such a node judges no record's times against it (records.md §7).
CLOCK_FLOOR_MS = 1_767_225_600_000
ID_SIZE = 32
_SIGNATURE_TAIL = 2 + SIGNATURE_SIZE  # bin8 header + 64 bytes, always last


class Invalid(enum.StrEnum):
    """Why a record was rejected; the same codes name the invalid vectors."""

    TOO_LARGE = "too-large"
    MALFORMED = "malformed"
    NOT_CANONICAL = "not-canonical"
    NOT_A_RECORD = "not-a-record"
    UNKNOWN_VERSION = "unknown-version"
    BAD_AUTHOR = "bad-author"
    BAD_SEQ = "bad-seq"
    BAD_KEY = "bad-key"
    BAD_VALUE = "bad-value"
    BAD_TIME = "bad-time"
    BAD_SIGNATURE = "bad-signature"


class RecordError(ValueError):
    """A record that cannot be built or was rejected; ``reason`` says why."""

    def __init__(self, reason: Invalid, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Record(Struct, frozen=True, eq=False):
    """A verified, immutable record. Build with ``sign_record`` or ``decode_record``."""

    author: bytes
    seq: int
    key: str
    value: Value
    created_ms: int
    expires_ms: int | None
    signature: bytes
    raw: bytes
    id: bytes

    @property
    def is_tombstone(self) -> bool:
        return self.value is None

    @property
    def author_id(self) -> str:
        return encode_node_id(self.author)

    def dead_at(self, tombstone_retention_ms: int, received_ms: int | None = None) -> int | None:
        """When this record stops being served: its expiry, or a tombstone's end.

        A tombstone is kept for the retention after its creation, or after
        ``received_ms`` if it claims to be created later: a clock far ahead
        cannot make a deletion live for ever.
        """
        if self.value is not None:
            return self.expires_ms
        start = self.created_ms if received_ms is None else min(self.created_ms, received_ms)
        end = min(start + tombstone_retention_ms, MAX_INT63)  # fits a signed int64
        return end if self.expires_ms is None else min(end, self.expires_ms)

    def supersedes(self, other: Record) -> bool:
        """The ordering of versions of one (author, key): seq, then id as tie-break.

        Equal seqs with different content only arise from a misbehaving author
        (or a restored backup with a wrong clock); the id tie-break makes every
        node pick the same winner.
        """
        return (self.seq, self.id) > (other.seq, other.id)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Record) and other.id == self.id

    def __ne__(self, other: object) -> bool:  # eq=False: msgspec's own would compare identity
        return not self == other

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        # Without ``raw`` and ``id``: both follow from the rest, and ``raw`` would drown it.
        return (
            f"Record(author={self.author!r}, seq={self.seq!r}, key={self.key!r},"
            f" value={self.value!r}, created_ms={self.created_ms!r},"
            f" expires_ms={self.expires_ms!r}, signature={self.signature!r})"
        )


def _check_fields(
    author: object, seq: object, key: object, created_ms: object, expires_ms: object
) -> None:
    if type(author) is not bytes or len(author) != PUBLIC_KEY_SIZE:
        raise RecordError(Invalid.BAD_AUTHOR, "author is a 32-byte Ed25519 public key")
    if type(seq) is not int or not 1 <= seq <= MAX_INT63:
        raise RecordError(Invalid.BAD_SEQ, "seq is an integer from 1 to 2^63-1")
    try:
        check_key(key)
    except KeyPathError as exc:
        raise RecordError(Invalid.BAD_KEY, str(exc)) from None
    if type(created_ms) is not int or not 0 <= created_ms <= MAX_INT63:
        raise RecordError(Invalid.BAD_TIME, "created_ms is an integer from 0 to 2^63-1")
    if expires_ms is not None and (
        type(expires_ms) is not int or not created_ms < expires_ms <= MAX_INT63
    ):
        raise RecordError(Invalid.BAD_TIME, "expires_ms is nil or after created_ms")


def sign_record(
    identity: Identity,
    *,
    seq: int,
    key: str,
    value: Value,
    created_ms: int,
    expires_ms: int | None = None,
) -> Record:
    """Build and sign a record, or raise ``RecordError`` naming the bad field."""
    _check_fields(identity.public_key, seq, key, created_ms, expires_ms)
    try:
        value_bytes = canonical.pack(value)
    except canonical.CanonicalError as exc:
        raise RecordError(Invalid.BAD_VALUE, str(exc)) from None
    if len(value_bytes) > MAX_VALUE_BYTES:
        raise RecordError(
            Invalid.TOO_LARGE,
            f"value is {len(value_bytes)} bytes encoded, at most {MAX_VALUE_BYTES}",
        )
    value = canonical.unpack(value_bytes)  # the canonical form: tuples as lists, maps sorted
    unsigned = msgpack.packb(
        [FORMAT_VERSION, identity.public_key, seq, key, value, created_ms, expires_ms],
        use_bin_type=True,
    )
    signature = identity.sign(SIGNING_CONTEXT + unsigned)
    raw = b"\x98" + unsigned[1:] + b"\xc4\x40" + signature
    return Record(
        author=identity.public_key,
        seq=seq,
        key=key,
        value=value,
        created_ms=created_ms,
        expires_ms=expires_ms,
        signature=signature,
        raw=raw,
        id=hashlib.sha256(raw).digest(),
    )


def decode_record(raw: bytes, *, verify: bool = True) -> Record:
    """Parse and check a record's canonical encoding; raise ``RecordError`` if invalid.

    ``verify=False`` skips only the signature check, for bytes this node has
    verified before (its own store).
    """
    if type(raw) is not bytes:
        raise RecordError(Invalid.MALFORMED, "a record is a byte string")
    if len(raw) > MAX_RECORD_BYTES:
        raise RecordError(Invalid.TOO_LARGE, f"{len(raw)} bytes, at most {MAX_RECORD_BYTES}")
    try:
        fields = canonical.unpack(raw, max_depth=canonical.MAX_DEPTH + 1)
    except canonical.CanonicalError as exc:
        raise RecordError(Invalid(exc.kind), str(exc)) from None
    if type(fields) is not list or len(fields) != 8:
        raise RecordError(Invalid.NOT_A_RECORD, "a record is an array of 8 fields")
    version, author, seq, key, value, created_ms, expires_ms, signature = fields
    if version != FORMAT_VERSION or type(version) is not int:
        raise RecordError(Invalid.UNKNOWN_VERSION, f"format version {version!r} is not 1")
    _check_fields(author, seq, key, created_ms, expires_ms)
    if len(msgpack.packb(value, use_bin_type=True)) > MAX_VALUE_BYTES:
        raise RecordError(Invalid.TOO_LARGE, f"value is larger than {MAX_VALUE_BYTES} bytes")
    if type(signature) is not bytes or len(signature) != SIGNATURE_SIZE:
        raise RecordError(Invalid.BAD_SIGNATURE, "signature is 64 bytes")
    if verify and not verify_signature(author, signature, signing_input(raw)):
        raise RecordError(Invalid.BAD_SIGNATURE, "signature does not verify")
    return Record(
        author=author,
        seq=seq,
        key=key,
        value=value,
        created_ms=created_ms,
        expires_ms=expires_ms,
        signature=signature,
        raw=raw,
        id=hashlib.sha256(raw).digest(),
    )


def signing_input(raw: bytes) -> bytes:
    """The signed bytes of a canonical record: context + the 7-field array."""
    return SIGNING_CONTEXT + b"\x97" + raw[1:-_SIGNATURE_TAIL]


def decode_many(raws: Iterable[bytes]) -> tuple[list[Record], list[RecordError]]:
    """Verify a batch: the good records in order, and an error for each bad one."""
    good: list[Record] = []
    bad: list[RecordError] = []
    for raw in raws:
        try:
            good.append(decode_record(raw))
        except RecordError as exc:
            bad.append(exc)
    return good, bad
