"""Canonical msgpack: one byte string for every value, and a strict decoder.

A record's signature and id are computed over bytes, so two implementations
must encode the same value identically. The rules (``protocol/records.md``
section "Canonical encoding"):

- integers in the shortest msgpack form (positive fixint, uint8..64 for
  non-negative values, negative fixint, int8..64 for negative ones);
- floats always as float64, and never NaN or infinite;
- str (valid UTF-8) and bin in their shortest form; ext types never;
- arrays and maps with the shortest header; map keys are str, unique, and
  sorted by their UTF-8 bytes.

Decoding is *total*: any input gives a value or ``CanonicalError``. The
strictness is proven by re-encoding: a value decodes only if encoding it again
gives back exactly the input bytes.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import msgpack

Value = Any  # None | bool | int | float | str | bytes | list[Value] | dict[str, Value]

MAX_DEPTH = 16
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1


class CanonicalError(ValueError):
    """Bytes or a value that is not canonical msgpack in meshnode's subset.

    ``kind`` tells the three causes apart: ``malformed`` (not one msgpack
    value), ``not-canonical`` (a valid value, but not in its one encoding) and
    ``bad-value`` (a value outside the subset: too deep, NaN, ext types).
    """

    def __init__(self, message: str, kind: str = "bad-value") -> None:
        super().__init__(message)
        self.kind = kind


def _normalise(value: Value, depth: int) -> Value:
    """Check ``value`` is in the allowed subset; return it with maps sorted.

    ``depth`` is the containers around ``value``; an array or map is a level itself,
    empty or not (records.md §4), as ``_Walk`` counts.
    """
    kind = type(value)
    if (kind is list or kind is tuple or kind is dict) and depth >= MAX_DEPTH:
        raise CanonicalError(f"nested deeper than {MAX_DEPTH} levels")
    if value is None or kind is bool or kind is str or kind is bytes:
        return value
    if kind is int:
        if not _INT_MIN <= value <= _INT_MAX:
            raise CanonicalError("integer out of the 64-bit range")
        return value
    if kind is float:
        if not math.isfinite(value):
            raise CanonicalError("floats must be finite (no NaN or infinity)")
        return value
    if kind is list or kind is tuple:
        return [_normalise(item, depth + 1) for item in value]
    if kind is dict:
        for key in value:
            if type(key) is not str:
                raise CanonicalError("map keys must be strings")
        return {key: _normalise(value[key], depth + 1) for key in sorted(value)}
    raise CanonicalError(f"{kind.__name__} is not a msgpack value meshnode carries")


def pack(value: Value) -> bytes:
    """Canonical encoding of ``value``, or ``CanonicalError``."""
    normal = _normalise(value, 0)
    try:
        return msgpack.packb(normal, use_bin_type=True)  # type: ignore[no-any-return]
    except (UnicodeEncodeError, ValueError, OverflowError) as exc:
        raise CanonicalError(f"cannot encode: {exc}") from None


def _pairs_to_map(pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
    """Keys of the fast path: str, unique and sorted, or let ``diagnose`` say why not."""
    previous: bytes | None = None
    for key, _ in pairs:
        if type(key) is not str:
            raise _Fallback
        encoded = key.encode()
        if previous is not None and encoded <= previous:
            raise _Fallback
        previous = encoded
    return dict(pairs)


class _Fallback(Exception):
    """The fast path met something it does not judge; ``diagnose`` classifies it."""


def _reject_ext(code: int, data: bytes) -> None:
    raise _Fallback


def _plain_values(value: Value, depth: int, max_depth: int) -> bool:
    """True if the decoded value is within the subset (msgpack turns ext -1 into Timestamp);
    ``depth`` as in ``_normalise``."""
    kind = type(value)
    if kind is float:
        return math.isfinite(value)
    if kind is list:
        return depth < max_depth and all(_plain_values(i, depth + 1, max_depth) for i in value)
    if kind is dict:
        return depth < max_depth and all(
            _plain_values(i, depth + 1, max_depth) for i in value.values()
        )
    return value is None or kind in (bool, int, str, bytes)


def unpack(data: bytes, max_depth: int = MAX_DEPTH) -> Value:
    """Decode exactly one canonical value filling all of ``data``.

    ``max_depth`` counts container levels from the outermost value, which is
    how a record (an array) lets its own value nest ``MAX_DEPTH`` levels.
    The C decoder and one re-encoding accept every canonical input quickly;
    anything else is classified by ``diagnose``, in the order the spec gives.
    """
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            object_pairs_hook=_pairs_to_map,
            ext_hook=_reject_ext,
        )
        if _plain_values(value, 0, max_depth) and msgpack.packb(value, use_bin_type=True) == data:
            return value
    except Exception:  # msgpack signals bad input with many types; diagnose says which
        pass
    kind, message = diagnose(data, max_depth)
    raise CanonicalError(message, kind)


def diagnose(data: bytes, max_depth: int = MAX_DEPTH) -> tuple[str, str]:
    """Why ``data`` is not one canonical value: ``(kind, message)``, in the spec's order.

    ``protocol/records.md`` §5: first ``malformed`` (not exactly one msgpack value, a reserved
    byte, a str that is not UTF-8), then ``bad-value`` (an ext type, a NaN or infinite float,
    a map key that is not a str, nesting deeper than ``max_depth``), then ``not-canonical``
    (a longer encoding than needed, float32, map keys unsorted or repeated). Input that is
    canonical gives ``("", "")``. A plain walk over the bytes, so every implementation can
    reproduce the same classification; only rejected input comes here.
    """
    walk = _Walk(data, max_depth)
    try:
        walk.run()
    except _Malformed as exc:
        return "malformed", f"malformed msgpack: {exc}"
    if walk.bad_value:
        return "bad-value", walk.bad_value
    if walk.not_canonical:
        return "not-canonical", walk.not_canonical
    return "", ""


class _Malformed(Exception):
    pass


# Header byte -> (kind, size of the length or value field) for the variable-size types.
_LENGTHS = {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xD9: 1, 0xDA: 2, 0xDB: 4, 0xC7: 1, 0xC8: 2, 0xC9: 4}
_SHORTEST = {1: 0, 2: 0x100, 4: 0x10000}  # the least length that needs a field this wide
_FIXEXT = {0xD4: 1, 0xD5: 2, 0xD6: 4, 0xD7: 8, 0xD8: 16}
_UINT = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}
_INT = {0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}


class _Walk:
    """One pass over a msgpack value, noting the first subset and canonical-form faults."""

    def __init__(self, data: bytes, max_depth: int) -> None:
        self.data = data
        self.pos = 0
        self.max_depth = max_depth
        self.bad_value = ""
        self.not_canonical = ""

    def _take(self, size: int) -> bytes:
        if self.pos + size > len(self.data):
            raise _Malformed("the input ends inside a value")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def _uint(self, size: int) -> int:
        return int.from_bytes(self._take(size), "big")

    def _bad(self, message: str) -> None:
        self.bad_value = self.bad_value or message

    def _long(self, message: str) -> None:
        self.not_canonical = self.not_canonical or message

    def run(self) -> None:
        # Each frame: [elements left, depth, is_map, index within the map, previous key bytes].
        stack: list[list[Any]] = []
        self._value(stack, 0, key_of=None)
        while stack:
            frame = stack[-1]
            if frame[0] == 0:
                stack.pop()
                continue
            frame[0] -= 1
            is_key = frame[2] and frame[3] % 2 == 0
            frame[3] += 1
            self._value(stack, frame[1] + 1, key_of=frame if is_key else None)
        if self.pos != len(self.data):
            raise _Malformed("bytes left over after the value")

    def _value(self, stack: list[list[Any]], depth: int, key_of: list[Any] | None) -> None:
        start = self.pos
        byte = self._take(1)[0]
        is_str = False
        if byte <= 0x7F or byte >= 0xE0 or byte in (0xC0, 0xC2, 0xC3):
            pass
        elif byte == 0xC1:
            raise _Malformed("0xc1 is never used")
        elif 0x80 <= byte <= 0x9F:
            self._container(stack, depth, byte & 0x0F, is_map=byte <= 0x8F)
        elif 0xA0 <= byte <= 0xBF:
            is_str = True
            self._text(byte & 0x1F)
        elif byte in _LENGTHS:
            width = _LENGTHS[byte]
            length = self._uint(width)
            if byte in (0xC7, 0xC8, 0xC9):
                self._take(1 + length)
                self._bad("ext types are not allowed")
            else:
                is_str = byte >= 0xD9
                if length < (32 if is_str and width == 1 else _SHORTEST[width]):
                    self._long("a str or bin length in a longer form than needed")
                if is_str:
                    self._text(length)
                else:
                    self._take(length)
        elif byte in _FIXEXT:
            self._take(1 + _FIXEXT[byte])
            self._bad("ext types are not allowed")
        elif byte in (0xCA, 0xCB) or byte in _UINT or byte in _INT:
            self._number(byte)
        else:  # array16/32, map16/32
            width = 2 if byte in (0xDC, 0xDE) else 4
            count = self._uint(width)
            if count < (16 if width == 2 else 0x10000):
                self._long("an array or map header in a longer form than needed")
            self._container(stack, depth, count, is_map=byte in (0xDE, 0xDF))
        if key_of is not None:
            self._key(key_of, is_str, self.data[start : self.pos])

    def _number(self, byte: int) -> None:
        if byte in (0xCA, 0xCB):
            single = byte == 0xCA
            value = struct.unpack(">f" if single else ">d", self._take(4 if single else 8))[0]
            if not math.isfinite(value):
                self._bad("floats must be finite (no NaN or infinity)")
            if single:
                self._long("floats are always float64")
        elif byte in _UINT:
            size = _UINT[byte]
            if self._uint(size) < (0x80 if size == 1 else 1 << (4 * size)):
                self._long("an integer in a longer form than needed")
        else:
            size = _INT[byte]
            signed = int.from_bytes(self._take(size), "big", signed=True)
            if signed >= (-32 if size == 1 else -(1 << (4 * size - 1))):
                self._long("an integer in a longer form than needed")

    def _container(self, stack: list[list[Any]], depth: int, count: int, *, is_map: bool) -> None:
        if depth + 1 > self.max_depth:
            self._bad(f"nested deeper than {self.max_depth} levels")
        stack.append([count * 2 if is_map else count, depth, is_map, 0, None])

    def _text(self, length: int) -> None:
        try:
            self._take(length).decode("utf-8")
        except UnicodeDecodeError:
            raise _Malformed("a str that is not UTF-8") from None

    def _key(self, frame: list[Any], is_str: bool, encoded: bytes) -> None:
        if not is_str:
            self._bad("map keys must be strings")
            return
        text = encoded[_header_size(encoded[0]) :]
        if frame[4] is not None and text <= frame[4]:
            self._long("map keys must be unique and sorted")
        frame[4] = text


def _header_size(byte: int) -> int:
    if 0xA0 <= byte <= 0xBF:
        return 1
    return 1 + _LENGTHS[byte]
