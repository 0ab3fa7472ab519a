"""Noise handshakes (revision 34) against four other implementations' test vectors.

Each vector is replayed from both ends: the initiator and the responder are
built from the vector's keys, every message must come out byte for byte and
read back to its payload, both sides must reach the same handshake hash, and
the transport messages after Split() must match too. The corpora and their
formats are described in ``tests/vectors/noise/README.md``.
"""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import given, settings
from hypothesis import strategies as st

from meshnode.core import noise
from meshnode.core.noise import (
    MAX_MESSAGE_LEN,
    MAX_NONCE,
    CipherState,
    HandshakeState,
    NoiseDecryptError,
    NoiseDHError,
    NoiseError,
    NoiseMessageError,
    NoiseNonceExhausted,
    NoiseProtocolNameError,
    NoiseStateError,
    SymmetricState,
    parse_protocol_name,
)
from meshnode.core.x25519 import KeyPair

VECTOR_DIR = Path(__file__).parent / "vectors" / "noise"


@dataclass(frozen=True)
class Party:
    """One side's inputs to Initialize(), as a vector gives them (private keys as bytes)."""

    prologue: bytes
    psks: tuple[bytes, ...]
    static: bytes | None
    ephemeral: bytes
    remote_static: bytes | None


@dataclass(frozen=True)
class Vector:
    corpus: str
    index: int
    protocol_name: str
    initiator: Party
    responder: Party
    messages: tuple[tuple[bytes, bytes], ...]  # (payload, ciphertext)
    handshake_hash: bytes | None
    # flynn-noise: the first transport message is always the initiator's, whatever
    # the handshake length; the JSON corpora keep alternating across Split().
    transport_starts_with_initiator: bool

    @property
    def id(self) -> str:
        return f"{self.corpus}-{self.protocol_name}-{self.index}"


def _hex_or_none(value: str | None) -> bytes | None:
    return None if value is None else bytes.fromhex(value)


def _json_party(raw: dict[str, object], side: str) -> Party:
    def get(key: str) -> str | None:
        value = raw.get(f"{side}_{key}")
        assert value is None or isinstance(value, str)
        return value

    psks = raw.get(f"{side}_psks", [])
    assert isinstance(psks, list)
    ephemeral = _hex_or_none(get("ephemeral"))
    assert ephemeral is not None
    return Party(
        prologue=bytes.fromhex(get("prologue") or ""),
        psks=tuple(bytes.fromhex(psk) for psk in psks),
        static=_hex_or_none(get("static")),
        ephemeral=ephemeral,
        remote_static=_hex_or_none(get("remote_static")),
    )


def load_json_corpus(corpus: str, filename: str) -> Iterator[Vector]:
    """cacophony, snow and noise-c share a JSON layout; noise-c says ``name``."""
    data = json.loads((VECTOR_DIR / corpus / filename).read_text())
    for index, raw in enumerate(data["vectors"]):
        yield Vector(
            corpus=corpus,
            index=index,
            protocol_name=raw.get("protocol_name") or raw["name"],
            initiator=_json_party(raw, "init"),
            responder=_json_party(raw, "resp"),
            messages=tuple(
                (bytes.fromhex(m["payload"]), bytes.fromhex(m["ciphertext"]))
                for m in raw["messages"]
            ),
            handshake_hash=_hex_or_none(raw.get("handshake_hash")),
            transport_starts_with_initiator=False,
        )


