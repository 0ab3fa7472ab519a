"""Just enough edwards25519 arithmetic to build the degenerate signatures of the vectors.

RFC 8032 verifiers differ on small-order points, non-canonical encodings and unreduced
scalars (Chalkias et al., "Taming the many EdDSAs", 2020). ``protocol/records.md`` §6 picks
libsodium's strict rules; the invalid vectors built here pass the laxer checks other
libraries make, so an implementation that only makes those accepts them and its tests fail.
Affine coordinates and ``pow`` for inverses: slow, plain, and used only to make vectors.
Nothing here verifies anything for the node.
"""

from __future__ import annotations

import hashlib

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
_SQRT_M1 = pow(2, (P - 1) // 4, P)

Point = tuple[int, int]
IDENTITY: Point = (0, 1)


def add(a: Point, b: Point) -> Point:
    (x1, y1), (x2, y2) = a, b
    t = D * x1 * x2 * y1 * y2 % P
    x3 = (x1 * y2 + x2 * y1) * pow(1 + t, P - 2, P) % P
    y3 = (y1 * y2 + x1 * x2) * pow(1 - t, P - 2, P) % P
    return x3, y3


def negate(a: Point) -> Point:
    return (-a[0] % P, a[1])


def multiply(scalar: int, point: Point) -> Point:
    result = IDENTITY
    while scalar:
        if scalar & 1:
            result = add(result, point)
        point = add(point, point)
        scalar >>= 1
    return result


def decode_lax(encoded: bytes) -> Point:
    """Decode as lax libraries do: y taken mod p, a negative zero x accepted."""
    number = int.from_bytes(encoded, "little")
    y, sign = (number & ((1 << 255) - 1)) % P, number >> 255
    xx = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    x = pow(xx, (P + 3) // 8, P)
    if (x * x - xx) % P:
        x = x * _SQRT_M1 % P
    if (x * x - xx) % P:
        raise ValueError("not a point on the curve")
    if x & 1 != sign:
        x = -x % P
    return x, y


def encode(point: Point) -> bytes:
    x, y = point
    return (y | (x & 1) << 255).to_bytes(32, "little")


BASE = decode_lax((4 * pow(5, P - 2, P) % P).to_bytes(32, "little"))


def challenge(r: bytes, a: bytes, message: bytes) -> int:
    """k = SHA-512(R || A || M) mod L, as RFC 8032 §5.1.7 defines it."""
    return int.from_bytes(hashlib.sha512(r + a + message).digest(), "little") % L


def secret_scalar(seed: bytes) -> int:
    """The clamped scalar a of an RFC 8032 seed, so that A = [a]B."""
    head = bytearray(hashlib.sha512(seed).digest()[:32])
    head[0] &= 248
    head[31] &= 127
    head[31] |= 64
    return int.from_bytes(head, "little")


def holds(a: bytes, signature: bytes, message: bytes, *, cofactored: bool) -> bool:
    """The verification equation alone, with points compared and S taken mod L.

    This is what a lax verifier checks: [S]B = R + [k]A (cofactorless) or
    [8][S]B = [8]R + [8][k]A (cofactored).
    """
    r = signature[:32]
    s = int.from_bytes(signature[32:], "little") % L
    left = multiply(s, BASE)
    right = add(decode_lax(r), multiply(challenge(r, a, message), decode_lax(a)))
    if cofactored:
        return multiply(8, left) == multiply(8, right)
    return left == right
