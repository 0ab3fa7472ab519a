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
    """Check ``value`` is in the allowed subset; return it with maps sorted."""
    if depth > MAX_DEPTH:
        raise CanonicalError(f"nested deeper than {MAX_DEPTH} levels")
    kind = type(value)
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


def _sorted_unique_map(pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
    previous: bytes | None = None
    for key, _ in pairs:
        if type(key) is not str:
            raise CanonicalError("map keys must be strings")
        encoded = key.encode()
        if previous is not None and encoded <= previous:
            raise CanonicalError("map keys must be unique and sorted", "not-canonical")
        previous = encoded
    return dict(pairs)


def _check_decoded(value: Value, depth: int, max_depth: int) -> None:
    if depth > max_depth:
        raise CanonicalError(f"nested deeper than {max_depth} levels")
    kind = type(value)
    if kind is float:
        if not math.isfinite(value):
            raise CanonicalError("floats must be finite (no NaN or infinity)")
    elif kind is list:
        for item in value:
            _check_decoded(item, depth + 1, max_depth)
    elif kind is dict:
        for item in value.values():
            _check_decoded(item, depth + 1, max_depth)


def unpack(data: bytes, max_depth: int = MAX_DEPTH) -> Value:
    """Decode exactly one canonical value filling all of ``data``.

    ``max_depth`` counts container levels from the outermost value, which is
    how a record (an array) lets its own value nest ``MAX_DEPTH`` levels.
    """
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            object_pairs_hook=_sorted_unique_map,
            ext_hook=_reject_ext,
        )
    except CanonicalError:
        raise
    except Exception as exc:  # msgpack signals malformed input with many types
        raise CanonicalError(f"malformed msgpack: {exc}", "malformed") from None
    _check_decoded(value, 0, max_depth)
    if msgpack.packb(value, use_bin_type=True) != data:
        raise CanonicalError(
            "not in canonical form (a shorter or float64 encoding exists)", "not-canonical"
        )
    return value


def _reject_ext(code: int, data: bytes) -> None:
    raise CanonicalError("ext types are not allowed")
