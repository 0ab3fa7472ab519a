"""Framing and the secure channel (``meshnode.core.channel``).

Every Noise message on the wire is its length, 2 bytes big-endian, then the
message. After the handshake, application bytes are cut into chunks of at
most 65,519 bytes, each one transport message of at most 65,535 bytes. Any
frame that does not decrypt in order, tampered, replayed, reordered or
truncated, is a ``ChannelError``; so is running out of nonces.

Every framing test runs three ways (as h11's tests do): the stream whole, one
byte at a time, and followed by the start of a frame that has not arrived yet.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshnode.core.channel import (
    MAX_CHUNK,
    MAX_FRAME,
    ChannelError,
    FrameDecoder,
    SecureChannel,
    frame,
)
from meshnode.core.noise import MAX_NONCE, TAGLEN, CipherState

KEY_A_TO_B = hashlib.sha256(b"channel key a->b").digest()
KEY_B_TO_A = hashlib.sha256(b"channel key b->a").digest()


def channels() -> tuple[SecureChannel, SecureChannel]:
    """Two ends of one connection, as a finished handshake would hand them out."""
    a = SecureChannel(send=CipherState(KEY_A_TO_B), receive=CipherState(KEY_B_TO_A))
    b = SecureChannel(send=CipherState(KEY_B_TO_A), receive=CipherState(KEY_A_TO_B))
    return a, b


def payload(size: int) -> bytes:
    return random.Random(size).randbytes(size)


# --- Frames -----------------------------------------------------------------------------------


def decode_three_ways(
    make: Callable[[], FrameDecoder], stream: bytes, expected: list[bytes]
) -> None:
    """Whole, byte at a time, and with the start of another frame pending behind it."""
    decoder = make()
    assert decoder.feed(stream) == expected
    assert decoder.take_pending() == b""

    decoder = make()
    got: list[bytes] = []
    for i in range(len(stream)):
        got.extend(decoder.feed(stream[i : i + 1]))
    assert got == expected
    assert decoder.take_pending() == b""

    following = frame(b"the next frame")
    for cut in (1, 2, 3, len(following) - 1):
        decoder = make()
        assert decoder.feed(stream + following[:cut]) == expected
        assert decoder.feed(b"") == []
        assert decoder.feed(following[cut:]) == [b"the next frame"]
        assert decoder.take_pending() == b""


FRAME_STREAMS = {
    "one-frame": [b"hello"],
    "empty-frame": [b""],
    "one-byte-frames": [b"a", b"b", b""],
    "largest-frame": [payload(MAX_FRAME)],
    "mixed": [b"x" * 300, b"", payload(256), b"\x00\x01"],
    "nothing": [],
}


@pytest.mark.parametrize("messages", FRAME_STREAMS.values(), ids=FRAME_STREAMS.keys())
def test_frames_decode_whole_byte_at_a_time_and_with_trailing_partial_data(
    messages: list[bytes],
) -> None:
    stream = b"".join(frame(m) for m in messages)
    decode_three_ways(FrameDecoder, stream, messages)


def test_a_frame_is_its_length_in_two_bytes_big_endian_then_the_message() -> None:
    assert frame(b"") == b"\x00\x00"
    assert frame(b"abc") == b"\x00\x03abc"
    assert frame(bytes(MAX_FRAME))[:2] == b"\xff\xff"
    assert frame(bytes(258))[:2] == b"\x01\x02"


def test_a_frame_holds_at_most_65535_bytes() -> None:
    with pytest.raises(ValueError):
        frame(bytes(MAX_FRAME + 1))


def test_take_pending_hands_over_an_incomplete_frame_and_empties_the_decoder() -> None:
    decoder = FrameDecoder()
    partial = frame(b"incomplete")[:7]
    assert decoder.feed(frame(b"done") + partial) == [b"done"]
    assert decoder.take_pending() == partial
    assert decoder.take_pending() == b""
    # The decoder starts afresh: the next bytes are a new frame.
    assert decoder.feed(frame(b"fresh")) == [b"fresh"]


@pytest.mark.parametrize("cut", [0, 1, 2, 5])
def test_take_pending_returns_exactly_the_bytes_after_the_last_whole_frame(cut: int) -> None:
    decoder = FrameDecoder()
    pending = frame(b"pending")[:cut]
    decoder.feed(frame(b"a") + frame(b"b") + pending)
    assert decoder.take_pending() == pending


def test_a_header_claiming_a_large_frame_waits_without_producing_anything() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(b"\xff\xff" + bytes(MAX_FRAME - 1)) == []
    assert decoder.feed(b"\x07") == [bytes(MAX_FRAME - 1) + b"\x07"]


@settings(max_examples=200)
@given(
    messages=st.lists(st.binary(max_size=300), max_size=8),
    cuts=st.lists(st.integers(min_value=0), max_size=10),
)
def test_any_chunking_of_a_frame_stream_gives_the_same_frames(
    messages: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(frame(m) for m in messages)
    points = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    decoder = FrameDecoder()
    got: list[bytes] = []
    for start, end in itertools.pairwise(points):
        got.extend(decoder.feed(stream[start:end]))
    assert got == messages
    assert decoder.take_pending() == b""


# --- The secure channel ---------------------------------------------------------------------


SIZES = [0, 1, MAX_CHUNK, MAX_CHUNK + 1, 200_000]


@pytest.mark.parametrize("size", SIZES)
def test_payloads_round_trip_in_frames_of_at_most_65519_plaintext_bytes(size: int) -> None:
    a, b = channels()
    data = payload(size)
    sealed = a.seal(data)
    frames = FrameDecoder().feed(sealed)
    assert len(frames) == -(-size // MAX_CHUNK)  # ceil; nothing at all for no bytes
    assert all(len(f) <= MAX_FRAME for f in frames)
    assert sum(len(f) - TAGLEN for f in frames) == size
    assert b.open(sealed) == data


@pytest.mark.parametrize("size", SIZES)
def test_sealed_bytes_open_whole_byte_at_a_time_and_with_trailing_partial_data(
    size: int,
) -> None:
    data = payload(size)
    a, b = channels()
    assert b.open(a.seal(data)) == data

    a, b = channels()
    sealed = a.seal(data)
    assert b"".join(b.open(sealed[i : i + 1]) for i in range(len(sealed))) == data

    a, b = channels()
    sealed, following = a.seal(data), a.seal(b"more")
    assert b.open(sealed + following[:5]) == data
    assert b.open(following[5:]) == b"more"


def test_a_chunk_of_65519_bytes_is_one_frame_of_exactly_65535() -> None:
    a, _ = channels()
    sealed = a.seal(bytes(MAX_CHUNK))
    assert len(sealed) == 2 + MAX_FRAME
    assert sealed[:2] == b"\xff\xff"


def test_both_directions_are_independent() -> None:
    a, b = channels()
    for i in range(5):
        assert b.open(a.seal(b"ping %d" % i)) == b"ping %d" % i
        assert a.open(b.seal(b"pong %d" % i)) == b"pong %d" % i
    with pytest.raises(ChannelError):
        a.open(a.seal(b"to myself"))  # a's sending key is not its receiving key


def test_sealing_the_same_bytes_twice_gives_different_frames() -> None:
    a, _ = channels()
    assert a.seal(b"same") != a.seal(b"same")


def test_every_tampered_byte_of_a_frame_body_is_detected() -> None:
    a, _ = channels()
    sealed = a.seal(b"attack at dawn")
    for position in range(2, len(sealed)):
        for mask in (0x01, 0x80):
            _, b = channels()
            tampered = bytearray(sealed)
            tampered[position] ^= mask
            with pytest.raises(ChannelError):
                b.open(bytes(tampered))


@pytest.mark.parametrize("position", [0, 1])
def test_a_tampered_frame_header_fails_or_waits(position: int) -> None:
    a, _ = channels()
    sealed = a.seal(b"attack at dawn") + a.seal(b"and more")
    for mask in (0x01, 0x02, 0x80, 0xFF):
        _, b = channels()
        tampered = bytearray(sealed)
        tampered[position] ^= mask
        with contextlib.suppress(ChannelError):
            assert b.open(bytes(tampered)) == b""


def test_a_replayed_frame_is_refused() -> None:
    a, b = channels()
    sealed = a.seal(b"transfer 100")
    assert b.open(sealed) == b"transfer 100"
    with pytest.raises(ChannelError):
        b.open(sealed)


def test_a_frame_repeated_in_one_read_is_refused() -> None:
    a, b = channels()
    sealed = a.seal(b"transfer 100")
    with pytest.raises(ChannelError):
        b.open(sealed + sealed)


def test_reordered_frames_are_refused() -> None:
    a, b = channels()
    first, second = a.seal(b"first"), a.seal(b"second")
    with pytest.raises(ChannelError):
        b.open(second + first)


def test_a_dropped_frame_is_detected_at_the_next_one() -> None:
    a, b = channels()
    a.seal(b"lost in transit")
    with pytest.raises(ChannelError):
        b.open(a.seal(b"arrives"))


def test_a_truncated_frame_waits_and_then_fails_when_other_bytes_continue_it() -> None:
    a, _ = channels()
    sealed = a.seal(b"a frame that will be cut short")
    for cut in range(len(sealed)):
        _, b = channels()
        assert b.open(sealed[:cut]) == b""
        with pytest.raises(ChannelError):
            b.open(bytes(len(sealed)))


def test_frames_shorter_than_a_tag_are_refused() -> None:
    for size in range(TAGLEN):
        _, b = channels()
        with pytest.raises(ChannelError):
            b.open(frame(bytes(size)))


def test_a_frame_sealed_under_another_key_is_refused() -> None:
    stranger = SecureChannel(send=CipherState(bytes(32)), receive=CipherState(bytes(32)))
    _, b = channels()
    with pytest.raises(ChannelError):
        b.open(stranger.seal(b"hello"))


def test_after_nonce_exhaustion_seal_raises_channel_error() -> None:
    send = CipherState(KEY_A_TO_B)
    receive = CipherState(KEY_A_TO_B)
    a = SecureChannel(send=send, receive=CipherState(KEY_B_TO_A))
    b = SecureChannel(send=CipherState(KEY_B_TO_A), receive=receive)
    send.set_nonce(MAX_NONCE - 2)
    receive.set_nonce(MAX_NONCE - 2)
    assert b.open(a.seal(b"second to last")) == b"second to last"
    assert b.open(a.seal(b"last")) == b"last"  # nonce 2^64-2, the last one usable
    with pytest.raises(ChannelError):
        a.seal(b"one more")
    with pytest.raises(ChannelError, match="failed before"):
        a.seal(b"")  # the channel stays failed: the connection is finished


def test_a_channel_that_failed_refuses_even_genuine_frames_afterwards() -> None:
    a, b = channels()
    genuine = a.seal(b"genuine")
    tampered = bytearray(genuine)
    tampered[-1] ^= 1
    with pytest.raises(ChannelError):
        b.open(bytes(tampered))
    with pytest.raises(ChannelError, match="failed before"):
        b.open(genuine)


def test_a_multi_frame_seal_that_runs_out_of_nonces_raises_channel_error() -> None:
    send = CipherState(KEY_A_TO_B)
    a = SecureChannel(send=send, receive=CipherState(KEY_B_TO_A))
    send.set_nonce(MAX_NONCE - 1)
    with pytest.raises(ChannelError):
        a.seal(bytes(MAX_CHUNK * 2))


def test_after_nonce_exhaustion_open_raises_channel_error() -> None:
    a, b = channels()
    sealed = a.seal(b"late")
    receive = CipherState(KEY_A_TO_B)
    receive.set_nonce(MAX_NONCE)
    late = SecureChannel(send=CipherState(KEY_B_TO_A), receive=receive)
    with pytest.raises(ChannelError):
        late.open(sealed)
    assert b.open(sealed) == b"late"


@settings(max_examples=300)
@given(chunks=st.lists(st.binary(max_size=100), max_size=6))
def test_open_is_total_random_bytes_only_ever_raise_channel_error(chunks: list[bytes]) -> None:
    _, b = channels()
    with contextlib.suppress(ChannelError):
        for chunk in chunks:
            assert isinstance(b.open(chunk), bytes)


@settings(max_examples=100)
@given(
    messages=st.lists(st.binary(max_size=2000), max_size=6),
    cuts=st.lists(st.integers(min_value=0), max_size=10),
)
def test_any_chunking_of_sealed_bytes_opens_to_the_same_bytes(
    messages: list[bytes], cuts: list[int]
) -> None:
    a, b = channels()
    stream = b"".join(a.seal(m) for m in messages)
    points = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    opened = b"".join(b.open(stream[s:e]) for s, e in itertools.pairwise(points))
    assert opened == b"".join(messages)
