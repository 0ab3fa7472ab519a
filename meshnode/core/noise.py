"""Noise Protocol Framework handshakes, revision 34 (https://noiseprotocol.org/noise.html).

Theory of operation
-------------------
The module is the spec's three objects, one class each, stacked as in section 5:

* ``CipherState`` (5.1) is a ChaChaPoly key ``k`` and a 64-bit nonce ``n``. It
  encrypts handshake payloads and, after the handshake, transport messages.
* ``SymmetricState`` (5.2) owns a ``CipherState`` plus the chaining key ``ck``
  and the transcript hash ``h``. Every DH output and PSK is mixed into ``ck``
  (HKDF, 4.3); every byte sent is mixed into ``h``, which is the associated
  data of each handshake encryption, so both sides must agree on the whole
  transcript (prologue included) or the next decryption fails.
* ``HandshakeState`` (5.3) walks a handshake pattern token by token, writing
  or reading one message per call, and after the last message ``Split()``s the
  chaining key into one ``CipherState`` per direction.

Handshake patterns are plain data (``PATTERNS``); the ``pskN`` modifiers of
section 9.4 are applied by inserting ``psk`` tokens. Only
``Noise_<NN|XX|IK>[pskN[+pskM...]]_25519_ChaChaPoly_SHA256`` is supported.

Nothing here does I/O or reads a clock, and nothing draws randomness itself:
the caller injects the static key, the ephemeral key or a callable returning
32 random bytes, so that published test vectors reproduce byte for byte and
the transport layer owns the socket. Every failure is a ``NoiseError``
subclass; ``read_message`` never lets a stray ``IndexError``/``ValueError``
out, whatever bytes a peer sends.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Callable, Sequence
from typing import Literal, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from msgspec import Struct

from meshnode.core.x25519 import AllZeroOutput, KeyPair

DHLEN = 32
HASHLEN = 32
KEYLEN = 32
TAGLEN = 16
PSKLEN = 32
MAX_MESSAGE_LEN = 65535
"""Section 3: every Noise message, handshake or transport, fits in 65535 bytes."""
MAX_NONCE = 2**64 - 1
"""Section 5.1: reserved (it is the nonce REKEY uses), so never used to encrypt a message."""

Token = Literal["e", "s", "ee", "es", "se", "ss", "psk"]
_T = TypeVar("_T")


class NoiseError(Exception):
    """Base of every error this module raises."""


class NoiseProtocolNameError(NoiseError):
    """The protocol name is malformed or names something this module does not implement."""


class NoiseStateError(NoiseError):
    """The API was misused: wrong keys for the pattern, out of turn, or after the end."""


class NoiseMessageError(NoiseError):
    """A message is too short for its pattern or longer than the 65535-byte limit."""


class NoiseDecryptError(NoiseError):
    """Authentication failed: tampering, a different prologue, or a different PSK."""


class NoiseDHError(NoiseError):
    """X25519 gave the all-zero output, i.e. the peer sent a low-order public key."""


class NoiseNonceExhausted(NoiseError):
    """The nonce reached the reserved value 2^64-1; the key must not be used again."""


# --- Crypto functions (sections 4 and 12) ---------------------------------------------------


def _hash(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, "sha256")


def _hkdf(chaining_key: bytes, input_key_material: bytes, num_outputs: int) -> tuple[bytes, ...]:
    """HKDF of section 4.3: HMAC-based, with the chaining key as salt."""
    temp_key = _hmac(chaining_key, input_key_material)
    outputs: list[bytes] = []
    previous = b""
    for counter in range(1, num_outputs + 1):
        previous = _hmac(temp_key, previous + bytes([counter]))
        outputs.append(previous)
    return tuple(outputs)


_CHACHAPOLY_NONCE = struct.Struct("<4xQ")


def _chachapoly_nonce(n: int) -> bytes:
    """Section 12.3: 32 bits of zeros, then ``n`` as a little-endian 64-bit integer."""
    return _CHACHAPOLY_NONCE.pack(n)


def _dh(key_pair: KeyPair, public_key: bytes) -> bytes:
    """DH of section 12.1.

    An all-zero shared secret is refused, which the spec allows in place of
    returning zeros: a low-order key can only come from a broken or hostile
    peer, so the handshake fails.
    """
    try:
        return key_pair.exchange(public_key)
    except AllZeroOutput as exc:
        raise NoiseDHError("X25519 with the peer's public key gave an all-zero output") from exc


# --- CipherState (section 5.1) ----------------------------------------------------------------


class CipherState:
    """A key ``k`` (possibly empty) and the nonce ``n`` that goes with it (section 5.1).

    After the handshake the caller owns one per direction: transport messages
    are ``encrypt_with_ad(b"", payload)`` / ``decrypt_with_ad(b"", message)``.
    """

    def __init__(self, key: bytes | None = None) -> None:
        self._aead: ChaCha20Poly1305 | None = None
        self._n = 0
        self.initialize_key(key)

    def initialize_key(self, key: bytes | None) -> None:
        """InitializeKey(key): a new key always restarts the nonce at zero."""
        if key is not None and len(key) != KEYLEN:
            raise NoiseStateError(f"a cipher key is {KEYLEN} bytes, got {len(key)}")
        self._aead = None if key is None else ChaCha20Poly1305(key)
        self._n = 0

    def has_key(self) -> bool:
        """HasKey(): before the first MixKey the handshake sends in the clear."""
        return self._aead is not None

    @property
    def nonce(self) -> int:
        """The next nonce; lets the transport layer decide when to rekey."""
        return self._n

    def set_nonce(self, nonce: int) -> None:
        """SetNonce(nonce), for out-of-order transport messages (section 11.4)."""
        if not 0 <= nonce <= MAX_NONCE:
            raise NoiseStateError(f"a nonce is a 64-bit unsigned integer, got {nonce}")
        self._n = nonce

    def _check_nonce(self) -> None:
        if self._n == MAX_NONCE:
            raise NoiseNonceExhausted("nonce 2^64-1 is reserved; this key is used up")

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        """EncryptWithAd(ad, plaintext): ENCRYPT(k, n++, ad, plaintext), or plaintext if no key."""
        aead, n = self._aead, self._n
        if aead is None:
            return plaintext
        if n == MAX_NONCE:
            self._check_nonce()
        if len(plaintext) + TAGLEN > MAX_MESSAGE_LEN:
            raise NoiseMessageError(
                f"{len(plaintext)}-byte plaintext exceeds the {MAX_MESSAGE_LEN}-byte message limit"
            )
        ciphertext = aead.encrypt(_CHACHAPOLY_NONCE.pack(n), plaintext, ad)
        self._n = n + 1
        return ciphertext

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        """DecryptWithAd(ad, ciphertext).

        On an authentication failure ``n`` is not incremented (section 5.1), so
        a forged message cannot desynchronise an established session.
        """
        aead, n = self._aead, self._n
        if aead is None:
            return ciphertext
        if n == MAX_NONCE:
            self._check_nonce()
        if not TAGLEN <= len(ciphertext) <= MAX_MESSAGE_LEN:
            raise NoiseMessageError(
                f"ciphertext of {len(ciphertext)} bytes; must be {TAGLEN}..{MAX_MESSAGE_LEN}"
            )
        try:
            plaintext = aead.decrypt(_CHACHAPOLY_NONCE.pack(n), ciphertext, ad)
        except InvalidTag as exc:
            raise NoiseDecryptError("authentication tag mismatch") from exc
        self._n = n + 1
        return plaintext

    def rekey(self) -> None:
        """Rekey(): k = REKEY(k) (sections 4.2 and 11.3); the nonce carries on.

        REKEY is the default of section 4.2, the first 32 bytes of
        ENCRYPT(k, 2^64-1, zerolen, zeros), which is why that nonce is reserved.
        """
        if self._aead is None:
            raise NoiseStateError("cannot rekey a CipherState that has no key")
        new_key = self._aead.encrypt(_chachapoly_nonce(MAX_NONCE), bytes(KEYLEN), b"")[:KEYLEN]
        self._aead = ChaCha20Poly1305(new_key)


# --- SymmetricState (section 5.2) -------------------------------------------------------------


class SymmetricState:
    """The chaining key ``ck``, the transcript hash ``h`` and a CipherState (section 5.2)."""

    def __init__(self, protocol_name: bytes) -> None:
        """InitializeSymmetric(protocol_name).

        A name of at most HASHLEN bytes is zero-padded rather than hashed, so
        e.g. ``Noise_NN_25519_ChaChaPoly_SHA256`` (32 bytes) is ``h`` verbatim
        while ``Noise_NNpsk0_25519_ChaChaPoly_SHA256`` is hashed.
        """
        if len(protocol_name) <= HASHLEN:
            h = protocol_name.ljust(HASHLEN, b"\x00")
        else:
            h = _hash(protocol_name)
        self._h = h
        self._ck = h
        self._cipher_state = CipherState()

    @property
    def cipher_state(self) -> CipherState:
        """The handshake CipherState, whose HasKey() decides how ``s`` is read."""
        return self._cipher_state

    def mix_key(self, input_key_material: bytes) -> None:
        """MixKey: fold a DH output (or, in PSK mode, an ephemeral key) into ``ck``."""
        self._ck, temp_k = _hkdf(self._ck, input_key_material, 2)
        self._cipher_state.initialize_key(temp_k)

    def mix_hash(self, data: bytes) -> None:
        """MixHash: extend the transcript hash ``h``."""
        self._h = _hash(self._h + data)

    def mix_key_and_hash(self, input_key_material: bytes) -> None:
        """MixKeyAndHash: the ``psk`` token (section 9.1) feeds both ``ck`` and ``h``."""
        self._ck, temp_h, temp_k = _hkdf(self._ck, input_key_material, 3)
        self.mix_hash(temp_h)
        self._cipher_state.initialize_key(temp_k)

    def get_handshake_hash(self) -> bytes:
        """GetHandshakeHash: after Split, a channel binding value (section 11.2)."""
        return self._h

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        """EncryptAndHash: the ciphertext, not the plaintext, goes into ``h``."""
        ciphertext = self._cipher_state.encrypt_with_ad(self._h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        """DecryptAndHash: ``h`` only moves on once the ciphertext authenticated."""
        plaintext = self._cipher_state.decrypt_with_ad(self._h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        """Split: (initiator-to-responder, responder-to-initiator) CipherStates."""
        temp_k1, temp_k2 = _hkdf(self._ck, b"", 2)
        return CipherState(temp_k1), CipherState(temp_k2)


# --- Handshake patterns (sections 7, 8 and 9) -------------------------------------------------


class HandshakePattern(Struct, frozen=True):
    """A handshake pattern as in section 7.1: pre-messages, then alternating messages.

    ``message_patterns[0]`` is sent by the initiator, ``[1]`` by the
    responder, and so on.
    """

    name: str
    initiator_pre_message: tuple[Token, ...]
    responder_pre_message: tuple[Token, ...]
    message_patterns: tuple[tuple[Token, ...], ...]

    @property
    def psk_count(self) -> int:
        """How many PSKs the pattern consumes; non-zero means PSK mode (section 9.2)."""
        return sum(message.count("psk") for message in self.message_patterns)


PATTERNS: dict[str, HandshakePattern] = {
    pattern.name: pattern
    for pattern in (
        # Section 7.5, the fundamental interactive patterns this project uses.
        HandshakePattern("NN", (), (), (("e",), ("e", "ee"))),
        HandshakePattern("XX", (), (), (("e",), ("e", "ee", "s", "es"), ("s", "se"))),
        HandshakePattern("IK", (), ("s",), (("e", "es", "s", "ss"), ("e", "ee", "se"))),
    )
}


def apply_psk_modifiers(pattern: HandshakePattern, modifiers: Sequence[str]) -> HandshakePattern:
    """Apply ``psk0``, ``psk1``, ... (section 9.4) to a base pattern.

    ``psk0`` puts a ``psk`` token at the start of the first message and
    ``pskN`` (N >= 1) at the end of the Nth message, so the order the
    modifiers are applied in does not matter; the name keeps the given order
    because it is hashed into ``h``.
    """
    messages = [list(message) for message in pattern.message_patterns]
    seen: set[int] = set()
    for modifier in modifiers:
        digits = modifier.removeprefix("psk")
        if digits == modifier or not (digits.isascii() and digits.isdigit()):
            raise NoiseProtocolNameError(f"unsupported pattern modifier {modifier!r}")
        if digits != str(int(digits)):
            raise NoiseProtocolNameError(f"malformed pattern modifier {modifier!r}")
        index = int(digits)
        if index > len(messages):
            raise NoiseProtocolNameError(
                f"{modifier!r} but {pattern.name} has only {len(messages)} messages"
            )
        if index in seen:
            raise NoiseProtocolNameError(f"{modifier!r} given twice")
        seen.add(index)
        if index == 0:
            messages[0].insert(0, "psk")
        else:
            messages[index - 1].append("psk")
    return HandshakePattern(
        name=pattern.name + "+".join(modifiers),
        initiator_pre_message=pattern.initiator_pre_message,
        responder_pre_message=pattern.responder_pre_message,
        message_patterns=tuple(tuple(message) for message in messages),
    )


class NoiseProtocol(Struct, frozen=True):
    """A parsed protocol name (section 8); ``name`` is what InitializeSymmetric hashes."""

    name: str
    pattern: HandshakePattern


def parse_protocol_name(name: str) -> NoiseProtocol:
    """Parse ``Noise_<pattern><modifiers>_25519_ChaChaPoly_SHA256`` (section 8).

    Only the algorithms this module implements are accepted, so that a
    misconfigured peer fails here with a readable reason rather than later as
    a decryption error.
    """
    if not name.isascii():
        raise NoiseProtocolNameError(f"protocol name {name!r} is not ASCII")
    sections = name.split("_")
    if len(sections) != 5 or sections[0] != "Noise":
        raise NoiseProtocolNameError(
            f"{name!r} is not of the form Noise_<pattern>_<dh>_<cipher>_<hash>"
        )
    _, pattern_section, dh, cipher, hash_name = sections
    if dh != "25519":
        raise NoiseProtocolNameError(f"unsupported DH function {dh!r}: only 25519")
    if cipher != "ChaChaPoly":
        raise NoiseProtocolNameError(f"unsupported cipher {cipher!r}: only ChaChaPoly")
    if hash_name != "SHA256":
        raise NoiseProtocolNameError(f"unsupported hash {hash_name!r}: only SHA256")
    # Section 8.1: the pattern name is upper case and digits; modifiers follow in lower case.
    split_at = len(pattern_section)
    for position, char in enumerate(pattern_section):
        if not (char.isupper() or char.isdigit()):
            split_at = position
            break
    base_name, modifier_section = pattern_section[:split_at], pattern_section[split_at:]
    base = PATTERNS.get(base_name)
    if base is None:
        supported = ", ".join(sorted(PATTERNS))
        raise NoiseProtocolNameError(
            f"unsupported handshake pattern {base_name!r}: only {supported} (+pskN)"
        )
    modifiers = modifier_section.split("+") if modifier_section else []
    return NoiseProtocol(name=name, pattern=apply_psk_modifiers(base, modifiers))


# --- HandshakeState (section 5.3) -------------------------------------------------------------


class HandshakeResult(Struct, frozen=True):
    """What a finished handshake hands to the transport, from this side's point of view.

    ``send``/``receive`` are the Split() CipherStates: the initiator sends
    with the first, the responder with the second. ``handshake_hash`` is the
    final ``h``, identical on both sides (channel binding, section 11.2).
    ``remote_static`` is the peer's static public key, if the pattern has one.
    """

    send: CipherState
    receive: CipherState
    handshake_hash: bytes
    remote_static: bytes | None


def _need(value: _T | None, what: str) -> _T:
    if value is None:
        raise NoiseStateError(f"the pattern needs {what}, which is not set")
    return value


class HandshakeState:
    """One side of one handshake (section 5.3): construct, then alternate write/read.

    The constructor is Initialize(). Keys are injected: ``s`` is the local
    static key, ``e`` an ephemeral key to use instead of generating one (test
    vectors), ``rng`` a callable returning 32 random bytes used as the
    ephemeral private key otherwise. ``rs``/``re`` are the peer's public keys
    known in advance, exactly those the pattern's pre-messages list. ``psks``
    are consumed in the order of the ``psk`` tokens.

    Once any call raises, the transcript is in an unknown state and the
    object refuses further use; start a new handshake.
    """

    def __init__(
        self,
        protocol: str | NoiseProtocol,
        *,
        initiator: bool,
        prologue: bytes = b"",
        s: KeyPair | None = None,
        e: KeyPair | None = None,
        rs: bytes | None = None,
        re: bytes | None = None,
        psks: Sequence[bytes] = (),
        rng: Callable[[], bytes] | None = None,
    ) -> None:
        if isinstance(protocol, str):
            protocol = parse_protocol_name(protocol)
        pattern = protocol.pattern
        self._initiator = initiator
        self._pattern = pattern
        self._psk_mode = pattern.psk_count > 0
        self._s = s
        self._e = e
        self._rs = rs
        self._re = re
        self._psks = list(psks)
        self._rng = rng
        self._message_index = 0
        self._failed = False
        self._result: HandshakeResult | None = None
        self._check_inputs()

        self._symmetric = SymmetricState(protocol.name.encode("ascii"))
        self._symmetric.mix_hash(prologue)
        # Pre-messages: the initiator's keys are hashed first, whichever side we are.
        for sent_by_initiator, tokens in (
            (True, pattern.initiator_pre_message),
            (False, pattern.responder_pre_message),
        ):
            mine = sent_by_initiator == initiator
            for token in tokens:
                if token == "e":
                    public = _need(self._e, "e").public if mine else _need(self._re, "re")
                    self._symmetric.mix_hash(public)
                    if self._psk_mode:
                        self._symmetric.mix_key(public)
                else:
                    public = _need(self._s, "s").public if mine else _need(self._rs, "rs")
                    self._symmetric.mix_hash(public)

    def _check_inputs(self) -> None:
        """Reject key sets that do not fit the pattern now, not halfway through it."""
        pattern = self._pattern
        own_pre, peer_pre = pattern.initiator_pre_message, pattern.responder_pre_message
        if not self._initiator:
            own_pre, peer_pre = peer_pre, own_pre
        first = 0 if self._initiator else 1
        own_tokens = {t for message in pattern.message_patterns[first::2] for t in message}
        peer_tokens = {t for message in pattern.message_patterns[1 - first :: 2] for t in message}
        if self._s is None and ("s" in own_pre or "s" in own_tokens):
            raise NoiseStateError(f"{pattern.name} needs the local static key s")
        if self._e is None and "e" in own_pre:
            raise NoiseStateError(f"{pattern.name} needs the local ephemeral key e")
        if self._e is None and self._rng is None and "e" in own_tokens:
            raise NoiseStateError(f"{pattern.name} needs e or an rng to generate it")
        for key, name, token in ((self._rs, "rs", "s"), (self._re, "re", "e")):
            if key is None and token in peer_pre:
                raise NoiseStateError(f"{pattern.name} needs the peer's {name} in advance")
            if key is not None and token in peer_tokens:
                raise NoiseStateError(f"{pattern.name} transmits {name}; it must not be given")
            if key is not None and len(key) != DHLEN:
                raise NoiseStateError(f"{name} is {DHLEN} bytes, got {len(key)}")
        if len(self._psks) != pattern.psk_count:
            raise NoiseStateError(
                f"{pattern.name} takes {pattern.psk_count} PSKs, got {len(self._psks)}"
            )
        if any(len(psk) != PSKLEN for psk in self._psks):
            raise NoiseStateError(f"a PSK is {PSKLEN} bytes")

    @property
    def finished(self) -> bool:
        """True once the last handshake message has been written or read."""
        return self._result is not None

    @property
    def is_my_turn(self) -> bool:
        """Whether the next call should be write_message (else read_message)."""
        return not self.finished and (self._message_index % 2 == 0) == self._initiator

    @property
    def remote_static(self) -> bytes | None:
        """The peer's static key as soon as it is known, to vet it before replying."""
        return self._rs

    def result(self) -> HandshakeResult:
        """The transport CipherStates and handshake hash of a finished handshake."""
        if self._result is None:
            raise NoiseStateError("the handshake has not finished")
        return self._result

    def _next_tokens(self, writing: bool) -> tuple[Token, ...]:
        if self._failed:
            raise NoiseStateError("the handshake already failed")
        if self.finished:
            raise NoiseStateError("the handshake has already finished")
        if self.is_my_turn != writing:
            raise NoiseStateError(
                "it is our turn to write" if self.is_my_turn else "it is the peer's turn to write"
            )
        return self._pattern.message_patterns[self._message_index]

    def _message_length(self, tokens: tuple[Token, ...], payload_length: int) -> int:
        """The length WriteMessage will produce, so an oversize payload changes no state."""
        has_key = self._symmetric.cipher_state.has_key()
        length = 0
        for token in tokens:
            if token == "e":
                length += DHLEN
                has_key = has_key or self._psk_mode
            elif token == "s":
                length += DHLEN + (TAGLEN if has_key else 0)
            else:
                has_key = True
        return length + payload_length + (TAGLEN if has_key else 0)

    def _mix_dh(self, token: Token) -> None:
        """The DH tokens of section 5.3: ``es`` is always the initiator's e with the
        responder's s, ``se`` the initiator's s with the responder's e, from either side."""
        if token == "ee":
            local, remote = self._e, self._re
        elif token == "ss":
            local, remote = self._s, self._rs
        elif token == "es":
            local, remote = (self._e, self._rs) if self._initiator else (self._s, self._re)
        else:
            local, remote = (self._s, self._re) if self._initiator else (self._e, self._rs)
        self._symmetric.mix_key(_dh(_need(local, "a local key"), _need(remote, "a remote key")))

    def _generate_ephemeral(self) -> KeyPair:
        seed = _need(self._rng, "rng")()
        if len(seed) != KEYLEN:
            raise NoiseStateError(f"rng must return {KEYLEN} bytes, got {len(seed)}")
        return KeyPair(seed)

    def write_message(self, payload: bytes = b"") -> bytes:
        """WriteMessage(payload): the next handshake message, to send as is."""
        tokens = self._next_tokens(writing=True)
        length = self._message_length(tokens, len(payload))
        if length > MAX_MESSAGE_LEN:
            raise NoiseMessageError(f"message would be {length} bytes; limit {MAX_MESSAGE_LEN}")
        parts: list[bytes] = []
        try:
            for token in tokens:
                if token == "e":
                    if self._e is None:
                        self._e = self._generate_ephemeral()
                    public = self._e.public
                    parts.append(public)
                    self._symmetric.mix_hash(public)
                    if self._psk_mode:
                        self._symmetric.mix_key(public)
                elif token == "s":
                    s = _need(self._s, "s").public
                    parts.append(self._symmetric.encrypt_and_hash(s))
                elif token == "psk":
                    self._symmetric.mix_key_and_hash(self._psks.pop(0))
                else:
                    self._mix_dh(token)
            parts.append(self._symmetric.encrypt_and_hash(payload))
        except NoiseError:
            self._failed = True
            raise
        self._advance()
        return b"".join(parts)

    def read_message(self, message: bytes) -> bytes:
        """ReadMessage(message): the peer's payload, or a NoiseError for any bad input."""
        tokens = self._next_tokens(writing=False)
        try:
            payload = self._read_tokens(tokens, message)
        except NoiseError:
            self._failed = True
            raise
        self._advance()
        return payload

    def _read_tokens(self, tokens: tuple[Token, ...], message: bytes) -> bytes:
        if len(message) > MAX_MESSAGE_LEN:
            raise NoiseMessageError(f"message of {len(message)} bytes; limit {MAX_MESSAGE_LEN}")
        offset = 0

        def take(count: int, what: str) -> bytes:
            nonlocal offset
            if len(message) - offset < count:
                raise NoiseMessageError(f"message too short for {what}")
            chunk = message[offset : offset + count]
            offset += count
            return chunk

        for token in tokens:
            if token == "e":
                self._re = take(DHLEN, "the ephemeral key")
                self._symmetric.mix_hash(self._re)
                if self._psk_mode:
                    self._symmetric.mix_key(self._re)
            elif token == "s":
                encrypted = self._symmetric.cipher_state.has_key()
                temp = take(DHLEN + (TAGLEN if encrypted else 0), "the static key")
                self._rs = self._symmetric.decrypt_and_hash(temp)
            elif token == "psk":
                self._symmetric.mix_key_and_hash(self._psks.pop(0))
            else:
                self._mix_dh(token)
        return self._symmetric.decrypt_and_hash(message[offset:])

    def _advance(self) -> None:
        self._message_index += 1
        if self._message_index < len(self._pattern.message_patterns):
            return
        initiator_to_responder, responder_to_initiator = self._symmetric.split()
        if self._initiator:
            send, receive = initiator_to_responder, responder_to_initiator
        else:
            send, receive = responder_to_initiator, initiator_to_responder
        self._result = HandshakeResult(
            send=send,
            receive=receive,
            handshake_hash=self._symmetric.get_handshake_hash(),
            remote_static=self._rs,
        )
        # Forward secrecy rests on the ephemeral key being gone; dropping the
        # reference is as close to erasing it as Python gets.
        self._e = None