def _public(private: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def load_flynn_corpus(filename: str) -> Iterator[Vector]:
    """flynn-noise: ``key=value`` blocks; pre-message keys are derived from the peer's."""
    text = (VECTOR_DIR / "flynn-noise" / filename).read_text()
    blocks = [block for block in text.split("\n\n") if block.strip()]
    for index, block in enumerate(blocks):
        fields = dict(line.split("=", 1) for line in block.splitlines())
        name = fields["handshake"]
        pattern = parse_protocol_name(name).pattern
        init_static = _hex_or_none(fields.get("init_static"))
        resp_static = _hex_or_none(fields.get("resp_static"))
        # One PSK, used for every psk token.
        psk = _hex_or_none(fields.get("preshared_key"))
        psks = () if psk is None else (psk,) * pattern.psk_count
        prologue = bytes.fromhex(fields.get("prologue", ""))
        messages: list[tuple[bytes, bytes]] = []
        while f"msg_{len(messages)}_payload" in fields:
            i = len(messages)
            messages.append(
                (
                    bytes.fromhex(fields[f"msg_{i}_payload"]),
                    bytes.fromhex(fields[f"msg_{i}_ciphertext"]),
                )
            )
        yield Vector(
            corpus="flynn-noise",
            index=index,
            protocol_name=name,
            initiator=Party(
                prologue=prologue,
                psks=psks,
                static=init_static,
                ephemeral=bytes.fromhex(fields["gen_init_ephemeral"]),
                remote_static=_public(resp_static)
                if resp_static is not None and "s" in pattern.responder_pre_message
                else None,
            ),
            responder=Party(
                prologue=prologue,
                psks=psks,
                static=resp_static,
                ephemeral=bytes.fromhex(fields["gen_resp_ephemeral"]),
                remote_static=_public(init_static)
                if init_static is not None and "s" in pattern.initiator_pre_message
                else None,
            ),
            messages=tuple(messages),
            handshake_hash=None,
            transport_starts_with_initiator=True,
        )


VECTORS = [
    *load_json_corpus("cacophony", "cacophony.txt"),
    *load_json_corpus("noise-c", "noise-c-basic.txt"),
    *load_json_corpus("snow", "snow.txt"),
    *load_flynn_corpus("vectors.txt"),
]


def build(vector: Vector, *, initiator: bool) -> HandshakeState:
    party = vector.initiator if initiator else vector.responder
    return HandshakeState(
        vector.protocol_name,
        initiator=initiator,
        prologue=party.prologue,
        s=None if party.static is None else KeyPair(party.static),
        e=KeyPair(party.ephemeral),
        rs=party.remote_static,
        psks=party.psks,
    )


def test_every_corpus_contributes_its_vectors() -> None:
    """Guards the loaders: a format slip must not quietly skip a corpus."""
    counts: dict[str, int] = {}
    for vector in VECTORS:
        counts[vector.corpus] = counts.get(vector.corpus, 0) + 1
    assert counts == {"cacophony": 8, "noise-c": 3, "snow": 9, "flynn-noise": 52}
    assert len({vector.id for vector in VECTORS}) == len(VECTORS)


@pytest.mark.parametrize("vector", VECTORS, ids=lambda vector: vector.id)
def test_vector(vector: Vector) -> None:
    initiator = build(vector, initiator=True)
    responder = build(vector, initiator=False)
    handshake_length = len(parse_protocol_name(vector.protocol_name).pattern.message_patterns)
    assert len(vector.messages) > handshake_length, "the vector has transport messages"

    # Handshake: messages alternate, the initiator first (section 5.3).
    for i, (payload, ciphertext) in enumerate(vector.messages[:handshake_length]):
        sender, receiver = (initiator, responder) if i % 2 == 0 else (responder, initiator)
        assert sender.is_my_turn and not receiver.is_my_turn
        assert sender.write_message(payload) == ciphertext
        assert receiver.read_message(ciphertext) == payload
    assert initiator.finished and responder.finished

    ours, theirs = initiator.result(), responder.result()
    assert ours.handshake_hash == theirs.handshake_hash
    if vector.handshake_hash is not None:
        assert ours.handshake_hash == vector.handshake_hash
    assert ours.remote_static == (
        None if vector.responder.static is None else _public(vector.responder.static)
    )
    assert theirs.remote_static == (
        None if vector.initiator.static is None else _public(vector.initiator.static)
    )

    # Transport: the initiator sends with Split()'s first CipherState, with empty AD.
    for k, (payload, ciphertext) in enumerate(vector.messages[handshake_length:]):
        position = k if vector.transport_starts_with_initiator else handshake_length + k
        writer, reader = (ours, theirs) if position % 2 == 0 else (theirs, ours)
        assert writer.send.encrypt_with_ad(b"", payload) == ciphertext
        assert reader.receive.decrypt_with_ad(b"", ciphertext) == payload


# --- Protocol names and patterns (sections 7-9) --------------------------------------------


@pytest.mark.parametrize(
    ("name", "messages"),
    [
        ("Noise_NN_25519_ChaChaPoly_SHA256", [["e"], ["e", "ee"]]),
        ("Noise_NNpsk0_25519_ChaChaPoly_SHA256", [["psk", "e"], ["e", "ee"]]),
        ("Noise_NNpsk2_25519_ChaChaPoly_SHA256", [["e"], ["e", "ee", "psk"]]),
        (
            "Noise_XXpsk0+psk1_25519_ChaChaPoly_SHA256",
            [["psk", "e", "psk"], ["e", "ee", "s", "es"], ["s", "se"]],
        ),
        (
            "Noise_XXpsk3_25519_ChaChaPoly_SHA256",
            [["e"], ["e", "ee", "s", "es"], ["s", "se", "psk"]],
        ),
        (
            "Noise_IKpsk2_25519_ChaChaPoly_SHA256",
            [["e", "es", "s", "ss"], ["e", "ee", "se", "psk"]],
        ),
    ],
)
def test_psk_modifiers_insert_psk_tokens_per_section_9_4(
    name: str, messages: list[list[str]]
) -> None:
    pattern = parse_protocol_name(name).pattern
    assert [list(message) for message in pattern.message_patterns] == messages


def test_ik_has_the_responder_static_key_as_pre_message() -> None:
    pattern = parse_protocol_name("Noise_IK_25519_ChaChaPoly_SHA256").pattern
    assert pattern.initiator_pre_message == ()
    assert pattern.responder_pre_message == ("s",)


@pytest.mark.parametrize(
    "name",
    [
        "Noise_XX_448_ChaChaPoly_SHA256",
        "Noise_XX_25519_AESGCM_SHA256",
        "Noise_XX_25519_ChaChaPoly_BLAKE2s",
        "Noise_XX_25519_ChaChaPoly_SHA512",
        "Noise_KK_25519_ChaChaPoly_SHA256",
        "Noise_XX1_25519_ChaChaPoly_SHA256",
        "Noise_XXfallback_25519_ChaChaPoly_SHA256",
        "Noise_XXpsk4_25519_ChaChaPoly_SHA256",
        "Noise_XXpsk0+psk0_25519_ChaChaPoly_SHA256",
        "Noise_XXpsk01_25519_ChaChaPoly_SHA256",
        "Noise_XXpsk_25519_ChaChaPoly_SHA256",
        "NoisePSK_XX_25519_ChaChaPoly_SHA256",
        "Noise_XX_25519_ChaChaPoly",
        "Noise_XX_25519_ChaChaPoly_SHA256_extra",
        "Noise_\u03a7\u03a7_25519_ChaChaPoly_SHA256",  # Greek capital chi, not X
    ],
)
def test_unsupported_or_malformed_protocol_names_are_rejected(name: str) -> None:
    with pytest.raises(NoiseProtocolNameError):
        parse_protocol_name(name)


def test_protocol_name_up_to_hashlen_is_padded_and_longer_is_hashed() -> None:
    """Section 5.2; ``Noise_NN_25519_ChaChaPoly_SHA256`` is exactly 32 bytes."""
    exact = b"Noise_NN_25519_ChaChaPoly_SHA256"
    assert len(exact) == 32
    assert SymmetricState(exact).get_handshake_hash() == exact
    assert SymmetricState(b"Noise_N").get_handshake_hash() == b"Noise_N".ljust(32, b"\x00")
    longer = b"Noise_NNpsk0_25519_ChaChaPoly_SHA256"
    assert SymmetricState(longer).get_handshake_hash() == hashlib.sha256(longer).digest()


# --- CipherState (section 5.1) --------------------------------------------------------------

KEY = bytes(range(32))


def test_chachapoly_nonce_is_four_zero_bytes_then_little_endian_counter() -> None:
    n = 0x0102030405060708
    cipher = CipherState(KEY)
    cipher.set_nonce(n)
    expected = ChaCha20Poly1305(KEY).encrypt(
        b"\x00\x00\x00\x00" + bytes.fromhex("0807060504030201"), b"payload", b"ad"
    )
    assert cipher.encrypt_with_ad(b"ad", b"payload") == expected
    assert cipher.nonce == n + 1


def test_reserved_nonce_means_the_key_is_exhausted() -> None:
    sender, receiver = CipherState(KEY), CipherState(KEY)
    sender.set_nonce(MAX_NONCE - 1)
    receiver.set_nonce(MAX_NONCE - 1)
    assert receiver.decrypt_with_ad(b"", sender.encrypt_with_ad(b"", b"last")) == b"last"
    assert sender.nonce == MAX_NONCE
    with pytest.raises(NoiseNonceExhausted):
        sender.encrypt_with_ad(b"", b"one too many")
    with pytest.raises(NoiseNonceExhausted):
        receiver.decrypt_with_ad(b"", bytes(16))


def test_set_nonce_to_2_64_minus_1_makes_encrypt_raise() -> None:
    cipher = CipherState(KEY)
    cipher.set_nonce(MAX_NONCE)
    with pytest.raises(NoiseNonceExhausted):
        cipher.encrypt_with_ad(b"", b"")


@pytest.mark.parametrize("nonce", [-1, 2**64])
def test_set_nonce_outside_64_bits_is_misuse(nonce: int) -> None:
    with pytest.raises(NoiseStateError):
        CipherState(KEY).set_nonce(nonce)


def test_failed_decrypt_does_not_advance_the_nonce() -> None:
    sender, receiver = CipherState(KEY), CipherState(KEY)
    first = sender.encrypt_with_ad(b"", b"first")
    second = sender.encrypt_with_ad(b"", b"second")
    tampered = first[:-1] + bytes([first[-1] ^ 1])
    with pytest.raises(NoiseDecryptError):
        receiver.decrypt_with_ad(b"", tampered)
    assert receiver.nonce == 0
    assert receiver.decrypt_with_ad(b"", first) == b"first"
    assert receiver.decrypt_with_ad(b"", second) == b"second"


def test_wrong_associated_data_fails_authentication() -> None:
    ciphertext = CipherState(KEY).encrypt_with_ad(b"one", b"payload")
    with pytest.raises(NoiseDecryptError):
        CipherState(KEY).decrypt_with_ad(b"two", ciphertext)


def test_cipher_state_without_a_key_passes_data_through() -> None:
    cipher = CipherState()
    assert not cipher.has_key()
    assert cipher.encrypt_with_ad(b"ad", b"clear") == b"clear"
    assert cipher.decrypt_with_ad(b"ad", b"clear") == b"clear"
    assert cipher.nonce == 0


def test_transport_messages_are_limited_to_65535_bytes() -> None:
    sender, receiver = CipherState(KEY), CipherState(KEY)
    largest = sender.encrypt_with_ad(b"", bytes(MAX_MESSAGE_LEN - 16))
    assert len(largest) == MAX_MESSAGE_LEN
    assert receiver.decrypt_with_ad(b"", largest) == bytes(MAX_MESSAGE_LEN - 16)
    with pytest.raises(NoiseMessageError):
        sender.encrypt_with_ad(b"", bytes(MAX_MESSAGE_LEN - 15))
    with pytest.raises(NoiseMessageError):
        receiver.decrypt_with_ad(b"", bytes(MAX_MESSAGE_LEN + 1))
    with pytest.raises(NoiseMessageError):
        receiver.decrypt_with_ad(b"", bytes(15))


def test_cipher_state_misuse_is_reported() -> None:
    with pytest.raises(NoiseStateError):
        CipherState(bytes(31))
    with pytest.raises(NoiseStateError):
        CipherState().rekey()


def test_rekey_changes_the_key_but_not_the_nonce() -> None:
    """Section 11.3: REKEY(k) is the first 32 bytes of ENCRYPT(k, 2^64-1, "", zeros)."""
    sender, receiver = CipherState(KEY), CipherState(KEY)
    receiver.decrypt_with_ad(b"", sender.encrypt_with_ad(b"", b"before"))
    sender.rekey()
    receiver.rekey()
    assert sender.nonce == receiver.nonce == 1
    rekeyed = ChaCha20Poly1305(KEY).encrypt(b"\x00" * 4 + b"\xff" * 8, bytes(32), b"")[:32]
    expected = ChaCha20Poly1305(rekeyed).encrypt(
        b"\x00" * 4 + (1).to_bytes(8, "little"), b"after", b""
    )
    ciphertext = sender.encrypt_with_ad(b"", b"after")
    assert ciphertext == expected
    assert receiver.decrypt_with_ad(b"", ciphertext) == b"after"


# --- HandshakeState behaviour beyond the vectors (section 5.3) -----------------------------

INIT_STATIC = KeyPair(bytes([1] * 32))
RESP_STATIC = KeyPair(bytes([2] * 32))
PSK = bytes([3] * 32)
XXPSK0 = "Noise_XXpsk0_25519_ChaChaPoly_SHA256"


def _key(seed: int) -> KeyPair:
    return KeyPair(bytes([seed] * 32))


def pair(
    protocol: str, *, init_psk: bytes = PSK, resp_psk: bytes = PSK
) -> tuple[HandshakeState, HandshakeState]:
    """An initiator and responder with fixed keys, for any supported protocol."""
    pattern = parse_protocol_name(protocol).pattern
    uses_static = any("s" in message for message in pattern.message_patterns)
    rs = RESP_STATIC.public if pattern.responder_pre_message else None
    initiator = HandshakeState(
        protocol,
        initiator=True,
        s=INIT_STATIC if uses_static else None,
        e=_key(4),
        rs=rs,
        psks=[init_psk] * pattern.psk_count,
    )
    responder = HandshakeState(
        protocol,
        initiator=False,
        s=RESP_STATIC if uses_static else None,
        e=_key(5),
        psks=[resp_psk] * pattern.psk_count,
    )
    return initiator, responder


def test_xxpsk0_handshake_and_transport_round_trip() -> None:
    initiator, responder = pair(XXPSK0)
    assert responder.read_message(initiator.write_message(b"hello")) == b"hello"
    assert initiator.read_message(responder.write_message(b"")) == b""
    assert initiator.remote_static == RESP_STATIC.public
    assert responder.read_message(initiator.write_message(b"done")) == b"done"
    ours, theirs = initiator.result(), responder.result()
    assert ours.remote_static == RESP_STATIC.public
    assert theirs.remote_static == INIT_STATIC.public
    assert theirs.receive.decrypt_with_ad(b"", ours.send.encrypt_with_ad(b"", b"ping")) == b"ping"
    assert ours.receive.decrypt_with_ad(b"", theirs.send.encrypt_with_ad(b"", b"pong")) == b"pong"


def test_wrong_psk_fails_at_the_responder_reading_message_1() -> None:
    initiator, responder = pair(XXPSK0, resp_psk=bytes(32))
    message = initiator.write_message(b"")
    with pytest.raises(NoiseDecryptError):
        responder.read_message(message)


def test_different_prologue_fails_at_the_first_encrypted_payload() -> None:
    protocol = "Noise_NN_25519_ChaChaPoly_SHA256"
    initiator = HandshakeState(protocol, initiator=True, prologue=b"a", e=_key(4))
    responder = HandshakeState(protocol, initiator=False, prologue=b"b", e=_key(5))
    responder.read_message(initiator.write_message(b""))
    with pytest.raises(NoiseDecryptError):
        initiator.read_message(responder.write_message(b""))


@pytest.mark.parametrize("position", [0, 40, -1], ids=["ephemeral", "static", "tag"])
def test_tampered_handshake_message_fails_and_ends_the_handshake(position: int) -> None:
    initiator, responder = pair("Noise_XX_25519_ChaChaPoly_SHA256")
    responder.read_message(initiator.write_message(b""))
    message = bytearray(responder.write_message(b"payload"))
    message[position] ^= 0x01
    with pytest.raises(NoiseDecryptError):
        initiator.read_message(bytes(message))
    with pytest.raises(NoiseStateError):
        initiator.write_message(b"")


def test_tampered_transport_message_fails() -> None:
    initiator, responder = pair("Noise_NN_25519_ChaChaPoly_SHA256")
    responder.read_message(initiator.write_message(b""))
    initiator.read_message(responder.write_message(b""))
    ciphertext = bytearray(initiator.result().send.encrypt_with_ad(b"", b"transport"))
    ciphertext[0] ^= 0x80
    with pytest.raises(NoiseDecryptError):
        responder.result().receive.decrypt_with_ad(b"", bytes(ciphertext))


# Public keys of small order on Curve25519 (and non-canonical encodings of them).
LOW_ORDER_POINTS = [
    bytes(32),
    bytes([1]) + bytes(31),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    bytes.fromhex("ec" + "ff" * 30 + "7f"),
    bytes.fromhex("ed" + "ff" * 30 + "7f"),
    bytes.fromhex("ee" + "ff" * 30 + "7f"),
]


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=lambda point: point.hex()[:8])
def test_low_order_ephemeral_from_the_peer_fails_cleanly(point: bytes) -> None:
    """IK's first message makes the responder compute DH(s, re) while reading."""
    initiator, responder = pair("Noise_IK_25519_ChaChaPoly_SHA256")
    message = initiator.write_message(b"")
    with pytest.raises(NoiseDHError):
        responder.read_message(point + message[32:])
    with pytest.raises(NoiseStateError):
        responder.write_message(b"")


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=lambda point: point.hex()[:8])
def test_low_order_pre_message_static_key_fails_cleanly(point: bytes) -> None:
    initiator = HandshakeState(
        "Noise_IK_25519_ChaChaPoly_SHA256", initiator=True, s=INIT_STATIC, e=_key(4), rs=point
    )
    with pytest.raises(NoiseDHError):
        initiator.write_message(b"")


