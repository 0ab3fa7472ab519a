"""Negentropy v1: the reference's recorded conversations, properties, and the harness."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshnode.core.negentropy import (
    FINGERPRINT_SIZE,
    ID_SIZE,
    INFINITY,
    PROTOCOL_VERSION,
    REFERENCE,
    SINGLE_FIRST,
    Bound,
    FingerprintRange,
    IdListRange,
    Initiator,
    Item,
    NegentropyDecodeError,
    NegentropyError,
    NegentropyStateError,
    NegentropyUnsupportedVersion,
    NegentropyValueError,
    Responder,
    SkipRange,
    SortedItems,
    Strategy,
    decode_message,
    encode_message,
    encode_varint,
    fingerprint,
)
from meshnode.core.session import STRATEGY as SESSION_STRATEGY
from meshnode.store.base import MAX_RECONCILE_TIMESTAMP

REPO = Path(__file__).resolve().parents[1]
VECTORS_FILE = Path(__file__).parent / "vectors" / "negentropy" / "negentropy-v1.json"
VECTORS: list[dict[str, Any]] = json.loads(VECTORS_FILE.read_text())["vectors"]
VECTOR_NAMES = [vector["name"] for vector in VECTORS]
STRATEGIES = {"reference": REFERENCE, "single-first": SINGLE_FIRST}


@cache
def vector(name: str) -> dict[str, Any]:
    return next(v for v in VECTORS if v["name"] == name)


@cache
def vector_items(name: str, side: str) -> SortedItems:
    return SortedItems((ts, bytes.fromhex(h)) for ts, h in vector(name)[f"{side}_items"])


def vector_messages(name: str) -> list[bytes]:
    return [bytes.fromhex(m["hex"]) for m in vector(name)["messages"]]


@dataclass
class Conversation:
    messages: list[bytes] = field(default_factory=list)
    have: list[bytes] = field(default_factory=list)
    need: list[bytes] = field(default_factory=list)

    @property
    def round_trips(self) -> int:
        return len(self.messages) // 2

    @property
    def size(self) -> int:
        return sum(len(m) for m in self.messages)


def converse(
    initiator: Initiator, responder: Responder, max_round_trips: int = 500
) -> Conversation:
    conversation = Conversation()
    message: bytes | None = initiator.initiate()
    while message is not None:
        assert conversation.round_trips < max_round_trips, "reconciliation does not converge"
        reply = responder.reconcile(message)
        conversation.messages += [message, reply]
        step = initiator.reconcile(reply)
        conversation.have += step.have_ids
        conversation.need += step.need_ids
        message = step.message
    return conversation


def hex_sorted(ids: Sequence[bytes]) -> list[str]:
    return sorted(i.hex() for i in ids)


# -- The reference's recorded conversations -----------------------------------------------


def test_vector_file_is_consistent() -> None:
    assert {v["name"] for v in VECTORS} == set(VECTOR_NAMES)
    for v in VECTORS:
        messages = vector_messages(v["name"])
        assert v["bytes"] == sum(len(m) for m in messages)
        assert v["round_trips"] == len(messages) // 2
        assert [m["from"] for m in v["messages"]] == ["client", "server"] * v["round_trips"]


@pytest.mark.parametrize("name", VECTOR_NAMES)
def test_vector_messages_parse_and_reencode(name: str) -> None:
    for message in vector_messages(name):
        assert encode_message(decode_message(message)) == message


@pytest.mark.parametrize("name", VECTOR_NAMES)
def test_vector_as_client(name: str) -> None:
    v = vector(name)
    messages = vector_messages(name)
    client = Initiator(
        vector_items(name, "client"), strategy=REFERENCE, frame_size_limit=v["frame_size_limit"]
    )
    assert client.initiate() == messages[0]
    have: list[bytes] = []
    need: list[bytes] = []
    for i in range(1, len(messages), 2):
        step = client.reconcile(messages[i])
        have += step.have_ids
        need += step.need_ids
        assert step.message == (messages[i + 1] if i + 1 < len(messages) else None), i
    assert hex_sorted(have) == v["client_have"]
    assert hex_sorted(need) == v["client_need"]


@pytest.mark.parametrize("name", VECTOR_NAMES)
def test_vector_as_server(name: str) -> None:
    messages = vector_messages(name)
    server = Responder(
        vector_items(name, "server"),
        strategy=REFERENCE,
        frame_size_limit=vector(name)["frame_size_limit"],
    )
    for i in range(0, len(messages), 2):
        assert server.reconcile(messages[i]) == messages[i + 1], i


@pytest.mark.parametrize("strategy", STRATEGIES.values(), ids=STRATEGIES.keys())
@pytest.mark.parametrize("name", VECTOR_NAMES)
def test_vector_own_client_and_server(name: str, strategy: Strategy) -> None:
    v = vector(name)
    conversation = converse(
        Initiator(
            vector_items(name, "client"),
            strategy=strategy,
            frame_size_limit=v["frame_size_limit"],
        ),
        Responder(
            vector_items(name, "server"),
            strategy=strategy,
            frame_size_limit=v["frame_size_limit"],
        ),
    )
    assert hex_sorted(conversation.have) == v["client_have"]
    assert hex_sorted(conversation.need) == v["client_need"]
    if strategy is REFERENCE:
        assert conversation.messages == vector_messages(name)
    elif v["client_have"] or v["client_need"]:
        assert conversation.round_trips <= v["round_trips"] + 1
    else:
        assert conversation.round_trips == 1
        assert conversation.size == 1 + 3 + FINGERPRINT_SIZE + 1


# -- Codec -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, "00"),
        (1, "01"),
        (127, "7f"),
        (128, "8100"),
        (16383, "ff7f"),
        (16384, "818000"),
        (2**64 - 1, "81ffffffffffffffff7f"),
    ],
)
def test_varint(value: int, encoded: str) -> None:
    assert encode_varint(value).hex() == encoded
    # A varint is the timestamp of a bound: ``value + 1`` after the version byte.
    if value < INFINITY:
        ranges = decode_message(bytes([PROTOCOL_VERSION]) + encode_varint(value + 1) + b"\0\0")
        assert ranges == (SkipRange(Bound(value)),)


def test_varint_out_of_range_cannot_be_encoded() -> None:
    for value in (-1, 2**64):
        with pytest.raises(NegentropyValueError):
            encode_varint(value)


def test_fingerprint_follows_the_spec() -> None:
    ids = [bytes([255] * ID_SIZE), bytes([2] + [0] * (ID_SIZE - 1))]
    total = sum(int.from_bytes(i, "little") for i in ids) % 2**256
    assert total == 1  # the carry wraps around
    expected = hashlib.sha256(total.to_bytes(ID_SIZE, "little") + b"\x02").digest()[:16]
    index = SortedItems([(5, ids[0]), (7, ids[1])])
    assert index.fingerprint(0, 2) == fingerprint(total, 2) == expected
    assert len(expected) == FINGERPRINT_SIZE
    empty = hashlib.sha256(bytes(ID_SIZE) + b"\x00").digest()[:16]
    assert SortedItems([]).fingerprint(0, 0) == empty


def test_bounds_delta_encoding_and_infinity() -> None:
    ranges = (
        SkipRange(Bound(1000)),
        FingerprintRange(Bound(1000, b"\x07\x08"), b"f" * 16),
        IdListRange(Bound(1500), (b"a" * 32, b"b" * 32)),
        SkipRange(Bound(INFINITY)),
    )
    encoded = encode_message(ranges)
    assert encoded.hex().startswith("61" + "8769" + "00" + "00" + "01" + "02" + "0708" + "01")
    assert encoded.endswith(b"\x00\x00\x00")  # infinity is 0, empty prefix, Skip
    assert decode_message(encoded) == ranges


def test_decoder_saturates_timestamps_at_infinity() -> None:
    near_end = encode_varint(INFINITY - 10)
    message = bytes([PROTOCOL_VERSION]) + near_end + b"\0\0" + encode_varint(100) + b"\0\0"
    first, second = decode_message(message)
    assert first.upper == Bound(INFINITY - 11)
    assert second.upper == Bound(INFINITY)
    after_infinity = bytes([PROTOCOL_VERSION, 0, 0, 0, 5, 1, 9, 0])
    assert decode_message(after_infinity)[1].upper == Bound(INFINITY, b"\x09")


def test_id_prefixes_are_zero_padded() -> None:
    assert Bound(3, b"ab").key == Bound(3, b"ab\0\0").key
    index = SortedItems([(3, b"ab" + bytes(30)), (3, b"ab" + bytes(29) + b"\1")])
    assert index.lower_bound(Bound(3, b"ab"), 0, 2) == 0
    assert index.lower_bound(Bound(3, b"ab" + bytes(30)), 0, 2) == 0
    assert index.lower_bound(Bound(3, b"ab\0\1"), 0, 2) == 2
    # b"ab\0" then b"ab" is the same bound twice, not a step back.
    skip_to = bytes([PROTOCOL_VERSION, 4, 3]) + b"ab\0" + bytes([0])
    message = skip_to + bytes([1, 2]) + b"ab" + bytes([0])
    assert len(decode_message(message)) == 2


@pytest.mark.parametrize(
    ("hex_message", "why"),
    [
        ("", "empty"),
        ("00", "not a version byte"),
        ("7f", "not a version byte"),
        ("6101", "truncated bound"),
        ("610100", "no mode"),
        ("61010003", "unknown mode"),
        ("6180", "truncated varint"),
        ("6101000101", "truncated fingerprint"),
        ("61010002ff7f", "id list longer than the message"),
        ("610121" + "00" * 33 + "00", "prefix longer than an id"),
        ("6101" + "8080808080808080808000", "varint of 11 bytes"),
        ("61" + "82808080808080808000" + "0000", "varint over 64 bits"),
        ("610001ff00" + "000102" + "00", "bounds out of order: at infinity, smaller prefix"),
        ("610501ff00" + "010102" + "00", "bounds out of order: same timestamp, smaller id"),
    ],
)
def test_malformed_messages_are_rejected(hex_message: str, why: str) -> None:
    message = bytes.fromhex(hex_message)
    with pytest.raises(NegentropyDecodeError):
        decode_message(message)
    with pytest.raises(NegentropyDecodeError):
        Responder(SortedItems([])).reconcile(message)


def test_responder_answers_another_version_with_its_own() -> None:
    responder = Responder(SortedItems([(12345, b"\xee" * 32)]), strategy=REFERENCE)
    assert responder.reconcile(bytes.fromhex("62aabbccddeeff")) == b"\x61"
    assert responder.reconcile(bytes.fromhex("60")) == b"\x61"
    # ... and still serves version 1 afterwards.
    assert responder.reconcile(bytes.fromhex("6100000200")) == bytes.fromhex(
        "61000002" + "01" + "ee" * 32
    )


def test_initiator_rejects_a_downgrade_offer() -> None:
    initiator = Initiator(SortedItems([]))
    initiator.initiate()
    with pytest.raises(NegentropyUnsupportedVersion) as caught:
        initiator.reconcile(b"\x60")
    assert caught.value.version == 0x60
    with pytest.raises(NegentropyStateError):
        initiator.reconcile(b"\x61")


def test_initiator_state_machine() -> None:
    initiator = Initiator(SortedItems([]), strategy=SINGLE_FIRST)
    with pytest.raises(NegentropyStateError):
        initiator.reconcile(b"\x61")
    assert initiator.initiate() == bytes([PROTOCOL_VERSION, 0, 0, 1]) + fingerprint(0, 0)
    with pytest.raises(NegentropyStateError):
        initiator.initiate()
    step = initiator.reconcile(b"\x61")
    assert step.done and step.message is None and not step.have_ids and not step.need_ids
    with pytest.raises(NegentropyStateError):
        initiator.reconcile(b"\x61")


def test_a_failed_decode_ends_the_initiator() -> None:
    initiator = Initiator(SortedItems([]))
    initiator.initiate()
    with pytest.raises(NegentropyDecodeError):
        initiator.reconcile(b"\x61\x01")
    with pytest.raises(NegentropyStateError):
        initiator.reconcile(b"\x61")


def test_invalid_local_input() -> None:
    good = b"\1" * 32
    for rows in ([(INFINITY, good)], [(-1, good)], [(1, b"\1" * 31)], [(1, good), (1, good)]):
        with pytest.raises(NegentropyValueError):
            SortedItems(rows)
    for limit in (1, 4095):
        with pytest.raises(NegentropyValueError):
            Responder(SortedItems([]), frame_size_limit=limit)
    for buckets, id_list_below in ((1, 32), (16, 8), (100, 200)):
        with pytest.raises(NegentropyValueError):
            Strategy(buckets=buckets, id_list_below=id_list_below)
    with pytest.raises(NegentropyValueError):
        Bound(1, bytes(33))
    assert issubclass(NegentropyValueError, ValueError)


def test_items_sort_by_timestamp_then_id() -> None:
    rows = [(2, b"\0" * 32), (1, b"\2" * 32), (1, b"\1" * 32)]
    index = SortedItems(rows)
    assert [index.item(i) for i in range(3)] == [
        Item(1, b"\1" * 32),
        Item(1, b"\2" * 32),
        Item(2, b"\0" * 32),
    ]
    assert index.ids(1, 3) == [b"\2" * 32, b"\0" * 32]


# -- Properties ----------------------------------------------------------------------------

_PREFIX_BASE = hashlib.sha256(b"shared id prefix").digest()


@st.composite
def item_sets(draw: st.DrawFn) -> tuple[list[tuple[int, bytes]], list[tuple[int, bytes]]]:
    """Client and server items: some shared, some only on one side, often equal timestamps."""
    shared, client_only, server_only = (draw(st.integers(0, 150)) for _ in range(3))
    spread = draw(st.sampled_from([1, 3, 1000, 2**31, INFINITY]))
    prefix = draw(st.sampled_from([0, 1, 3, 31]))
    rng = random.Random(draw(st.integers(0, 2**32)))
    seen: set[bytes] = set()
    rows: list[tuple[int, bytes]] = []
    untwinned: list[bytes] = []
    while len(rows) < shared + client_only + server_only:
        if prefix == ID_SIZE - 1 and untwinned and rng.random() < 0.5:
            # Ids that differ in their last byte only need a full-length bound between
            # them. Only pairs: many such ids make the additive fingerprints of two
            # different sets collide (a+d = b+c), which hashed ids never do.
            twin = untwinned.pop(rng.randrange(len(untwinned)))
            item_id = twin[:-1] + rng.randbytes(1)
        else:
            keep = _PREFIX_BASE[: rng.choice([0, prefix])] if prefix < ID_SIZE - 1 else b""
            item_id = keep + rng.randbytes(ID_SIZE - len(keep))
            untwinned.append(item_id)
        if item_id not in seen:
            seen.add(item_id)
            rows.append((rng.randrange(spread), item_id))
    client = rows[:shared] + rows[shared : shared + client_only]
    server = rows[:shared] + rows[shared + client_only :]
    return client, server


@settings(max_examples=60)
@given(item_sets())
def test_reconciles_to_the_symmetric_difference(
    sets: tuple[list[tuple[int, bytes]], list[tuple[int, bytes]]],
) -> None:
    client_rows, server_rows = sets
    client, server = SortedItems(client_rows), SortedItems(server_rows)
    client_ids = {i for _, i in client_rows}
    server_ids = {i for _, i in server_rows}
    for strategy in STRATEGIES.values():
        for limit in (0, 4096):
            conversation = converse(
                Initiator(client, strategy=strategy, frame_size_limit=limit),
                Responder(server, strategy=strategy, frame_size_limit=limit),
            )
            assert sorted(conversation.have) == sorted(client_ids - server_ids)
            assert sorted(conversation.need) == sorted(server_ids - client_ids)
            if limit:
                assert max(len(m) for m in conversation.messages) <= limit
            for message in conversation.messages:
                decode_message(message)


def _mutations() -> st.SearchStrategy[bytes]:
    seeds = [m for name in VECTOR_NAMES for m in vector_messages(name) if len(m) < 600]

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        message = draw(st.sampled_from(seeds))
        start = draw(st.integers(0, len(message)))
        cut = draw(st.integers(0, 8))
        return message[:start] + draw(st.binary(max_size=8)) + message[start + cut :]

    return st.one_of(
        st.binary(max_size=300),
        st.binary(max_size=300).map(lambda tail: b"\x61" + tail),
        mutate(),
    )


@settings(max_examples=400)
@given(_mutations())
def test_decoding_is_total(message: bytes) -> None:
    index = vector_items("far-future-timestamp", "server")
    for limit in (0, 4096):
        try:
            reply = Responder(index, strategy=REFERENCE, frame_size_limit=limit).reconcile(message)
        except NegentropyError:
            pass
        else:
            decode_message(reply)  # whatever we answer is itself well formed
        initiator = Initiator(index, strategy=SINGLE_FIRST, frame_size_limit=limit)
        initiator.initiate()
        try:
            step = initiator.reconcile(message)
        except NegentropyError:
            pass
        else:
            if step.message is not None:
                decode_message(step.message)


# -- Scale ---------------------------------------------------------------------------------


class CountingIndex:
    """An ``ItemIndex`` that counts how many ids a session had to look at."""

    def __init__(self, inner: SortedItems) -> None:
        self.inner = inner
        self.ids_listed = 0

    def __len__(self) -> int:
        return len(self.inner)

    def item(self, index: int) -> Item:
        return self.inner.item(index)

    def ids(self, lo: int, hi: int) -> list[bytes]:
        self.ids_listed += hi - lo
        return self.inner.ids(lo, hi)

    def lower_bound(self, bound: Bound, lo: int, hi: int) -> int:
        return self.inner.lower_bound(bound, lo, hi)

    def fingerprint(self, lo: int, hi: int) -> bytes:
        return self.inner.fingerprint(lo, hi)


N_LARGE = 100_000


def large_rows() -> Iterator[tuple[int, bytes]]:
    for i in range(N_LARGE):
        yield 1_700_000_000 + i % 86_400, hashlib.sha256(i.to_bytes(4, "little")).digest()


@pytest.fixture(scope="module")
def large() -> tuple[SortedItems, SortedItems]:
    started = time.perf_counter()
    rows = list(large_rows())
    sides = SortedItems(rows), SortedItems(reversed(rows))
    assert time.perf_counter() - started < 5
    return sides


def test_single_first_in_sync_at_100k_is_one_small_round_trip(
    large: tuple[SortedItems, SortedItems],
) -> None:
    client, server = CountingIndex(large[0]), CountingIndex(large[1])
    conversation = converse(
        Initiator(client, strategy=SINGLE_FIRST), Responder(server, strategy=SINGLE_FIRST)
    )
    assert conversation.round_trips == 1
    assert conversation.size <= 100
    assert client.ids_listed == server.ids_listed == 0
    reference = converse(
        Initiator(large[0], strategy=REFERENCE), Responder(large[1], strategy=REFERENCE)
    )
    assert reference.round_trips == 1
    assert reference.size > conversation.size


def test_cost_follows_the_difference_at_100k(large: tuple[SortedItems, SortedItems]) -> None:
    server = large[1]
    missing = server.item(12_345)
    client = CountingIndex(SortedItems(r for r in large_rows() if r[1] != missing.id))
    round_trips = {}
    for name, strategy in STRATEGIES.items():
        conversation = converse(
            Initiator(client, strategy=strategy), Responder(server, strategy=strategy)
        )
        assert conversation.need == [missing.id] and conversation.have == []
        round_trips[name] = conversation.round_trips
    assert round_trips["single-first"] == round_trips["reference"] + 1
    assert client.ids_listed < 200


# -- The conformance harness ---------------------------------------------------------------


def harness_env(frame_size_limit: int = 0) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "FRAMESIZELIMIT"}
    if frame_size_limit:
        env["FRAMESIZELIMIT"] = str(frame_size_limit)
    return env


HARNESS = [sys.executable, "-m", "meshnode.core.negentropy_harness"]


class Harness:
    """One harness process, driven line by line as the reference's fuzz.pl drives it."""

    def __init__(self, frame_size_limit: int = 0, strategy: str = "reference") -> None:
        self.process = subprocess.Popen(
            [*HARNESS, "--strategy", strategy],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=harness_env(frame_size_limit),
        )
        self.watchdog = threading.Timer(20, self.process.kill)
        self.watchdog.start()

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def receive(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, "harness exited early"
        return line.rstrip("\n")

    def finish(self) -> tuple[int, str, str]:
        stdout, stderr = self.process.communicate(timeout=20)
        self.watchdog.cancel()
        return self.process.returncode, stdout, stderr


@pytest.mark.parametrize(
    ("client_strategy", "server_strategy"),
    [("reference", "reference"), ("meshnode", "meshnode"), ("meshnode", "reference")],
)
def test_harness_session_between_two_processes(client_strategy: str, server_strategy: str) -> None:
    rng = random.Random(7)
    client_ids: set[str] = set()
    server_ids: set[str] = set()
    client = Harness(strategy=client_strategy)
    server = Harness(frame_size_limit=4096, strategy=server_strategy)
    for _ in range(400):
        item_id = rng.randbytes(32).hex()
        line = f"item,{1677970534 + rng.randrange(50)},{item_id}"
        side = rng.random()  # 10% only on the client, 10% only on the server
        if side >= 0.1:
            client.send(line)
            client_ids.add(item_id)
        if not 0.1 <= side < 0.2:
            server.send(line)
            server_ids.add(item_id)
    client.send("seal")
    server.send("seal")
    client.send("initiate")
    have: set[str] = set()
    need: set[str] = set()
    round_trips = 0
    while (line := client.receive()) != "done":
        kind, _, payload = line.partition(",")
        if kind == "have":
            have.add(payload)
        elif kind == "need":
            need.add(payload)
        else:
            assert kind == "msg"
            server.send(line)
            reply = server.receive()
            assert reply.startswith("msg,61")
            assert len(reply) - len("msg,") <= 2 * 4096
            client.send(reply)
            round_trips += 1
    assert have == client_ids - server_ids
    assert need == server_ids - client_ids
    assert round_trips > 1  # the frame size limit spread the server's answer over rounds
    assert client.finish() == (0, "", "")
    assert server.finish() == (0, "", "")


def run_harness(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        HARNESS,
        input=script,
        capture_output=True,
        text=True,
        cwd=REPO,
        env=harness_env(),
        timeout=20,
        check=False,
    )


def test_harness_downgrade_reply() -> None:
    # As the reference's protoversion.pl: another version gets our version byte alone.
    item = "item,12345," + "ee" * 32
    done = run_harness(f"{item}\nseal\nmsg,62aabbccddeeff\nmsg,6100000200\n")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines() == ["msg,61", "msg,61000002" + "01" + "ee" * 32]


@pytest.mark.parametrize(
    ("script", "error"),
    [
        ("seal\nmsg,61aabbccddeeff\n", "message ends"),
        ("seal\nbogus\n", "unknown cmd: bogus"),
        ("initiate\n", "initiate before seal"),
        ("item,1,00\nseal\n", "item id must be 32 bytes"),
    ],
)
def test_harness_errors(script: str, error: str) -> None:
    done = run_harness(script)
    assert done.returncode == 1
    assert error in done.stderr


@pytest.mark.parametrize("strategy", [REFERENCE, SINGLE_FIRST, SESSION_STRATEGY])
def test_the_latest_reconcile_timestamp_never_puts_2_to_the_31_on_the_wire(
    strategy: Strategy,
) -> None:
    """The JavaScript reference reads varints with 32-bit signed arithmetic (protocol/peer.md §5.2).

    An encoded bound is 1 + its timestamp's delta to the previous bound, so it is at most
    the timestamp + 1: items at ``MAX_RECONCILE_TIMESTAMP`` must keep that below 2^31.
    """
    rng = random.Random(31)
    latest = MAX_RECONCILE_TIMESTAMP
    ours = [(latest - rng.randrange(2), rng.randbytes(32)) for _ in range(300)]
    theirs = ours[:250] + [(latest, rng.randbytes(32)) for _ in range(20)]
    initiator = Initiator(SortedItems(ours), strategy=strategy)
    responder = Responder(SortedItems(theirs), strategy=strategy)
    message: bytes | None = initiator.initiate()
    bounds: list[int] = []
    while message is not None:
        reply = responder.reconcile(message)
        for sent in (message, reply):
            bounds += [
                r.upper.timestamp for r in decode_message(sent) if r.upper.timestamp != INFINITY
            ]
        message = initiator.reconcile(reply).message
    assert bounds and max(bounds) == latest
    assert max(bounds) + 1 < 2**31
