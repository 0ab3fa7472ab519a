"""Negentropy set reconciliation, protocol v1: a sans-IO codec and two state machines.

Specification: ``docs/negentropy-protocol-v1.md`` in hoytech/negentropy; section names are
quoted below. Reference implementation: ``js/Negentropy.js`` and ``cpp/negentropy.h`` there.

Theory of operation
-------------------
Each peer holds items ``(timestamp, 32-byte id)``, sorted by timestamp and then by id
("Preparation"). The initiator (the spec's client) opens with a message whose ranges cover
the whole timestamp/id space, each range adjacent to the previous one ("Message", "Range").
A range carries nothing (Skip), a fingerprint of the sender's ids in it (Fingerprint), or
the ids themselves (IdList).

The receiver walks the ranges in order. A range whose fingerprint equals its own is settled
and becomes a Skip (trailing Skips are implicit, so they are never sent); a mismatched one is
split into smaller ranges, each with a fingerprint, or with an id list once the range is
small; an id list from the initiator is answered with the responder's own ids in that range.
The initiator handles the reply the same way and, from each id list, learns which ids only it
has ("have") and which only the peer has ("need"). When every range is settled the
initiator's next message would be the version byte alone; then it stops. Bytes and work grow
with the size of the difference times the logarithm of the set size, not with the set.

Wire details: varints are big-endian base 128 ("Varint"); a range's upper bound is a
timestamp, encoded as 1 + the delta to the previous bound of the same message or 0 for
infinity, plus the shortest id prefix that separates the first item of the range from the
last item before it ("Bound"); a fingerprint is the first 16 bytes of SHA-256 over the ids
summed as 256-bit little-endian integers, followed by the varint item count ("Fingerprint
Algorithm"). Every message opens with the version byte 0x61; a responder that receives
another version (0x60..0x6F, as the reference reads the version space) answers with its own
version byte alone so that the peer can downgrade ("Message").

The spec leaves open how a mismatched range is split and what the first message holds; that
is a ``Strategy``. ``REFERENCE`` reproduces the reference byte for byte (16 buckets, id lists
below 32 items, the opening message already split into buckets), which is what the
conformance vectors pin down. ``SINGLE_FIRST`` (meshnode's default) opens with a single
fingerprint over everything: peers already in sync, the common case for a gossip mesh, settle
in one round trip of 21 bytes, for one extra round trip when they differ.

A frame size limit is applied as the reference does: a sender stops adding ranges once the
message would pass ``limit - 200`` bytes and closes it with one fingerprint over the rest,
which the peer splits in a later round; a responder's id list is cut short the same way.

Peer messages are decoded completely before anything is done with them, and decoding is
total: malformed input raises ``NegentropyDecodeError``. Every range costs at least three
bytes, varints are capped at 64 bits and id lists must fit in what is left of the message, so
the work per message is bounded by its length; the reply is bounded by the frame size limit.
Fingerprints come from prefix sums, so a range of any size costs O(1).
"""

from __future__ import annotations

import enum
import hashlib
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from itertools import accumulate, pairwise
from typing import Final, NamedTuple, Protocol, TypeAlias

from msgspec import Struct

PROTOCOL_VERSION: Final = 0x61
ID_SIZE: Final = 32
FINGERPRINT_SIZE: Final = 16
INFINITY: Final = 2**64 - 1
"""The timestamp reserved for the end of the id space; no item may use it."""
MIN_FRAME_SIZE_LIMIT: Final = 4096

_FRAME_MARGIN = 200  # the reference's room for the closing fingerprint range
_MAX_VARINT = 2**64 - 1
_MAX_VARINT_BYTES = 10  # ceil(64 / 7)
_ID_SUM_MODULUS = 2**256
_VERSION_BYTES = range(0x60, 0x70)  # the version space the reference answers with a downgrade
_WORST_BOUND_SIZE = _MAX_VARINT_BYTES + 1 + ID_SIZE
_WORST_COUNT_SIZE = 2  # varint of an id list length below 16384


