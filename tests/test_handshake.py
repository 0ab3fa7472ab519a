"""The peer handshake: Noise_XXpsk0 with the network key as PSK, and identity binding.

Three length-prefixed messages (``meshnode.core.handshake``)::

    1. initiator -> responder   psk, e            payload: empty
    2. responder -> initiator   e, ee, s, es      payload: binding
    3. initiator -> responder   s, se             payload: binding

A node without the network key is dropped at message 1 without a reply, so
it learns nothing; with the key, identities still travel only encrypted.
Every key and every ephemeral here is deterministic.
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

from meshnode.core.channel import ChannelError, FrameDecoder, frame
from meshnode.core.handshake import (
    BINDING_CONTEXT,
    PROLOGUE,
    PROTOCOL_NAME,
    REPLAY_CACHE_SIZE,
    HandshakeError,
    PeerHandshake,
    ReplayCache,
    binding,
)
from meshnode.core.identity import Identity
from meshnode.core.netkey import PUBLIC_NETWORK_KEY
from meshnode.core.noise import HandshakeState, SymmetricState
from meshnode.core.x25519 import KeyPair
from tests.helpers import identity

NETWORK_KEY = hashlib.sha256(b"test network key").digest()
OTHER_NETWORK_KEY = hashlib.sha256(b"another network's key").digest()

INITIATOR, RESPONDER = identity(1), identity(2)

# Frame header (2) + the Noise message: e (32) + tag of the empty payload (16).
MESSAGE_1_SIZE = 2 + 32 + 16
# 2 + e (32) + encrypted s (32 + 16) + encrypted binding (96 + 16).
MESSAGE_2_SIZE = 2 + 32 + 48 + 112
# 2 + encrypted s (48) + encrypted binding (112).
MESSAGE_3_SIZE = 2 + 48 + 112


def static_key(label: str) -> KeyPair:
    return KeyPair(hashlib.sha256(label.encode()).digest())


def seeded_rng(seed: int | str) -> Callable[[], bytes]:
    """32-byte ephemerals from random.Random, which seeds deterministically from an int or str."""
    generator = random.Random(seed)
    return lambda: generator.randbytes(32)


def node(
    who: Identity,
    *,
    initiator: bool,
    network_key: bytes = NETWORK_KEY,
    seed: int | None = None,
    replay_cache: ReplayCache | None = None,
) -> PeerHandshake:
    """A PeerHandshake whose static key and ephemerals derive from the identity (and seed)."""
    label = who.node_id
    return PeerHandshake(
        initiator=initiator,
        identity=who,
        static_key=static_key(f"noise static of {label}"),
        network_key=network_key,
        rng=seeded_rng(f"{label}/{initiator}/{seed}"),
        replay_cache=replay_cache,
    )


def pair(replay_cache: ReplayCache | None = None) -> tuple[PeerHandshake, PeerHandshake]:
    return (
        node(INITIATOR, initiator=True),
        node(RESPONDER, initiator=False, replay_cache=replay_cache),
    )


def handshake(initiator: PeerHandshake, responder: PeerHandshake) -> tuple[bytes, bytes, bytes]:
    """Run the three messages; return them as sent on the wire."""
    assert responder.start() == b""
    message_1 = initiator.start()
    message_2 = responder.receive_data(message_1)
    message_3 = initiator.receive_data(message_2)
    assert responder.receive_data(message_3) == b""
    return message_1, message_2, message_3


def spy_on_writes(side: PeerHandshake) -> list[bytes]:
    """Record every Noise message ``side`` writes (its HandshakeState's write_message)."""
    noise: HandshakeState = side._noise
    written: list[bytes] = []
    original = noise.write_message

    def write_message(payload: bytes = b"") -> bytes:
        message = original(payload)
        written.append(message)
        return message

    noise.write_message = write_message  # type: ignore[method-assign]
    return written


class RawPeer:
    """A hand-driven Noise peer speaking meshnode's pattern, to send what PeerHandshake never would.

    ``protocol`` and ``network_key`` may differ from meshnode's to play an outsider.
    """

    def __init__(
        self,
        *,
        initiator: bool,
        network_key: bytes | None = NETWORK_KEY,
        static: KeyPair | None = None,
        protocol: str = PROTOCOL_NAME,
        seed: int = 7,
    ) -> None:
        self.static = static or static_key(f"raw peer {seed}")
        self.noise = HandshakeState(
            protocol,
            initiator=initiator,
            prologue=PROLOGUE,
            s=self.static,
            psks=[] if network_key is None else [network_key],
            rng=seeded_rng(seed),
        )
        self._frames = FrameDecoder()

    @property
    def static_public(self) -> bytes:
        return self.static.public

    def write(self, payload: bytes = b"") -> bytes:
        return frame(self.noise.write_message(payload))

    def read(self, data: bytes) -> bytes:
        (message,) = self._frames.feed(data)
        return self.noise.read_message(message)


def forged_binding(named: Identity, signer: Identity, static_public: bytes) -> bytes:
    return named.public_key + signer.sign(BINDING_CONTEXT + static_public)


# --- A successful handshake -------------------------------------------------------------------


def test_two_nodes_learn_each_others_ed25519_key_and_agree_on_the_handshake_hash() -> None:
    initiator, responder = pair()
    handshake(initiator, responder)
    assert initiator.established is not None and responder.established is not None
    assert initiator.established.remote_node == RESPONDER.public_key
    assert responder.established.remote_node == INITIATOR.public_key
    assert initiator.established.handshake_hash == responder.established.handshake_hash
    assert len(initiator.established.handshake_hash) == 32
    assert initiator.established.leftover == responder.established.leftover == b""


def test_the_three_messages_have_the_sizes_the_pattern_gives() -> None:
    message_1, message_2, message_3 = handshake(*pair())
    assert len(message_1) == MESSAGE_1_SIZE
    assert len(message_2) == MESSAGE_2_SIZE
    assert len(message_3) == MESSAGE_3_SIZE


def test_the_established_channels_carry_bytes_both_ways() -> None:
    initiator, responder = pair()
    handshake(initiator, responder)
    assert initiator.established is not None and responder.established is not None
    there, back = initiator.established.channel, responder.established.channel
    for size in (0, 1, 1000, 70000):
        payload = bytes(i % 251 for i in range(size))
        assert back.open(there.seal(payload)) == payload
        assert there.open(back.seal(payload[::-1])) == payload[::-1]


def test_the_channels_of_different_handshakes_do_not_understand_each_other() -> None:
    first_initiator, first_responder = pair()
    handshake(first_initiator, first_responder)
    second_initiator = node(INITIATOR, initiator=True, seed=1)
    second_responder = node(RESPONDER, initiator=False, seed=1)
    handshake(second_initiator, second_responder)
    assert first_initiator.established is not None and second_responder.established is not None
    assert first_initiator.established.handshake_hash != second_responder.established.handshake_hash
    with pytest.raises(ChannelError):
        second_responder.established.channel.open(
            first_initiator.established.channel.seal(b"hello")
        )


def test_bytes_sent_right_after_message_3_arrive_as_leftover_and_decrypt() -> None:
    initiator, responder = pair()
    responder.start()
    message_2 = responder.receive_data(initiator.start())
    message_3 = initiator.receive_data(message_2)
    assert initiator.established is not None
    sealed = initiator.established.channel.seal(b"first") + initiator.established.channel.seal(
        b"second, cut short"
    )
    cut = len(sealed) - 5
    assert responder.receive_data(message_3 + sealed[:cut]) == b""
    assert responder.established is not None
    assert responder.established.leftover == sealed[:cut]
    channel = responder.established.channel
    assert channel.open(responder.established.leftover) == b"first"
    assert channel.open(sealed[cut:]) == b"second, cut short"


def test_a_partial_frame_header_after_message_3_is_leftover_too() -> None:
    initiator, responder = pair()
    message_2 = responder.receive_data(initiator.start())
    message_3 = initiator.receive_data(message_2)
    assert initiator.established is not None
    sealed = initiator.established.channel.seal(b"data")
    responder.receive_data(message_3 + sealed[:1])
    assert responder.established is not None
    assert responder.established.leftover == sealed[:1]
    assert responder.established.channel.open(sealed[:1] + sealed[1:]) == b"data"


def test_the_responder_never_speaks_first() -> None:
    _, responder = pair()
    assert responder.start() == b""


# --- Outsiders: the network key ---------------------------------------------------------------


@pytest.mark.parametrize(
    "outsider_key",
    [OTHER_NETWORK_KEY, bytes(32), PUBLIC_NETWORK_KEY],
    ids=["other-network", "all-zero", "public-network"],
)
def test_a_wrong_network_key_fails_at_message_1_without_a_reply(outsider_key: bytes) -> None:
    outsider = node(INITIATOR, initiator=True, network_key=outsider_key)
    responder = node(RESPONDER, initiator=False)
    written = spy_on_writes(responder)
    sent = responder.start()
    with pytest.raises(HandshakeError) as failure:
        sent += responder.receive_data(outsider.start())
    assert failure.value.reason == "network-key"
    assert sent == b""
    assert written == []
    assert responder.established is None


def _outsider_openings() -> list[tuple[str, bytes]]:
    no_psk = RawPeer(
        initiator=True, network_key=None, protocol="Noise_XX_25519_ChaChaPoly_SHA256"
    ).write()
    wrong_key = RawPeer(initiator=True, network_key=OTHER_NETWORK_KEY).write()
    return [
        ("noise-xx-without-psk", no_psk),
        ("wrong-network-key", wrong_key),
        ("random-frame", frame(random.Random(1).randbytes(48))),
        ("empty-frame", frame(b"")),
        ("http", b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"),
        ("tls-client-hello", bytes.fromhex("160301020001") + bytes(300)),
        ("nothing", b""),
    ]


@pytest.mark.parametrize(
    "opening", [o for _, o in _outsider_openings()], ids=[n for n, _ in _outsider_openings()]
)
def test_an_outsider_learns_nothing_not_even_that_a_meshnode_listens(opening: bytes) -> None:
    """Whatever an outsider opens with, the responder sends nothing: it fails or waits."""
    responder = node(RESPONDER, initiator=False)
    written = spy_on_writes(responder)
    sent = responder.start()
    with contextlib.suppress(HandshakeError):
        sent += responder.receive_data(opening)
    assert sent == b""
    assert written == []
    # Nothing was sent, so in particular nothing that names the responder.
    for secret in (RESPONDER.public_key, RESPONDER.node_id.encode()):
        assert secret not in sent


def test_message_2_carries_the_responders_identity_only_encrypted() -> None:
    initiator, responder = pair()
    message_1, message_2, message_3 = handshake(initiator, responder)
    responder_static = static_key(f"noise static of {RESPONDER.node_id}").public
    initiator_static = static_key(f"noise static of {INITIATOR.node_id}").public
    wire = message_1 + message_2 + message_3
    for secret in (
        RESPONDER.public_key,
        RESPONDER.node_id.encode(),
        responder_static,
        INITIATOR.public_key,
        INITIATOR.node_id.encode(),
        initiator_static,
    ):
        assert secret not in wire
    # Nor any 8-byte window of them (no partial leak either).
    for secret in (RESPONDER.public_key, responder_static):
        assert all(secret[i : i + 8] not in message_2 for i in range(len(secret) - 7))


def test_a_message_1_that_does_not_decrypt_does_not_enter_the_replay_cache() -> None:
    """Outsiders cannot flush a replay out of the cache with junk first messages."""
    cache = ReplayCache(capacity=1)
    message_1 = node(INITIATOR, initiator=True).start()
    node(RESPONDER, initiator=False, replay_cache=cache).receive_data(message_1)
    for seed in range(20):
        outsider = node(INITIATOR, initiator=True, network_key=OTHER_NETWORK_KEY, seed=seed)
        with pytest.raises(HandshakeError, match="network-key"):
            node(RESPONDER, initiator=False, replay_cache=cache).receive_data(outsider.start())
    with pytest.raises(HandshakeError) as failure:
        node(RESPONDER, initiator=False, replay_cache=cache).receive_data(message_1)
    assert failure.value.reason == "replay"


# --- Replays of message 1 ---------------------------------------------------------------------


def test_a_replayed_message_1_is_refused_without_a_reply() -> None:
    cache = ReplayCache()
    initiator, responder = pair(replay_cache=cache)
    message_1, _, _ = handshake(initiator, responder)
    second = node(RESPONDER, initiator=False, replay_cache=cache)
    written = spy_on_writes(second)
    with pytest.raises(HandshakeError) as failure:
        second.receive_data(message_1)
    assert failure.value.reason == "replay"
    assert written == []


def test_fresh_first_messages_pass_the_replay_cache() -> None:
    cache = ReplayCache()
    for seed in range(10):
        initiator = node(INITIATOR, initiator=True, seed=seed)
        responder = node(RESPONDER, initiator=False, seed=seed, replay_cache=cache)
        handshake(initiator, responder)
        assert responder.established is not None


def test_a_responder_without_the_shared_cache_does_not_know_about_replays() -> None:
    """The cache is what refuses replays; the initiator side never needs one."""
    message_1, _, _ = handshake(*pair(replay_cache=ReplayCache()))
    assert len(node(RESPONDER, initiator=False).receive_data(message_1)) == MESSAGE_2_SIZE


def test_the_replay_cache_remembers_and_refuses() -> None:
    cache = ReplayCache(capacity=4)
    assert cache.check_and_add(b"a")
    assert not cache.check_and_add(b"a")
    assert not cache.check_and_add(b"a")
    assert cache.check_and_add(b"b")


def test_the_replay_cache_is_bounded_and_forgets_the_oldest_first() -> None:
    cache = ReplayCache(capacity=3)
    for item in (b"a", b"b", b"c", b"d"):
        assert cache.check_and_add(item)
    # b, c and d are remembered (checking a replay does not change the cache)...
    for item in (b"b", b"c", b"d", b"d", b"c", b"b"):
        assert not cache.check_and_add(item)
    # ...a, the oldest, was forgotten; remembering it again forgets b.
    assert cache.check_and_add(b"a")
    assert cache.check_and_add(b"b")
    for item in (b"d", b"a", b"b"):
        assert not cache.check_and_add(item)


def test_the_default_replay_cache_holds_replay_cache_size_messages() -> None:
    cache = ReplayCache()
    for i in range(REPLAY_CACHE_SIZE + 1):
        assert cache.check_and_add(i.to_bytes(4, "big"))
    assert not cache.check_and_add((1).to_bytes(4, "big"))
    assert not cache.check_and_add(REPLAY_CACHE_SIZE.to_bytes(4, "big"))
    assert cache.check_and_add((0).to_bytes(4, "big"))


def test_the_replay_cache_never_grows_past_its_capacity() -> None:
    cache = ReplayCache(capacity=100)
    for i in range(10_000):
        cache.check_and_add(i.to_bytes(4, "big"))
    assert len(cache._seen) == 100


# --- Tampering and truncation -----------------------------------------------------------------


@pytest.mark.parametrize("mask", [0x01, 0x80])
def test_a_tampered_message_2_fails_at_the_initiator(mask: int) -> None:
    """Every byte after the frame header is authenticated (or, for ``e``, hashed)."""
    _, good_message_2, _ = handshake(*pair())
    for position in range(2, MESSAGE_2_SIZE):
        initiator, responder = pair()
        assert responder.receive_data(initiator.start()) == good_message_2
        message_2 = bytearray(good_message_2)
        message_2[position] ^= mask
        with pytest.raises(HandshakeError) as failure:
            initiator.receive_data(bytes(message_2))
        assert failure.value.reason == "protocol", position
        assert initiator.established is None


@pytest.mark.parametrize("mask", [0x01, 0x80])
def test_a_tampered_message_3_fails_at_the_responder(mask: int) -> None:
    _, _, good_message_3 = handshake(*pair())
    for position in range(2, MESSAGE_3_SIZE):
        initiator, responder = pair()
        message_2 = responder.receive_data(initiator.start())
        assert initiator.receive_data(message_2) == good_message_3
        message_3 = bytearray(good_message_3)
        message_3[position] ^= mask
        with pytest.raises(HandshakeError) as failure:
            responder.receive_data(bytes(message_3))
        assert failure.value.reason == "protocol", position
        assert responder.established is None


@pytest.mark.parametrize("which", [1, 2, 3])
@pytest.mark.parametrize("position", [0, 1])
def test_a_tampered_frame_header_fails_or_waits(which: int, position: int) -> None:
    messages = handshake(*pair())
    for mask in (0x01, 0x80, 0xFF):
        initiator, responder = pair()
        if which >= 2:
            responder.receive_data(initiator.start())
        if which == 3:
            initiator.receive_data(messages[1])
        receiver = initiator if which == 2 else responder
        tampered = bytearray(messages[which - 1])
        tampered[position] ^= mask
        try:
            assert receiver.receive_data(bytes(tampered)) == b""
        except HandshakeError:
            continue
        assert receiver.established is None


@pytest.mark.parametrize("which", [1, 2, 3])
def test_a_truncated_message_waits_and_then_fails_on_garbage(which: int) -> None:
    """A frame cut short waits for the rest; when the rest is garbage the handshake fails."""
    good = handshake(*pair())
    for cut in range(len(good[which - 1])):
        initiator, responder = pair()
        if which >= 2:
            responder.receive_data(initiator.start())
        if which == 3:
            initiator.receive_data(good[1])
        receiver = initiator if which == 2 else responder
        assert receiver.receive_data(good[which - 1][:cut]) == b""
        assert receiver.established is None
        with pytest.raises(HandshakeError):
            receiver.receive_data(bytes(MESSAGE_2_SIZE))
        assert receiver.established is None


def test_a_message_split_in_two_frames_fails() -> None:
    initiator, responder = pair()
    message_1 = initiator.start()[2:]
    with pytest.raises(HandshakeError, match="network-key"):
        responder.receive_data(frame(message_1[:20]) + frame(message_1[20:]))


# --- Identity binding -------------------------------------------------------------------------


def test_a_responder_binding_signed_by_another_key_than_it_names_fails() -> None:
    initiator = node(INITIATOR, initiator=True)
    responder = RawPeer(initiator=False)
    responder.read(initiator.start())
    forged = forged_binding(RESPONDER, identity(3), responder.static_public)
    with pytest.raises(HandshakeError) as failure:
        initiator.receive_data(responder.write(forged))
    assert failure.value.reason == "binding"


def test_an_initiator_binding_signed_by_another_key_than_it_names_fails() -> None:
    initiator = RawPeer(initiator=True)
    responder = node(RESPONDER, initiator=False)
    initiator.read(responder.receive_data(initiator.write()))
    forged = forged_binding(INITIATOR, identity(3), initiator.static_public)
    with pytest.raises(HandshakeError) as failure:
        responder.receive_data(initiator.write(forged))
    assert failure.value.reason == "binding"
    assert responder.established is None


def test_a_binding_for_another_noise_static_key_fails() -> None:
    """A genuine binding, lifted from another connection, names the wrong static key."""
    initiator = node(INITIATOR, initiator=True)
    responder = RawPeer(initiator=False)
    responder.read(initiator.start())
    lifted = binding(RESPONDER, static_key("someone else's noise key").public)
    with pytest.raises(HandshakeError) as failure:
        initiator.receive_data(responder.write(lifted))
    assert failure.value.reason == "binding"


@pytest.mark.parametrize("size", [0, 32, 95, 97, 200])
def test_a_binding_of_the_wrong_size_fails(size: int) -> None:
    initiator = node(INITIATOR, initiator=True)
    responder = RawPeer(initiator=False)
    responder.read(initiator.start())
    payload = (binding(RESPONDER, responder.static_public) * 3)[:size]
    with pytest.raises(HandshakeError) as failure:
        initiator.receive_data(responder.write(payload))
    assert failure.value.reason == "binding"


def test_a_genuine_binding_from_a_raw_peer_is_accepted() -> None:
    """The RawPeer above speaks the protocol faithfully: only the forged payloads fail."""
    initiator = node(INITIATOR, initiator=True)
    responder = RawPeer(initiator=False)
    responder.read(initiator.start())
    message_3 = initiator.receive_data(responder.write(binding(RESPONDER, responder.static_public)))
    assert responder.read(message_3) == binding(
        INITIATOR, static_key(f"noise static of {INITIATOR.node_id}").public
    )
    assert initiator.established is not None
    assert initiator.established.remote_node == RESPONDER.public_key


def test_a_node_connecting_to_itself_fails() -> None:
    initiator = node(RESPONDER, initiator=True)
    responder = node(RESPONDER, initiator=False)
    message_2 = responder.receive_data(initiator.start())
    with pytest.raises(HandshakeError) as failure:
        initiator.receive_data(message_2)
    assert failure.value.reason == "self"
    assert initiator.established is None


def test_a_responder_sees_its_own_identity_in_message_3_and_fails() -> None:
    """Even with a different Noise static key, a binding naming this node is refused."""
    initiator = RawPeer(initiator=True)
    responder = node(RESPONDER, initiator=False)
    initiator.read(responder.receive_data(initiator.write()))
    with pytest.raises(HandshakeError) as failure:
        responder.receive_data(initiator.write(binding(RESPONDER, initiator.static_public)))
    assert failure.value.reason == "self"
    assert responder.established is None


# Curve25519 points of small order: X25519 with them gives all zeros.
LOW_ORDER_POINTS = [
    bytes(32),
    bytes([1]) + bytes(31),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
]


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=lambda point: point.hex()[:8])
def test_an_insiders_low_order_ephemeral_key_fails_cleanly_without_a_reply(point: bytes) -> None:
    """Message 1 is built by hand: only a holder of the network key can make it decrypt."""
    symmetric = SymmetricState(PROTOCOL_NAME.encode())
    symmetric.mix_hash(PROLOGUE)
    symmetric.mix_key_and_hash(NETWORK_KEY)  # psk
    symmetric.mix_hash(point)  # e
    symmetric.mix_key(point)  # psk mode: e is also mixed into the key
    message_1 = frame(point + symmetric.encrypt_and_hash(b""))
    responder = node(RESPONDER, initiator=False)
    with pytest.raises(HandshakeError) as failure:
        responder.receive_data(message_1)
    assert failure.value.reason == "protocol"


def test_message_1_with_a_payload_is_refused() -> None:
    responder = node(RESPONDER, initiator=False)
    written = spy_on_writes(responder)
    with pytest.raises(HandshakeError) as failure:
        responder.receive_data(RawPeer(initiator=True).write(b"early data"))
    assert failure.value.reason == "protocol"
    assert written == []


# --- After the end --------------------------------------------------------------------------


def test_after_a_failure_further_data_is_refused_with_state() -> None:
    responder = node(RESPONDER, initiator=False)
    with pytest.raises(HandshakeError):
        responder.receive_data(frame(bytes(48)))
    for data in (b"", node(INITIATOR, initiator=True).start(), bytes(10)):
        with pytest.raises(HandshakeError) as failure:
            responder.receive_data(data)
        assert failure.value.reason == "state"


def test_after_a_failure_at_the_initiator_further_data_is_refused_with_state() -> None:
    initiator = node(INITIATOR, initiator=True)
    initiator.start()
    with pytest.raises(HandshakeError):
        initiator.receive_data(frame(bytes(MESSAGE_2_SIZE - 2)))
    with pytest.raises(HandshakeError) as failure:
        initiator.receive_data(b"")
    assert failure.value.reason == "state"


def test_after_success_further_data_is_refused_with_state() -> None:
    initiator, responder = pair()
    handshake(initiator, responder)
    for side in (initiator, responder):
        with pytest.raises(HandshakeError) as failure:
            side.receive_data(b"\x00")
        assert failure.value.reason == "state"


def test_data_for_an_initiator_that_has_not_started_fails_cleanly() -> None:
    initiator, responder = pair()
    message_2 = responder.receive_data(node(INITIATOR, initiator=True).start())
    with pytest.raises(HandshakeError):
        initiator.receive_data(message_2)


# --- Totality and chunking --------------------------------------------------------------------


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def test_byte_at_a_time_the_handshake_still_completes() -> None:
    initiator, responder = pair()

    def byte_at_a_time(side: PeerHandshake, data: bytes) -> bytes:
        return b"".join(side.receive_data(data[i : i + 1]) for i in range(len(data)))

    message_2 = byte_at_a_time(responder, initiator.start())
    message_3 = byte_at_a_time(initiator, message_2)
    answers = byte_at_a_time(responder, message_3)
    assert answers == b""
    assert initiator.established is not None and responder.established is not None
    assert initiator.established.handshake_hash == responder.established.handshake_hash


@settings(max_examples=100)
@given(
    cuts_1=st.lists(st.integers(min_value=0), max_size=6),
    cuts_2=st.lists(st.integers(min_value=0), max_size=6),
    cuts_3=st.lists(st.integers(min_value=0), max_size=6),
)
def test_arbitrary_chunking_of_valid_messages_completes(
    cuts_1: list[int], cuts_2: list[int], cuts_3: list[int]
) -> None:
    initiator, responder = pair()
    message_2 = b"".join(responder.receive_data(c) for c in _chunks(initiator.start(), cuts_1))
    message_3 = b"".join(initiator.receive_data(c) for c in _chunks(message_2, cuts_2))
    assert b"".join(responder.receive_data(c) for c in _chunks(message_3, cuts_3)) == b""
    assert initiator.established is not None and responder.established is not None
    assert initiator.established.handshake_hash == responder.established.handshake_hash
    assert initiator.established.remote_node == RESPONDER.public_key
    assert responder.established.remote_node == INITIATOR.public_key


def _feed(side: PeerHandshake, chunks: list[bytes]) -> None:
    """Feed chunks until the handshake fails: only HandshakeError may come out."""
    try:
        for chunk in chunks:
            out = side.receive_data(chunk)
            assert isinstance(out, bytes)
    except HandshakeError as exc:
        assert exc.reason in {"network-key", "protocol", "binding", "replay", "self", "state"}


@settings(max_examples=200)
@given(chunks=st.lists(st.binary(max_size=120), max_size=5))
def test_random_bytes_to_a_responder_only_ever_raise_handshake_error(chunks: list[bytes]) -> None:
    responder = node(RESPONDER, initiator=False, replay_cache=ReplayCache())
    written = spy_on_writes(responder)
    _feed(responder, chunks)
    assert written == []  # random bytes never decrypt as message 1


@settings(max_examples=200)
@given(chunks=st.lists(st.binary(max_size=250), max_size=5), started=st.booleans())
def test_random_bytes_to_an_initiator_only_ever_raise_handshake_error(
    chunks: list[bytes], started: bool
) -> None:
    initiator = node(INITIATOR, initiator=True)
    if started:
        initiator.start()
    _feed(initiator, chunks)
    assert initiator.established is None


@settings(max_examples=100)
@given(garbage=st.lists(st.binary(max_size=200), max_size=4), cuts=st.lists(st.integers(0)))
def test_garbage_after_a_valid_message_1_only_ever_raises_handshake_error(
    garbage: list[bytes], cuts: list[int]
) -> None:
    initiator, responder = pair()
    _feed(responder, [*_chunks(initiator.start(), cuts), *garbage])
    assert responder.established is None


@settings(max_examples=150)
@given(
    which=st.sampled_from([2, 3]),
    position=st.integers(min_value=0),
    value=st.integers(min_value=0, max_value=255),
    tail=st.binary(max_size=300),
)
def test_mutated_valid_messages_only_ever_raise_handshake_error(
    which: int, position: int, value: int, tail: bytes
) -> None:
    initiator, responder = pair()
    message_2 = responder.receive_data(initiator.start())
    receiver, message = initiator, message_2
    if which == 3:
        receiver, message = responder, initiator.receive_data(message_2)
    mutated = bytearray(message)
    mutated[position % len(mutated)] = value
    _feed(receiver, [bytes(mutated), tail])
    if bytes(mutated) != message:
        assert receiver.established is None