def test_handshake_messages_are_limited_to_65535_bytes() -> None:
    """NN message 1 is ``e`` then the payload in the clear: 32 + payload bytes."""
    initiator, responder = pair("Noise_NN_25519_ChaChaPoly_SHA256")
    with pytest.raises(NoiseMessageError):
        initiator.write_message(bytes(MAX_MESSAGE_LEN - 31))
    message = initiator.write_message(bytes(MAX_MESSAGE_LEN - 32))
    assert len(message) == MAX_MESSAGE_LEN
    assert responder.read_message(message) == bytes(MAX_MESSAGE_LEN - 32)
    # Message 2 encrypts the payload: 32 + payload + 16.
    with pytest.raises(NoiseMessageError):
        responder.write_message(bytes(MAX_MESSAGE_LEN - 47))
    assert initiator.read_message(responder.write_message(bytes(MAX_MESSAGE_LEN - 48))) == bytes(
        MAX_MESSAGE_LEN - 48
    )


def test_oversized_incoming_handshake_message_is_rejected() -> None:
    _, responder = pair("Noise_NN_25519_ChaChaPoly_SHA256")
    with pytest.raises(NoiseMessageError):
        responder.read_message(bytes(MAX_MESSAGE_LEN + 1))


def test_truncated_handshake_message_is_rejected() -> None:
    _, responder = pair("Noise_NN_25519_ChaChaPoly_SHA256")
    with pytest.raises(NoiseMessageError):
        responder.read_message(bytes(31))


