"""The peer protocol's messages and their bounded decoder (``meshnode.core.messages``).

After the handshake each side sends a stream of msgpack arrays whose first
element is the message type. Unknown types are ignored; known ones must have
exactly their shape; anything else, and anything larger than
``MAX_MESSAGE_BYTES``, is a ``PeerProtocolError``. The decoder must stay
bounded whatever a peer sends: memory is measured with tracemalloc.
"""

from __future__ import annotations

import contextlib
import tracemalloc
from collections.abc import Iterable
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshnode.core.messages import (
    MAX_IDS_PER_MESSAGE,
    MAX_LISTEN_ADDRESSES,
    MAX_MESSAGE_BYTES,
    MAX_RECORDS_PER_MESSAGE,
    MAX_TEXT,
    PROTOCOL_VERSION,
    Deferred,
    Goodbye,
    GoodbyeCode,
    Have,
    Hello,
    Message,
    MessageDecoder,
    PeerProtocolError,
    Peers,
    Ping,
    Pong,
    Reconcile,
    Records,
    Role,
    Want,
    Why,
    encode,
    parse_deferred,
)
from meshnode.core.record import ID_SIZE, MAX_RECORD_BYTES

ID_A, ID_B = bytes(range(32)), bytes(range(32, 64))
CHUNK = 64 * 1024  # what a socket read hands the decoder at most, roughly

SAMPLES: dict[str, Message] = {
    "hello": Hello(PROTOCOL_VERSION, ("negentropy",), ("192.0.2.1:7411",), "meshnode/0.1.0"),
    "hello-bare": Hello(1, (), (), ""),
    "hello-largest": Hello(
        2**63 - 1,
        tuple("f" * MAX_TEXT for _ in range(64)),
        tuple("l" * MAX_TEXT for _ in range(MAX_LISTEN_ADDRESSES)),
        "a" * MAX_TEXT,
    ),
    "reconcile-initiator": Reconcile(Role.OPEN, b"\x61\x00negentropy"),
    "reconcile-responder": Reconcile(Role.REPLY, b""),
    "reconcile-continue": Reconcile(Role.CONTINUE, b"\x61"),
    "records": Records((b"\x01record one", b"\x02record two", b"")),
    "records-empty": Records(()),
    "records-largest": Records((bytes(MAX_RECORD_BYTES),)),
    "want": Want((ID_A, ID_B)),
    "want-empty": Want(()),
    "have": Have((ID_B,)),
    "ping": Ping(0),
    "ping-largest": Ping(2**64 - 1),
    "pong": Pong(12345),
    "goodbye": Goodbye(GoodbyeCode.DUPLICATE, "another connection is kept"),
    "goodbye-longest": Goodbye(GoodbyeCode.NORMAL, "r" * MAX_TEXT),
}


def decode_three_ways(stream: bytes, expected: list[Message]) -> None:
    """Whole, one byte at a time, and with the start of another message behind it."""
    assert MessageDecoder().feed(stream) == expected

    decoder = MessageDecoder()
    got: list[Message] = []
    for i in range(len(stream)):
        got.extend(decoder.feed(stream[i : i + 1]))
    assert got == expected

    following = encode(Ping(7))
    for cut in (1, len(following) - 1):
        decoder = MessageDecoder()
        assert decoder.feed(stream + following[:cut]) == expected
        assert decoder.feed(following[cut:]) == [Ping(7)]


def feed_chunks(decoder: MessageDecoder, chunks: Iterable[bytes]) -> list[Message]:
    got: list[Message] = []
    for chunk in chunks:
        got.extend(decoder.feed(chunk))
    return got


