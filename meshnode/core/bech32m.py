"""Bech32m (BIP-350) strings: the printable form of node ids and network keys.

Why bech32m: it is lowercase, avoids the look-alike characters ``1 b i o``, and
its checksum catches any error in up to four characters, so an id read aloud
or copied by hand is either right or rejected. Implementations exist in every
language, which matters for a second implementation of the protocol.

Specification: BIP-173 (bech32) with the BIP-350 checksum constant.
"""

from __future__ import annotations

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_CHARSET_REV = {c: i for i, c in enumerate(CHARSET)}
_BECH32M_CONST = 0x2BC830A3
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
MAX_LENGTH = 90


class Bech32Error(ValueError):
    """A string is not valid bech32m, or not of the expected kind."""


def _polymod(values: list[int]) -> int:
    chk = 1
    for value in values:
        top = chk >> 25
        chk = ((chk & 0x1FFFFFF) << 5) ^ value
        for i, gen in enumerate(_GENERATOR):
            if (top >> i) & 1:
                chk ^= gen
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convert_bits(data: bytes | list[int], from_bits: int, to_bits: int, pad: bool) -> list[int]:
    acc = 0
    bits = 0
    out: list[int] = []
    max_value = (1 << to_bits) - 1
    for value in data:
        acc = (acc << from_bits) | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((acc >> bits) & max_value)
    if pad:
        if bits:
            out.append((acc << (to_bits - bits)) & max_value)
    elif bits >= from_bits or ((acc << (to_bits - bits)) & max_value):
        raise Bech32Error("non-zero padding in data part")
    return out


def encode(hrp: str, payload: bytes) -> str:
    """Encode ``payload`` under the human-readable prefix ``hrp``."""
    data = _convert_bits(payload, 8, 5, pad=True)
    polymod = _polymod([*_hrp_expand(hrp), *data, 0, 0, 0, 0, 0, 0]) ^ _BECH32M_CONST
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(CHARSET[d] for d in data + checksum)


def decode(hrp: str, text: str) -> bytes:
    """Decode a bech32m string that must carry the prefix ``hrp``.

    Accepts all-lowercase or all-uppercase text, as BIP-173 requires.
    """
    if len(text) > MAX_LENGTH:
        raise Bech32Error(f"too long ({len(text)} characters, at most {MAX_LENGTH})")
    if text.lower() != text and text.upper() != text:
        raise Bech32Error("mixed upper and lower case")
    text = text.lower()
    if not text.startswith(hrp + "1"):  # the likeliest mistake: something else entirely
        raise Bech32Error(f"it does not start with {hrp}1")
    sep = text.rfind("1")
    if sep + 7 > len(text):
        raise Bech32Error("missing separator or checksum")
    if text[:sep] != hrp:
        raise Bech32Error(f"expected prefix {hrp!r}, got {text[:sep]!r}")
    try:
        data = [_CHARSET_REV[c] for c in text[sep + 1 :]]
    except KeyError as exc:
        raise Bech32Error(f"invalid character {exc.args[0]!r}") from None
    if _polymod(_hrp_expand(hrp) + data) != _BECH32M_CONST:
        raise Bech32Error("checksum mismatch (a character is wrong or missing)")
    return bytes(_convert_bits(data[:-6], 5, 8, pad=False))


def decode_fixed(hrp: str, text: str, size: int) -> bytes:
    """Decode ``text`` (surrounding white space ignored) to exactly ``size`` bytes."""
    payload = decode(hrp, text.strip())
    if len(payload) != size:
        raise Bech32Error(f"wrong length ({len(payload)} bytes, expected {size})")
    return payload