def test_writing_out_of_turn_and_after_the_end_is_misuse() -> None:
    initiator, responder = pair("Noise_NN_25519_ChaChaPoly_SHA256")
    with pytest.raises(NoiseStateError):
        responder.write_message(b"")
    with pytest.raises(NoiseStateError):
        initiator.read_message(bytes(48))
    with pytest.raises(NoiseStateError):
        initiator.result()
    responder.read_message(initiator.write_message(b""))
    initiator.read_message(responder.write_message(b""))
    for side in (initiator, responder):
        assert side.finished and not side.is_my_turn
        with pytest.raises(NoiseStateError):
            side.write_message(b"")
        with pytest.raises(NoiseStateError):
            side.read_message(bytes(48))


# None of NN/XX/IK pre-shares an ephemeral key, so this made-up pattern exercises the
# ``e`` pre-message (and its PSK-mode MixKey, section 9.2).
PRE_SHARED_EPHEMERAL = noise.NoiseProtocol(
    "Noise_Nepsk1_25519_ChaChaPoly_SHA256",
    noise.HandshakePattern("Ne", ("e",), (), (("psk",), ("e", "ee"))),
)


@pytest.mark.parametrize(
    ("protocol", "kwargs"),
    [
        ("Noise_XX_25519_ChaChaPoly_SHA256", {"e": _key(4)}),  # no s
        ("Noise_IK_25519_ChaChaPoly_SHA256", {"e": _key(4), "s": INIT_STATIC}),  # no rs
        ("Noise_NN_25519_ChaChaPoly_SHA256", {}),  # neither e nor rng
        ("Noise_XX_25519_ChaChaPoly_SHA256", {"e": _key(4), "s": INIT_STATIC, "rs": bytes(32)}),
        ("Noise_NN_25519_ChaChaPoly_SHA256", {"e": _key(4), "re": bytes(32)}),
        ("Noise_XXpsk0_25519_ChaChaPoly_SHA256", {"e": _key(4), "s": INIT_STATIC}),  # no PSK
        ("Noise_NNpsk0_25519_ChaChaPoly_SHA256", {"e": _key(4), "psks": [bytes(31)]}),
        ("Noise_NN_25519_ChaChaPoly_SHA256", {"e": _key(4), "psks": [PSK]}),
        ("Noise_IK_25519_ChaChaPoly_SHA256", {"e": _key(4), "s": INIT_STATIC, "rs": bytes(31)}),
        (PRE_SHARED_EPHEMERAL, {"rng": lambda: bytes(32), "psks": [PSK]}),  # e is pre-shared
    ],
)
def test_inputs_that_do_not_fit_the_pattern_are_rejected_up_front(
    protocol: str | noise.NoiseProtocol, kwargs: dict[str, object]
) -> None:
    with pytest.raises(NoiseStateError):
        HandshakeState(protocol, initiator=True, **kwargs)  # type: ignore[arg-type]