def chunked(data: bytes, size: int = CHUNK) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def peak_bytes_while(action: Any) -> int:
    """Peak memory traced while ``action()`` runs, with its inputs made beforehand."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        action()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - before


# --- Round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("message", SAMPLES.values(), ids=SAMPLES.keys())
def test_every_message_type_round_trips_whole_byte_at_a_time_and_with_trailing_data(
    message: Message,
) -> None:
    decode_three_ways(encode(message), [message])


def test_a_stream_of_every_message_type_decodes_in_order() -> None:
    messages = list(SAMPLES.values())
    decode_three_ways(b"".join(encode(m) for m in messages), messages)


def test_the_wire_form_is_an_array_starting_with_the_type() -> None:
    assert msgpack.unpackb(encode(Ping(5))) == [5, 5]
    assert msgpack.unpackb(encode(Pong(6))) == [6, 6]
    assert msgpack.unpackb(encode(Reconcile(Role.OPEN, b"x"))) == [1, 0, b"x"]
    assert msgpack.unpackb(encode(Reconcile(Role.REPLY, b"x"))) == [1, 1, b"x"]
    assert msgpack.unpackb(encode(Want((ID_A,)))) == [3, [ID_A]]
    assert msgpack.unpackb(encode(Have((ID_A,)))) == [4, [ID_A]]
    assert msgpack.unpackb(encode(Records((b"r",)))) == [2, [b"r"]]
    assert msgpack.unpackb(encode(Goodbye(1, "bye"))) == [7, 1, "bye"]
    assert msgpack.unpackb(encode(Hello(1, ("f",), ("a",), "x"))) == [
        0,
        {"v": 1, "features": ["f"], "listen": ["a"], "agent": "x"},
    ]


@pytest.mark.parametrize("version", [0, -1])
def test_a_hello_of_an_older_version_decodes_so_the_session_can_answer_goodbye_5(
    version: int,
) -> None:
    """peer.md §5.1: a peer whose version is lower than 1 gets goodbye 5 (no common
    version), not goodbye 1, so the decoder must let the hello through."""
    data = msgpack.packb([0, {"v": version, "features": [], "listen": [], "agent": "old"}])
    assert MessageDecoder().feed(data) == [Hello(version, (), (), "old")]


def test_a_goodbye_reason_is_cut_to_256_bytes_both_ways() -> None:
    long = Goodbye(GoodbyeCode.PROTOCOL, "é" * 1000)
    assert MessageDecoder().feed(encode(long)) == [Goodbye(1, "é" * (MAX_TEXT // 2))]
    on_the_wire = msgpack.packb([7, 1, "x" * 1000])
    assert MessageDecoder().feed(on_the_wire) == [Goodbye(1, "x" * MAX_TEXT)]


def test_the_largest_message_is_accepted_whole_and_in_chunks() -> None:
    """A reconcile of exactly MAX_MESSAGE_BYTES: 8 bytes of header, then the payload."""
    message = Reconcile(Role.OPEN, bytes(MAX_MESSAGE_BYTES - 8))
    data = encode(message)
    assert len(data) == MAX_MESSAGE_BYTES
    assert MessageDecoder().feed(data) == [message]
    assert feed_chunks(MessageDecoder(), chunked(data)) == [message]


def test_a_message_one_byte_over_the_limit_is_refused_whole() -> None:
    data = encode(Reconcile(Role.OPEN, bytes(MAX_MESSAGE_BYTES - 7)))
    assert len(data) == MAX_MESSAGE_BYTES + 1
    with pytest.raises(PeerProtocolError, match="larger than"):
        MessageDecoder().feed(data)


def test_a_message_one_byte_over_the_limit_is_refused_in_chunks() -> None:
    """Regression: msgpack's Unpacker bounds only unconsumed bytes, so a message arriving
    in pieces once passed any limit (fixed in 0e4a287 by scanning headers first)."""
    data = encode(Reconcile(Role.OPEN, bytes(MAX_MESSAGE_BYTES - 7)))
    with pytest.raises(PeerProtocolError):
        feed_chunks(MessageDecoder(), chunked(data))


def test_the_most_records_of_the_largest_size_do_not_fit_one_message() -> None:
    records = Records(tuple(bytes([i % 256]) * MAX_RECORD_BYTES for i in range(1024)))
    data = encode(records)
    assert len(data) > 8 * MAX_MESSAGE_BYTES
    with pytest.raises(PeerProtocolError):
        feed_chunks(MessageDecoder(), chunked(data))


# --- Unknown types, and shapes that are refused -----------------------------------------------


@pytest.mark.parametrize(
    "obj",
    [[9], [99], [99, "anything", {"x": [1, 2]}, b"\x00"], [2**63], [2**64 - 1]],
    ids=["9", "99", "99-with-fields", "2^63", "2^64-1"],
)
def test_unknown_message_types_are_ignored(obj: list[Any]) -> None:
    stream = encode(Ping(1)) + msgpack.packb(obj) + encode(Pong(1))
    decode_three_ways(stream, [Ping(1), Pong(1)])


@pytest.mark.parametrize("obj", [[8], [8, "not a list"], [8, ["192.0.2.1:7744"], "more"]])
def test_a_features_message_comes_out_undecoded_whatever_it_holds(obj: list[Any]) -> None:
    """Only the session knows whether peer-exchange is in force, so the decoder defers."""
    stream = encode(Ping(1)) + msgpack.packb(obj) + encode(Pong(1))
    decode_three_ways(stream, [Ping(1), Deferred(8, tuple(obj[1:])), Pong(1)])


def test_a_deferred_peers_message_decodes_once_its_feature_is_in_force() -> None:
    (deferred,) = MessageDecoder().feed(encode(Peers(("192.0.2.1:7744", "[2001:db8::1]:7744"))))
    assert isinstance(deferred, Deferred)
    assert parse_deferred(deferred) == Peers(("192.0.2.1:7744", "[2001:db8::1]:7744"))


@pytest.mark.parametrize(
    "obj",
    [[8], [8, "x"], [8, [1]], [8, ["a" * (MAX_TEXT + 1)]], [8, ["192.0.2.1:7744"] * 33]],
    ids=["no-list", "a-str", "not-strings", "too-long", "33-addresses"],
)
def test_a_malformed_peers_message_is_a_violation_where_it_is_decoded(obj: list[Any]) -> None:
    (deferred,) = MessageDecoder().feed(msgpack.packb(obj))
    assert isinstance(deferred, Deferred)
    with pytest.raises(PeerProtocolError, match="malformed peers"):
        parse_deferred(deferred)


@pytest.mark.parametrize("kind", [-1, -2, -(2**63)])
def test_negative_message_types_are_refused(kind: int) -> None:
    with pytest.raises(PeerProtocolError, match="non-negative"):
        MessageDecoder().feed(msgpack.packb([kind, "x"]))


WRONG_SHAPES: list[Any] = [
    # Not an array that starts with an integer type.
    5,
    "hello",
    b"\x05",
    None,
    {"type": 5},
    [],
    ["5", 1],
    [5.0, 1],
    [True, 1],
    [None],
    [[5], 1],
    # hello
    [0],
    [0, []],
    [0, {}],
    [0, {"v": "1"}],
    [0, {"v": True}],
    [0, {"v": 1.0}],
    [0, {"v": 1, "features": "negentropy"}],
    [0, {"v": 1, "features": [1]}],
    [0, {"v": 1, "features": [b"bin"]}],
    [0, {"v": 1, "listen": "192.0.2.1:7411"}],
    [0, {"v": 1, "listen": [None]}],
    [0, {"v": 1, "agent": 5}],
    [0, {"v": 1, "agent": b"bytes"}],
    [0, {b"v": 1}],
    # reconcile
    [1, 0],
    [1, 3, b""],
    [1, -1, b""],
    [1, True, b""],
    [1, 0.0, b""],
    [1, "0", b""],
    [1, 0, "text, not bin"],
    [1, 0, [b""]],
    # records
    [2],
    [2, b"record"],
    [2, ["record"]],
    [2, [1]],
    [2, [[b"nested"]]],
    # want and have
    [3],
    [3, [bytes(ID_SIZE - 1)]],
    [3, [bytes(ID_SIZE + 1)]],
    [3, ["x" * ID_SIZE]],
    [3, bytes(ID_SIZE)],
    [4, [None]],
    [4, [ID_A, b""]],
    # ping and pong
    [5],
    [5, -1],
    [5, 1.5],
    [5, True],
    [5, "1"],
    [5, None],
    [6],
    [6, -1],
    [6, b"\x01"],
    # goodbye
    [7],
    [7, 1],
    [7, "1", "reason"],
    [7, 1, b"reason"],
    [7, True, "reason"],
    [7, 1.0, "reason"],
    [7, 1, "reason", "extra"],
]


@pytest.mark.parametrize("obj", WRONG_SHAPES, ids=[repr(o)[:40] for o in WRONG_SHAPES])
def test_known_types_with_the_wrong_shape_or_field_types_are_refused(obj: Any) -> None:
    data = msgpack.packb(obj, use_bin_type=True)
    with pytest.raises(PeerProtocolError):
        MessageDecoder().feed(data)


EXTENDED = [
    ([0, {"v": 1, "future": {"a": 1}, "agent": "x"}, "more"], Hello(1, (), (), "x")),
    ([0, {"v": 2, "x": 1}], Hello(2, (), (), "")),  # every field but v is optional
    ([1, 0, b"a", "later"], Reconcile(Role.OPEN, b"a")),
    ([2, [b"r"], None], Records((b"r",))),
    ([3, [ID_A], [ID_B]], Want((ID_A,))),
    ([4, [ID_A], 1, 2], Have((ID_A,))),
    ([5, 1, 2], Ping(1)),
    ([6, 1, "x"], Pong(1)),
    ([7, 7, "banned", 30, "more"], Goodbye(7, "banned", 30)),
]


@pytest.mark.parametrize(("obj", "message"), EXTENDED, ids=[repr(o)[:30] for o, _ in EXTENDED])
def test_trailing_elements_and_unknown_hello_keys_are_ignored(obj: Any, message: Any) -> None:
    """So a later version can add a field to any message (protocol/peer.md §4.2)."""
    assert MessageDecoder().feed(msgpack.packb(obj, use_bin_type=True)) == [message]


def test_goodbye_carries_retry_after_only_when_given() -> None:
    assert encode(Goodbye(7, "banned", 600)) == msgpack.packb([7, 7, "banned", 600])
    assert encode(Goodbye(0, "shutting down")) == msgpack.packb([7, 0, "shutting down"])


def test_records_of_any_size_pass_the_message_check_for_the_record_check_to_judge() -> None:
    obj = [2, [b"small", bytes(MAX_RECORD_BYTES + 1)]]
    assert MessageDecoder().feed(msgpack.packb(obj, use_bin_type=True)) == [
        Records((b"small", bytes(MAX_RECORD_BYTES + 1)))
    ]


def test_every_refusal_names_a_fixed_reason() -> None:
    for obj in WRONG_SHAPES:
        with pytest.raises(PeerProtocolError) as info:
            MessageDecoder().feed(msgpack.packb(obj, use_bin_type=True))
        assert info.value.why in set(Why)


def test_a_wrong_shape_after_good_messages_still_fails() -> None:
    decoder = MessageDecoder()
    assert decoder.feed(encode(Ping(1))) == [Ping(1)]
    with pytest.raises(PeerProtocolError):
        decoder.feed(encode(Pong(2)) + msgpack.packb([5, "x"]))


@pytest.mark.parametrize(
    "obj",
    [
        [2, [b"r"] * (MAX_RECORDS_PER_MESSAGE + 1)],
        [3, [ID_A] * (MAX_IDS_PER_MESSAGE + 1)],
        [4, [ID_A] * (MAX_IDS_PER_MESSAGE + 1)],
        [0, {"v": 1, "listen": ["a"] * (MAX_LISTEN_ADDRESSES + 1)}],
        [0, {"v": 1, "features": ["f"] * 65}],
        [0, {"v": 1, "features": ["f" * (MAX_TEXT + 1)]}],
        [0, {"v": 1, "listen": ["l" * (MAX_TEXT + 1)]}],
        [0, {"v": 1, "agent": "a" * (MAX_TEXT + 1)}],
        [0, {"v": 1, "agent": "é" * (MAX_TEXT // 2 + 1)}],
    ],
    ids=[
        "too-many-records",
        "too-many-wanted-ids",
        "too-many-had-ids",
        "too-many-listen-addresses",
        "too-many-features",
        "feature-too-long",
        "listen-address-too-long",
        "agent-too-long",
        "agent-too-long-in-bytes-not-characters",
    ],
)
def test_too_many_or_too_large_fields_are_refused(obj: Any) -> None:
    with pytest.raises(PeerProtocolError):
        MessageDecoder().feed(msgpack.packb(obj, use_bin_type=True))


def test_the_most_records_and_ids_a_message_may_carry_are_accepted() -> None:
    records = Records((b"r",) * MAX_RECORDS_PER_MESSAGE)
    want = Want((ID_A,) * MAX_IDS_PER_MESSAGE)
    have = Have((ID_B,) * MAX_IDS_PER_MESSAGE)
    assert MessageDecoder().feed(encode(records) + encode(want) + encode(have)) == [
        records,
        want,
        have,
    ]


@pytest.mark.parametrize(
    "data",
    [
        b"\xc1",  # never used
        b"\x92\x07\x00\xa1\xff",  # [7, 0, <invalid UTF-8>]
        b"\x92\x05\xd6\xff\x00\x00\x00\x00",  # [5, <timestamp ext>]
        b"\x92\x05\xc7\x00\x01",  # [5, <empty ext>]
        msgpack.packb([0, {1: 1}]),  # map keys must be strings
        msgpack.packb([0, {"v": 1, b"agent": "x"}], use_bin_type=True),  # not bin either
        msgpack.packb([99, {b"k": 1}], use_bin_type=True),  # in any message, known or not
        msgpack.packb([0, {"v": 1, "features": [{"k": "v"}]}]),
        msgpack.packb([99, [[[]]]]),  # four levels, however empty the last
    ],
    ids=[
        "reserved-byte",
        "bad-utf8",
        "timestamp",
        "ext",
        "int-map-key",
        "bin-map-key",
        "bin-map-key-unknown-type",
        "map-in-list",
        "too-deep-empty",
    ],
)
def test_malformed_msgpack_is_refused(data: bytes) -> None:
    with pytest.raises(PeerProtocolError):
        MessageDecoder().feed(data)


def test_of_a_repeated_map_key_the_last_value_counts() -> None:
    # fixmap of 3: v, agent "a", agent "b"
    data = b"\x92\x00\x83\xa1v\x01\xa5agent\xa1a\xa5agent\xa1b"
    [hello] = MessageDecoder().feed(data)
    assert isinstance(hello, Hello) and hello.agent == "b"


# --- Bombs ------------------------------------------------------------------------------------

MEMORY_BOUND = 3 * MAX_MESSAGE_BYTES
"""The decoder holds at most MAX_MESSAGE_BYTES of an incomplete message (plus the chunk
just fed), copies a complete one once to decode it, and the decoded objects of a bounded
message are about its size again: three times the limit, with room to spare."""


@pytest.mark.parametrize(
    "bomb",
    [
        b"\x91" * 100_000,  # arrays nested 100,000 deep
        b"\xdd\xff\xff\xff\xff",  # array32 of 2^32-1 elements
        b"\xdf\xff\xff\xff\xff",  # map32 of 2^32-1 pairs
        b"\x92\x02\xdd\xff\xff\xff\xff",  # [2, array32 of 2^32-1]
        b"\xc9\xff\xff\xff\xff\x01",  # ext32 of 4 GiB
        b"\xdc\xff\xff" + b"\x90" * 10,  # array16 longer than the id limit
    ],
    ids=["nested", "array32", "map32", "records-array32", "ext32", "array16"],
)
def test_bombs_are_refused_at_once_with_bounded_memory(bomb: bytes) -> None:
    def feed() -> None:
        with pytest.raises(PeerProtocolError):
            MessageDecoder().feed(bomb)

    assert peak_bytes_while(feed) < MEMORY_BOUND


@pytest.mark.parametrize(
    "header",
    [
        b"\xdb\xff\xff\xff\xff",  # str32 of 4 GiB
        b"\xc6\xff\xff\xff\xff",  # bin32 of 4 GiB
        b"\x93\x01\x00\xc6\xff\xff\xff\xf0",  # a reconcile whose payload claims 4 GiB
        b"\x92\x02\x91\xc6\x00\x20\x00\x01",  # a record claiming MAX_MESSAGE_BYTES + 1
    ],
    ids=["str32", "bin32", "reconcile-bin32", "records-bin32"],
)
def test_a_length_claiming_gigabytes_fails_at_once_or_at_the_limit(header: bytes) -> None:
    """Nothing is allocated for the claim; it is refused at its header or, at the latest,
    before more than MAX_MESSAGE_BYTES of it has been taken."""
    chunks = [header, b"some bytes", *([bytes(CHUNK)] * (MAX_MESSAGE_BYTES // CHUNK + 2))]
    fed: list[int] = []

    def feed() -> None:
        decoder = MessageDecoder()
        with pytest.raises(PeerProtocolError, match="larger than"):
            for chunk in chunks:
                assert decoder.feed(chunk) == []
                fed.append(len(chunk))

    assert peak_bytes_while(feed) < MEMORY_BOUND
    assert sum(fed) <= MAX_MESSAGE_BYTES


def _streamed_bins(count: int) -> list[bytes]:
    """[3, [bin, bin, ...]] where each bin is nearly MAX_MESSAGE_BYTES: every piece would fit
    a buffer of MAX_MESSAGE_BYTES, the message as a whole is ``count`` times too large."""
    body = b"\xc6" + (MAX_MESSAGE_BYTES - 64).to_bytes(4, "big") + bytes(MAX_MESSAGE_BYTES - 64)
    return [b"\x92\x03\xdc" + count.to_bytes(2, "big"), *(chunked(body) * count)]


def test_a_message_streamed_past_the_limit_is_refused_with_bounded_memory() -> None:
    chunks = _streamed_bins(5)

    def feed() -> None:
        with pytest.raises(PeerProtocolError):
            feed_chunks(MessageDecoder(), chunks)

    assert peak_bytes_while(feed) < MEMORY_BOUND


def test_small_values_cannot_amplify_a_message_into_much_more_memory() -> None:
    """Each empty array is one byte on the wire but a whole Python list once decoded
    (~70x); 192 KiB of them would take ~14 MiB. Element counts are bounded instead."""
    inner = b"\xdc" + (16384).to_bytes(2, "big") + b"\x90" * 16384  # 16384 empty arrays
    data = b"\x92\x63\xdc" + (12).to_bytes(2, "big") + inner * 12  # [99, [inner] * 12]
    assert len(data) < MAX_MESSAGE_BYTES // 10
    chunks = chunked(data)

    def feed() -> None:
        with contextlib.suppress(PeerProtocolError):
            feed_chunks(MessageDecoder(), chunks)

    assert peak_bytes_while(feed) < MEMORY_BOUND


def test_deep_nesting_fails_at_once_or_as_soon_as_it_is_complete() -> None:
    """No message nests 500 deep; the decoder may refuse it early or once it ends."""
    decoder = MessageDecoder()
    with pytest.raises(PeerProtocolError):
        decoder.feed(b"\x91" * 500)
        decoder.feed(b"\x90")


# --- Totality ---------------------------------------------------------------------------------


@settings(max_examples=500)
@given(chunks=st.lists(st.binary(max_size=200), max_size=5))
def test_random_bytes_only_ever_raise_peer_protocol_error(chunks: list[bytes]) -> None:
    decoder = MessageDecoder()
    with contextlib.suppress(PeerProtocolError):
        for chunk in chunks:
            assert isinstance(decoder.feed(chunk), list)


LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=40)
    | st.just(ID_A)
)
MSGPACK_VALUES = (
    LEAVES
    | st.lists(LEAVES, max_size=4)
    | st.dictionaries(  # shaped like hello bodies, to get past the first checks
        st.sampled_from(["v", "features", "listen", "agent", "other"]),
        LEAVES | st.lists(LEAVES, max_size=3),
        max_size=4,
    )
)


@settings(max_examples=300)
@given(
    kind=st.integers(min_value=-3, max_value=10),
    fields=st.lists(MSGPACK_VALUES, max_size=4),
)
def test_any_array_with_a_type_decodes_or_raises_peer_protocol_error(
    kind: int, fields: list[Any]
) -> None:
    data = msgpack.packb([kind, *fields], use_bin_type=True)
    try:
        messages = MessageDecoder().feed(data)
    except PeerProtocolError:
        return
    assert len(messages) <= 1
    if messages and isinstance(messages[0], Deferred):
        try:
            messages = [parse_deferred(messages[0])]
        except PeerProtocolError:
            return
    if messages:
        assert encode(messages[0])  # a decoded message is a well-formed one


@settings(max_examples=200)
@given(
    message=st.sampled_from(list(SAMPLES.values())),
    position=st.integers(min_value=0),
    value=st.integers(min_value=0, max_value=255),
)
def test_mutated_messages_decode_or_raise_peer_protocol_error(
    message: Message, position: int, value: int
) -> None:
    data = bytearray(encode(message))
    data[position % len(data)] = value
    with contextlib.suppress(PeerProtocolError):
        MessageDecoder().feed(bytes(data))