class NegentropyError(Exception):
    """Base of every error raised here, so a peer session can catch one type."""


class NegentropyDecodeError(NegentropyError):
    """The peer sent something that is not a v1 message; the session cannot go on."""


class NegentropyUnsupportedVersion(NegentropyDecodeError):
    """The peer speaks another protocol version; ``version`` is the byte it sent."""

    def __init__(self, version: int) -> None:
        super().__init__(f"unsupported negentropy protocol version byte 0x{version:02x}")
        self.version = version


class NegentropyStateError(NegentropyError):
    """The local caller used a session out of order: a bug on our side, not the peer's."""


class NegentropyValueError(NegentropyError, ValueError):
    """Invalid local input: an item, a limit or a strategy that the protocol cannot carry."""


class Mode(enum.IntEnum):
    """Range payload kinds, with their wire values ("Range")."""

    SKIP = 0
    FINGERPRINT = 1
    ID_LIST = 2


class Item(NamedTuple):
    """One record as the protocol sees it; a tuple so that items sort as the spec orders them."""

    timestamp: int
    id: bytes


class Bound(Struct, frozen=True):
    """An exclusive range end: a timestamp and an id prefix whose missing bytes are zeros."""

    timestamp: int
    id_prefix: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.timestamp <= INFINITY:
            raise NegentropyValueError(f"bound timestamp out of range: {self.timestamp}")
        if len(self.id_prefix) > ID_SIZE:
            raise NegentropyValueError("bound id prefix longer than an id")

    @property
    def key(self) -> tuple[int, bytes]:
        """Sort key comparable with ``Item``s; zero padding makes b"ab" and b"ab\\0" equal."""
        return (self.timestamp, self.id_prefix.ljust(ID_SIZE, b"\0"))


class SkipRange(Struct, frozen=True):
    """The sender has nothing to say about this range: it is settled or not its business."""

    upper: Bound


class FingerprintRange(Struct, frozen=True):
    """The sender's ids in the range, summarised; equal fingerprints settle the range."""

    upper: Bound
    fingerprint: bytes


class IdListRange(Struct, frozen=True):
    """Every id the sender has in the range, sent when that is cheaper than splitting."""

    upper: Bound
    ids: tuple[bytes, ...]


Range: TypeAlias = SkipRange | FingerprintRange | IdListRange


def encode_varint(value: int) -> bytes:
    """Encode as the spec's varint; it is also part of the fingerprint input."""
    if not 0 <= value <= _MAX_VARINT:
        raise NegentropyValueError(f"varint out of range: {value}")
    digits = [value & 0x7F]
    value >>= 7
    while value:
        digits.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(digits))


def fingerprint(id_sum: int, count: int) -> bytes:
    """Fingerprint of ``count`` ids whose sum is ``id_sum`` ("Fingerprint Algorithm").

    Ids add as little-endian integers (``int.from_bytes(id, "little")``); taking the sum
    rather than the ids lets an index answer from precomputed sums, in any precision.
    """
    digest = hashlib.sha256(
        (id_sum % _ID_SUM_MODULUS).to_bytes(ID_SIZE, "little") + encode_varint(count)
    ).digest()
    return digest[:FINGERPRINT_SIZE]


class ItemIndex(Protocol):
    """A sealed, sorted item set, as a session needs it.

    An interface so that a store-backed index can stand in for ``SortedItems``; positions are
    indexes into the sorted order and must not change while a session uses the index.
    """

    def __len__(self) -> int: ...

    def item(self, index: int) -> Item: ...

    def ids(self, lo: int, hi: int) -> Sequence[bytes]: ...

    def lower_bound(self, bound: Bound, lo: int, hi: int) -> int:
        """First position in ``[lo, hi)`` whose item is not below ``bound``, else ``hi``."""
        ...

    def fingerprint(self, lo: int, hi: int) -> bytes:
        """Fingerprint of the items at positions ``[lo, hi)``."""
        ...


