"""The msgpack-RPC codec of the control socket (protocol/control.md)."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshnode.core.rpc import (
    Notification,
    Request,
    Response,
    RpcDecoder,
    RpcProtocolError,
    encode_notification,
    encode_request,
    encode_response,
)

STREAM = (
    encode_request(1, "publish", [{"key": "a", "value": b"\x00" * 300}])
    + encode_response(1, None, {"ok": True})
    + encode_notification("watch", [{"watch": 1}])
)
EXPECTED = [
    Request(1, "publish", [{"key": "a", "value": b"\x00" * 300}]),
    Response(1, None, {"ok": True}),
    Notification("watch", [{"watch": 1}]),
]


def test_messages_decode_whole() -> None:
    assert RpcDecoder(4096).feed(STREAM) == EXPECTED


def test_messages_decode_one_byte_at_a_time() -> None:
    decoder = RpcDecoder(4096)
    got = []
    for i in range(len(STREAM)):
        got.extend(decoder.feed(STREAM[i : i + 1]))
    assert got == EXPECTED


def test_a_partial_message_waits_for_the_rest() -> None:
    decoder = RpcDecoder(4096)
    assert decoder.feed(STREAM + STREAM[:5]) == EXPECTED
    assert decoder.feed(STREAM[5:]) == EXPECTED


def test_a_message_larger_than_the_limit_is_refused_without_buffering_it() -> None:
    decoder = RpcDecoder(1024)
    big = encode_request(1, "publish", [{"value": b"x" * 2000}])
    with pytest.raises(RpcProtocolError, match="larger than 1024 bytes"):
        decoder.feed(big[:1500])


def test_a_message_larger_than_the_limit_is_refused_even_in_small_pieces() -> None:
    decoder = RpcDecoder(1024)
    big = encode_request(1, "publish", [{"value": [1] * 2000}])
    with pytest.raises(RpcProtocolError, match="larger than"):
        for start in range(0, len(big), 100):
            decoder.feed(big[start : start + 100])


@pytest.mark.parametrize(
    "obj",
    [
        [0, 1, "m"],
        [0, -1, "m", []],
        [0, 1, 5, []],
        [0, 1, "m", {}],
        [3, 1, "m", []],
        {"a": 1},
        "hello",
        [],
        [2, "m"],
        [1, "x", None, None],
    ],
)
def test_shapes_that_are_not_msgpack_rpc_are_refused(obj: object) -> None:
    with pytest.raises(RpcProtocolError):
        RpcDecoder(4096).feed(msgpack.packb(obj))


@pytest.mark.parametrize("data", [b"\xc1", b"\xdd\xff\xff\xff\xff", b"\x91" * 5000])
def test_bombs_and_garbage_are_refused(data: bytes) -> None:
    with pytest.raises(RpcProtocolError):
        RpcDecoder(4096).feed(data)


def test_a_length_claiming_gigabytes_is_refused_at_once() -> None:
    with pytest.raises(RpcProtocolError, match="larger than"):
        RpcDecoder(4096).feed(b"\xdb\xff\xff\xff\xff")


def test_nesting_and_element_counts_are_bounded_before_decoding() -> None:
    with pytest.raises(RpcProtocolError, match="deeper"):
        RpcDecoder(4096, max_depth=4).feed(b"\x91" * 10)
    with pytest.raises(RpcProtocolError, match="elements"):
        RpcDecoder(1 << 20, max_items=100).feed(b"\xdc\x00\xc8" + b"\x90" * 200)


@given(st.binary(max_size=200))
def test_the_decoder_is_total(data: bytes) -> None:
    with contextlib.suppress(RpcProtocolError):
        RpcDecoder(4096).feed(data)
