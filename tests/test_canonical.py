"""Canonical msgpack (protocol/records.md §4-5): one encoding per value, a total decoder."""

import contextlib
import math

import msgpack
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from meshnode.core import canonical
from meshnode.core.canonical import CanonicalError

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(values)
def test_every_value_round_trips_through_its_one_encoding(value: object) -> None:
    data = canonical.pack(value)
    assert canonical.unpack(data) == value
    assert canonical.pack(canonical.unpack(data)) == data


def test_map_keys_are_sorted_by_utf8_bytes_whatever_the_insertion_order() -> None:
    assert canonical.pack({"b": 1, "a": 2, "é": 3}) == canonical.pack({"é": 3, "a": 2, "b": 1})
    assert list(canonical.unpack(canonical.pack({"b": 1, "a": 2}))) == ["a", "b"]


@pytest.mark.parametrize(
    "data",
    [
        b"\xcc\x05",  # uint8 for a fixint
        b"\xcd\x00\xff",  # uint16 for a uint8
        b"\xd0\x05",  # int8 for a non-negative fixint
        b"\xca\x3f\x00\x00\x00",  # float32
        b"\xd9\x01a",  # str8 for a fixstr
        b"\xdc\x00\x00",  # array16 for a fixarray
        b"\x82\xa1b\x01\xa1a\x02",  # unsorted map
        b"\x82\xa1a\x01\xa1a\x02",  # duplicate key
    ],
)
def test_non_canonical_encodings_are_rejected(data: bytes) -> None:
    with pytest.raises(CanonicalError) as info:
        canonical.unpack(data)
    assert info.value.kind == "not-canonical"


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"", "malformed"),
        (b"\xc1", "malformed"),  # never used
        (b"\x01\x02", "malformed"),  # trailing data
        (b"\xa2\xff\xfe", "malformed"),  # invalid UTF-8
        (b"\xdd\xff\xff\xff\xff", "malformed"),  # array32 claiming 4 billion items
        (b"\xdb\xff\xff\xff\xff", "malformed"),  # str32 claiming 4 GiB
        (b"\xd4\x01\x00", "bad-value"),  # fixext
        (b"\x81\x01\x02", "bad-value"),  # int map key
        (b"\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00", "bad-value"),  # NaN
        (b"\x91" * 17 + b"\xc0", "bad-value"),  # nested too deep
        (b"\x91" * 16 + b"\x90", "bad-value"),  # as deep, the innermost array empty
        (b"\x91" * 5000 + b"\xc0", "bad-value"),  # deeper than msgpack's own stack
        (b"\xd6\xff\x00\x00\x00\x01", "bad-value"),  # the msgpack timestamp is an ext type
        (b"\xd5\xff\x00\x01", "bad-value"),  # ext -1 of a length no timestamp has
        (b"\xca\x7f\xc0\x00\x00", "bad-value"),  # a NaN float32: the value, then the form
        (b"\x82\xa1b\x01\xa1a\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00", "bad-value"),
        (b"\x92\xd4\x01\x00", "malformed"),  # an ext, then the input ends: malformed first
        (b"\x82\xa1a\x01\xa1a\x02", "not-canonical"),  # duplicate keys
        (b"\x82\xa1b\x01\xa1a\x02", "not-canonical"),  # unsorted keys
    ],
)
def test_invalid_bytes_are_rejected_with_their_kind(data: bytes, kind: str) -> None:
    with pytest.raises(CanonicalError) as info:
        canonical.unpack(data)
    assert info.value.kind == kind


@given(st.binary(max_size=64))
@example(b"\x91" * 2000)
@example(b"\xdd\x7f\xff\xff\xff")
def test_the_decoder_is_total(data: bytes) -> None:
    with contextlib.suppress(CanonicalError):
        canonical.unpack(data)


@pytest.mark.parametrize(
    "value",
    [float("nan"), math.inf, {1: "int key"}, 2**64, -(2**63) - 1, object(), [[[]]] * 0 + [set()]],
)
def test_values_outside_the_subset_cannot_be_encoded(value: object) -> None:
    with pytest.raises(CanonicalError):
        canonical.pack(value)


def test_nesting_limit_is_sixteen_levels() -> None:
    deep: object = 0
    for _ in range(16):
        deep = [deep]
    assert canonical.unpack(canonical.pack(deep)) == deep
    with pytest.raises(CanonicalError, match="deeper"):
        canonical.pack([deep])


def test_lone_surrogates_cannot_be_encoded() -> None:
    with pytest.raises(CanonicalError):
        canonical.pack("\ud800")


def test_plain_msgpack_and_canonical_agree_on_canonical_input() -> None:
    value = {"a": [1, -1, 1.5, "x", b"y", None, True]}
    assert canonical.pack(value) == msgpack.packb(value, use_bin_type=True)


@given(st.one_of(st.binary(max_size=64), values.map(canonical.pack)))
@example(b"\xd6\xff\x00\x00\x00\x01")
@example(b"\x81\xc4\x01a\x01")
def test_the_fast_decoder_and_the_classifier_agree(data: bytes) -> None:
    kind, _ = canonical.diagnose(data)
    try:
        canonical.unpack(data)
    except CanonicalError as exc:
        assert exc.kind == kind != ""
    else:
        assert kind == ""


def test_an_empty_array_or_map_is_a_level_too() -> None:
    """records.md §4: [1] is depth 1, and so is []; sixteen levels at most."""
    for empty in ([], {}):
        deep: object = empty
        for _ in range(15):
            deep = [deep]
        assert canonical.unpack(canonical.pack(deep)) == deep  # sixteen levels
        with pytest.raises(CanonicalError, match="deeper"):
            canonical.pack([deep])
        with pytest.raises(CanonicalError, match="deeper"):
            canonical.unpack(b"\x91" + canonical.pack(deep))
