"""Finding msgpack value boundaries under bounds, before decoding (meshnode.core.msgscan)."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshnode.core.msgscan import ScanError, Scanner, ValueStream

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.binary(max_size=300),
    lambda inner: (
        st.lists(inner, max_size=20) | st.dictionaries(st.text(max_size=5), inner, max_size=5)
    ),
    max_leaves=40,
)


def roomy() -> Scanner:
    return Scanner(max_bytes=1 << 20, max_depth=64, max_items=100_000)


@given(values, st.binary(max_size=8))
def test_the_scanner_finds_exactly_where_any_value_ends(value: object, trailing: bytes) -> None:
    data = msgpack.packb(value, use_bin_type=True)
    assert roomy().advance(data + trailing) == len(data)


@given(values)
def test_fed_one_byte_at_a_time_it_says_incomplete_until_the_last(value: object) -> None:
    data = msgpack.packb(value, use_bin_type=True)
    scanner = roomy()
    ends = [scanner.advance(data[:i]) for i in range(1, len(data) + 1)]
    assert ends[:-1] == [None] * (len(data) - 1)
    assert ends[-1] == len(data)


@given(st.binary(max_size=200))
def test_any_bytes_give_an_end_none_or_scan_error(data: bytes) -> None:
    try:
        end = roomy().advance(data)
    except ScanError:
        return
    assert end is None or 0 < end <= len(data)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\xdb\xff\xff\xff\xff", "larger"),  # str32 claiming 4 GiB: refused before any payload
        (b"\xc6\x00\x10\x00\x01", "larger"),  # bin32 just over the limit
        (b"\x91" * 9, "deeper"),
        (b"\x91" * 8 + b"\x90", "deeper"),  # an empty array is a level too
        (b"\x91" * 8 + b"\x80", "deeper"),
        (b"\xdd\x00\x01\x00\x00", "elements"),  # array32 of 65,536
        (b"\xde\x00\x80", "elements"),  # map16 of 128 pairs = 256 elements
        (b"\xc7\x01\x01x", "not allowed"),  # ext8
        (b"\xc1", "not allowed"),
    ],
)
def test_bounds_are_enforced_from_the_headers_alone(data: bytes, why: str) -> None:
    scanner = Scanner(max_bytes=1 << 20, max_depth=8, max_items=200)
    with pytest.raises(ScanError, match=why):
        scanner.advance(data)


def test_a_value_streamed_past_the_byte_limit_fails_as_soon_as_it_passes_it() -> None:
    stream = ValueStream(max_bytes=1000, max_depth=4, max_items=10_000)
    with pytest.raises(ScanError, match="larger"):
        for _ in range(2000):
            stream.feed(b"\xdc\x03\xe8" if _ == 0 else b"\x01")


def test_a_stream_yields_whole_values_in_order() -> None:
    data = b"".join(msgpack.packb(v) for v in ([1, 2], "x", {"a": None}))
    stream = ValueStream(max_bytes=100, max_depth=4, max_items=100)
    got = [v for i in range(len(data)) for v in stream.feed(data[i : i + 1])]
    assert got == [[1, 2], "x", {"a": None}]