def test_pre_message_ephemeral_key_is_part_of_the_transcript() -> None:
    """Pre-message keys are hashed at Initialize (section 5.3), so both sides must hold them."""
    protocol = PRE_SHARED_EPHEMERAL
    early = _key(4)

    def responder_knowing(re: bytes) -> HandshakeState:
        return HandshakeState(protocol, initiator=False, e=_key(5), re=re, psks=[PSK])

    initiator = HandshakeState(protocol, initiator=True, e=early, psks=[PSK])
    responder = responder_knowing(early.public)
    assert responder.read_message(initiator.write_message(b"early data")) == b"early data"
    assert initiator.read_message(responder.write_message(b"")) == b""
    assert initiator.result().handshake_hash == responder.result().handshake_hash

    initiator = HandshakeState(protocol, initiator=True, e=early, psks=[PSK])
    with pytest.raises(NoiseDecryptError):
        responder_knowing(_public(bytes([6] * 32))).read_message(initiator.write_message(b""))


def test_an_invalid_custom_pattern_fails_as_misuse() -> None:
    """Patterns are data; one that uses a key nobody has yet must not crash."""
    protocol = noise.NoiseProtocol(
        "Noise_bad_25519_ChaChaPoly_SHA256", noise.HandshakePattern("bad", (), (), (("ee",),))
    )
    with pytest.raises(NoiseStateError):
        HandshakeState(protocol, initiator=True, e=_key(4)).write_message(b"")