class SortedItems:
    """An in-memory ``ItemIndex``: sorted once, with prefix sums for O(1) range fingerprints."""

    __slots__ = ("_items", "_sums")

    def __init__(self, items: Iterable[tuple[int, bytes]]) -> None:
        ordered = sorted(_checked_item(timestamp, item_id) for timestamp, item_id in items)
        for previous, current in pairwise(ordered):
            if previous == current:
                raise NegentropyValueError(f"duplicate item {current.timestamp},{current.id.hex()}")
        self._items: list[tuple[int, bytes]] = list(ordered)
        # Unreduced sums: the modulus is applied once per fingerprint instead of per item.
        id_ints = [int.from_bytes(item.id, "little") for item in ordered]
        self._sums = list(accumulate(id_ints, initial=0))

    @classmethod
    def from_sorted(cls, items: Sequence[tuple[int, bytes]]) -> SortedItems:
        """Trust items already sorted, unique and valid (a store's index), skipping the checks.

        Building from 100,000 rows this way costs a fifth of ``SortedItems(rows)``,
        and a node rebuilds its set once per reconciliation round after changes.
        """
        self = cls.__new__(cls)
        self._items = list(items)  # plain tuples: ``item`` makes an Item only when asked
        self._sums = list(accumulate((int.from_bytes(i, "little") for _, i in items), initial=0))
        return self

    def __len__(self) -> int:
        return len(self._items)

    def item(self, index: int) -> Item:
        return Item._make(self._items[index])

    def ids(self, lo: int, hi: int) -> list[bytes]:
        return [item[1] for item in self._items[lo:hi]]

    def lower_bound(self, bound: Bound, lo: int, hi: int) -> int:
        return bisect_left(self._items, bound.key, lo, hi)

    def fingerprint(self, lo: int, hi: int) -> bytes:
        return fingerprint(self._sums[hi] - self._sums[lo], hi - lo)


def _checked_item(timestamp: int, item_id: bytes) -> Item:
    if not isinstance(timestamp, int) or not 0 <= timestamp < INFINITY:
        raise NegentropyValueError(f"item timestamp out of range: {timestamp!r}")
    if not isinstance(item_id, bytes) or len(item_id) != ID_SIZE:
        raise NegentropyValueError(f"item id must be {ID_SIZE} bytes")
    return Item(timestamp, item_id)


class Strategy(Struct, frozen=True):
    """The choices the spec leaves to the sender: the opening message and how to split.

    A mismatched range of at least ``id_list_below`` items becomes ``buckets`` fingerprinted
    ranges of near-equal size (the first ``count % buckets`` get one extra item); a smaller
    one becomes an id list.
    """

    open_with_single_fingerprint: bool = False
    buckets: int = 16
    id_list_below: int = 32

    def __post_init__(self) -> None:
        if self.buckets < 2 or self.id_list_below < self.buckets:
            raise NegentropyValueError("need buckets >= 2 and id_list_below >= buckets")
        # One split, after a Skip, must fit in the smallest frame, or a responder under a
        # frame size limit could never send it and the two peers would loop forever.
        split = max(
            self.buckets * (_WORST_BOUND_SIZE + 1 + FINGERPRINT_SIZE),
            _WORST_BOUND_SIZE + 1 + _WORST_COUNT_SIZE + (self.id_list_below - 1) * ID_SIZE,
        )
        if 1 + _WORST_BOUND_SIZE + 1 + split > MIN_FRAME_SIZE_LIMIT - _FRAME_MARGIN:
            raise NegentropyValueError("a split of this strategy does not fit in a 4096-byte frame")


REFERENCE: Final = Strategy()
SINGLE_FIRST: Final = Strategy(open_with_single_fingerprint=True)