def test_ephemeral_key_comes_from_the_injected_rng() -> None:
    seed = bytes(range(100, 132))
    initiator = HandshakeState("Noise_NN_25519_ChaChaPoly_SHA256", initiator=True, rng=lambda: seed)
    assert initiator.write_message(b"")[:32] == _public(seed)


def test_rng_returning_the_wrong_length_is_misuse() -> None:
    initiator = HandshakeState(
        "Noise_NN_25519_ChaChaPoly_SHA256", initiator=True, rng=lambda: bytes(16)
    )
    with pytest.raises(NoiseStateError):
        initiator.write_message(b"")


FUZZ_PROTOCOLS = [
    "Noise_NN_25519_ChaChaPoly_SHA256",
    "Noise_XX_25519_ChaChaPoly_SHA256",
    "Noise_IK_25519_ChaChaPoly_SHA256",
    "Noise_XXpsk0_25519_ChaChaPoly_SHA256",
    "Noise_NNpsk2_25519_ChaChaPoly_SHA256",
]


@settings(max_examples=300)
@given(
    protocol=st.sampled_from(FUZZ_PROTOCOLS),
    position=st.integers(min_value=0, max_value=2),
    garbage=st.binary(max_size=200),
)
def test_read_message_is_total(protocol: str, position: int, garbage: bytes) -> None:
    """Random bytes as message 1, 2 or 3 give a payload or a NoiseError, nothing else."""
    initiator, responder = pair(protocol)
    position %= len(parse_protocol_name(protocol).pattern.message_patterns)
    for i in range(position):
        sender, receiver = (initiator, responder) if i % 2 == 0 else (responder, initiator)
        receiver.read_message(sender.write_message(b""))
    receiver = responder if position % 2 == 0 else initiator
    try:
        payload = receiver.read_message(garbage)
    except NoiseError:
        return
    assert isinstance(payload, bytes)


def test_module_stays_pure() -> None:
    """The sans-IO rule of meshnode.core: no sockets, event loop, clock or own randomness."""
    tree = ast.parse(Path(noise.__file__).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            imported.add(node.module)
    ours = {name for name in imported if name.startswith("meshnode")}
    assert ours <= {"meshnode.core.x25519"}
    assert {name.split(".")[0] for name in imported - ours} <= {
        "__future__",
        "hashlib",
        "hmac",
        "struct",
        "collections",
        "msgspec",
        "typing",
        "cryptography",
    }