class _Reader:
    """Cursor over one peer message; every read checks what is left."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def take(self, size: int) -> bytes:
        if size > self.remaining:
            raise NegentropyDecodeError("message ends prematurely")
        chunk = self._data[self._pos : self._pos + size]
        self._pos += size
        return chunk

    def varint(self) -> int:
        value = 0
        for _ in range(_MAX_VARINT_BYTES):
            if not self.remaining:
                raise NegentropyDecodeError("message ends inside a varint")
            byte = self._data[self._pos]
            self._pos += 1
            value = (value << 7) | (byte & 0x7F)
            if not byte & 0x80:
                if value > _MAX_VARINT:
                    raise NegentropyDecodeError("varint exceeds 64 bits")
                return value
        raise NegentropyDecodeError("varint exceeds 64 bits")


class _Encoder:
    """Writes the ranges of one message; bound timestamps are deltas within the message."""

    __slots__ = ("_last_timestamp",)

    def __init__(self) -> None:
        self._last_timestamp = 0

    def bound(self, bound: Bound) -> bytes:
        if bound.timestamp == INFINITY:
            self._last_timestamp = INFINITY
            timestamp = encode_varint(0)
        else:
            timestamp = encode_varint(bound.timestamp - self._last_timestamp + 1)
            self._last_timestamp = bound.timestamp
        return timestamp + encode_varint(len(bound.id_prefix)) + bound.id_prefix

    def range(self, rng: Range) -> bytes:
        head = self.bound(rng.upper)
        if isinstance(rng, SkipRange):
            return head + encode_varint(Mode.SKIP)
        if isinstance(rng, FingerprintRange):
            return head + encode_varint(Mode.FINGERPRINT) + rng.fingerprint
        return head + encode_varint(Mode.ID_LIST) + encode_varint(len(rng.ids)) + b"".join(rng.ids)


def encode_message(ranges: Iterable[Range]) -> bytes:
    """Encode a v1 message; ranges must be in ascending order of their bounds."""
    encoder = _Encoder()
    return bytes([PROTOCOL_VERSION]) + b"".join(encoder.range(rng) for rng in ranges)


def decode_message(message: bytes) -> tuple[Range, ...]:
    """Decode a peer's v1 message completely, or raise ``NegentropyDecodeError``.

    A version byte in 0x60..0x6F other than ours raises ``NegentropyUnsupportedVersion``,
    which a responder answers instead of failing; the rest of such a message is not read.
    """
    reader = _Reader(bytes(message))
    version = reader.take(1)[0]
    if version not in _VERSION_BYTES:
        raise NegentropyDecodeError(f"not a negentropy message: version byte 0x{version:02x}")
    if version != PROTOCOL_VERSION:
        raise NegentropyUnsupportedVersion(version)
    ranges: list[Range] = []
    last_timestamp = 0
    last_key = Bound(0).key
    while reader.remaining:
        encoded = reader.varint()
        # Saturate like the C++ reference: a delta that reaches past the largest timestamp,
        # or any delta after infinity, is infinity.
        last_timestamp = min(last_timestamp + encoded - 1, INFINITY) if encoded else INFINITY
        prefix_size = reader.varint()
        if prefix_size > ID_SIZE:
            raise NegentropyDecodeError("bound id prefix longer than an id")
        upper = Bound(last_timestamp, reader.take(prefix_size))
        if upper.key < last_key:
            raise NegentropyDecodeError("ranges out of order")
        last_key = upper.key
        mode = reader.varint()
        if mode == Mode.SKIP:
            ranges.append(SkipRange(upper))
        elif mode == Mode.FINGERPRINT:
            ranges.append(FingerprintRange(upper, reader.take(FINGERPRINT_SIZE)))
        elif mode == Mode.ID_LIST:
            count = reader.varint()
            if count > reader.remaining // ID_SIZE:
                raise NegentropyDecodeError("id list longer than the message")
            ranges.append(IdListRange(upper, tuple(reader.take(ID_SIZE) for _ in range(count))))
        else:
            raise NegentropyDecodeError(f"unknown range mode {mode}")
    return tuple(ranges)


def _minimal_bound(previous: Item, current: Item) -> Bound:
    """The shortest bound above ``previous`` and not above ``current`` ("Bound")."""
    if current.timestamp != previous.timestamp:
        return Bound(current.timestamp)
    shared = next(
        (i for i, (a, b) in enumerate(zip(previous.id, current.id, strict=True)) if a != b),
        ID_SIZE - 1,
    )
    return Bound(current.timestamp, current.id[: shared + 1])


class InitiatorStep(Struct, frozen=True):
    """What one reply taught the initiator, and what to send next (None once done)."""

    message: bytes | None
    have_ids: tuple[bytes, ...]
    need_ids: tuple[bytes, ...]

    @property
    def done(self) -> bool:
        return self.message is None


class _Session:
    """What both roles share: answering a message range by range, as the reference does."""

    __slots__ = ("_frame_size_limit", "_items", "_strategy")

    def __init__(
        self, items: ItemIndex, *, strategy: Strategy = SINGLE_FIRST, frame_size_limit: int = 0
    ) -> None:
        if frame_size_limit != 0 and frame_size_limit < MIN_FRAME_SIZE_LIMIT:
            raise NegentropyValueError(
                f"frame_size_limit must be 0 (none) or at least {MIN_FRAME_SIZE_LIMIT}"
            )
        self._items = items
        self._strategy = strategy
        self._frame_size_limit = frame_size_limit

    def _split(self, encoder: _Encoder, lower: int, upper: int, upper_bound: Bound) -> bytes:
        items = self._items
        count = upper - lower
        if count < self._strategy.id_list_below:
            return encoder.range(IdListRange(upper_bound, tuple(items.ids(lower, upper))))
        per_bucket, with_extra = divmod(count, self._strategy.buckets)
        out = bytearray()
        end = lower
        for bucket in range(self._strategy.buckets):
            start = end
            end += per_bucket + (bucket < with_extra)
            bound = (
                upper_bound
                if end == upper
                else _minimal_bound(items.item(end - 1), items.item(end))
            )
            out += encoder.range(FingerprintRange(bound, items.fingerprint(start, end)))
        return bytes(out)

    def _answer(
        self, ranges: Sequence[Range], *, initiator: bool
    ) -> tuple[bytes, list[bytes], list[bytes]]:
        items = self._items
        size = len(items)
        budget = self._frame_size_limit - _FRAME_MARGIN if self._frame_size_limit else None
        encoder = _Encoder()
        out = bytearray([PROTOCOL_VERSION])
        have: list[bytes] = []
        need: list[bytes] = []
        prev_bound = Bound(0)
        prev_index = 0
        skip_pending = False  # settled ranges are sent as one Skip, only if something follows

        for rng in ranges:
            piece = bytearray()
            lower = prev_index
            upper = items.lower_bound(rng.upper, lower, size)

            if isinstance(rng, SkipRange):
                skip_pending = True
            elif isinstance(rng, FingerprintRange):
                if rng.fingerprint == items.fingerprint(lower, upper):
                    skip_pending = True
                else:
                    if skip_pending:
                        piece += encoder.range(SkipRange(prev_bound))
                        skip_pending = False
                    piece += self._split(encoder, lower, upper, rng.upper)
            elif initiator:
                theirs = dict.fromkeys(rng.ids)
                for item_id in items.ids(lower, upper):
                    if item_id in theirs:
                        del theirs[item_id]
                    else:
                        have.append(item_id)
                need.extend(theirs)
                skip_pending = True
            else:
                if skip_pending:
                    piece += encoder.range(SkipRange(prev_bound))
                    skip_pending = False
                end_bound = rng.upper
                # The reference adds ids while the message, without this range's header, is
                # within budget; ``len(out) <= budget`` holds here (see the check below).
                if budget is not None and upper - lower > (budget - len(out)) // ID_SIZE + 1:
                    upper = lower + (budget - len(out)) // ID_SIZE + 1
                    end_bound = Bound(*items.item(upper))
                piece += encoder.range(IdListRange(end_bound, tuple(items.ids(lower, upper))))
                out += piece
                piece = bytearray()

            if budget is not None and len(out) + len(piece) > budget:
                # As the reference does: drop this range's answer and close with one
                # fingerprint over our items from ``upper`` on. On the wire that range starts
                # at the last bound sent, so the peer's fingerprint also counts the ranges
                # settled since then, and this one: it mismatches, and the peer splits it
                # again next round, settled ranges included.
                out += encoder.range(
                    FingerprintRange(Bound(INFINITY), items.fingerprint(upper, size))
                )
                break
            out += piece
            prev_index = upper
            prev_bound = rng.upper

        return bytes(out), have, need


class _InitiatorState(enum.Enum):
    IDLE = enum.auto()
    WAITING = enum.auto()
    DONE = enum.auto()
    FAILED = enum.auto()


class Initiator(_Session):
    """The client side: opens the conversation, learns have/need ids, decides when to stop.

    Each have/need id is reported once per session. The reference's frame size limit handling
    can send a range that was already settled back to the peer (see ``_answer``); the wire
    must stay as the reference's, so repeated reports are filtered here instead.
    """

    __slots__ = ("_have_seen", "_need_seen", "_state")

    def __init__(
        self, items: ItemIndex, *, strategy: Strategy = SINGLE_FIRST, frame_size_limit: int = 0
    ) -> None:
        super().__init__(items, strategy=strategy, frame_size_limit=frame_size_limit)
        self._state = _InitiatorState.IDLE
        self._have_seen: set[bytes] = set()
        self._need_seen: set[bytes] = set()

    def initiate(self) -> bytes:
        """The opening message; it fits any frame size limit (see ``Strategy``)."""
        if self._state is not _InitiatorState.IDLE:
            raise NegentropyStateError("initiate() may be called only once")
        self._state = _InitiatorState.WAITING
        encoder = _Encoder()
        everything = Bound(INFINITY)
        size = len(self._items)
        if self._strategy.open_with_single_fingerprint:
            body = encoder.range(FingerprintRange(everything, self._items.fingerprint(0, size)))
        else:
            body = self._split(encoder, 0, size, everything)
        return bytes([PROTOCOL_VERSION]) + body

    def reconcile(self, message: bytes) -> InitiatorStep:
        """Take the responder's reply; ``message`` in the result is what to send next.

        A decode error, including a responder that only offers another protocol version, ends
        the session: later calls raise ``NegentropyStateError``.
        """
        if self._state is not _InitiatorState.WAITING:
            raise NegentropyStateError(f"reconcile() not expected now ({self._state.name})")
        try:
            ranges = decode_message(message)
        except NegentropyError:
            self._state = _InitiatorState.FAILED
            raise
        reply, have, need = self._answer(ranges, initiator=True)
        if len(reply) == 1:
            self._state = _InitiatorState.DONE
        return InitiatorStep(
            None if len(reply) == 1 else reply,
            _first_reports(have, self._have_seen),
            _first_reports(need, self._need_seen),
        )


def _first_reports(ids: Iterable[bytes], seen: set[bytes]) -> tuple[bytes, ...]:
    fresh: list[bytes] = []
    for item_id in ids:
        if item_id not in seen:
            seen.add(item_id)
            fresh.append(item_id)
    return tuple(fresh)


class Responder(_Session):
    """The server side: answers each message on its own; it holds no state between them."""

    __slots__ = ()

    def reconcile(self, message: bytes) -> bytes:
        """The reply, always to be sent, even when it is only the version byte.

        The initiator learns that everything is settled from that lone byte, so the responder
        never knows the conversation is over; the transport decides when to stop listening.
        """
        try:
            ranges = decode_message(message)
        except NegentropyUnsupportedVersion:
            return bytes([PROTOCOL_VERSION])
        return self._answer(ranges, initiator=False)[0]
