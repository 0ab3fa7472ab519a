"""Record keys: short, slash-separated UTF-8 paths such as ``offer/soldering``.

The rules are chosen so that a key is safe as a shell argument, a log line and
(later) a file name in a sneakernet bundle, without depending on any Unicode
database version, so every implementation agrees on them:

- 1 to 256 bytes of UTF-8;
- one or more segments separated by ``/``; no empty segment, so no leading,
  trailing or doubled ``/``; no segment ``.`` or ``..``;
- no code point below U+0021 (controls and space), none in U+007F..U+009F.
"""

from __future__ import annotations

MAX_KEY_BYTES = 256


class KeyPathError(ValueError):
    """A string that is not a valid record key."""


def check_key(key: object) -> str:
    """Return ``key`` if it is a valid record key, else raise ``KeyPathError``."""
    if type(key) is not str:
        raise KeyPathError("a key is a string")
    try:
        size = len(key.encode())
    except UnicodeEncodeError:
        raise KeyPathError("a key must be valid UTF-8") from None
    if not 1 <= size <= MAX_KEY_BYTES:
        raise KeyPathError(f"a key is 1 to {MAX_KEY_BYTES} bytes of UTF-8, got {size}")
    for char in key:
        point = ord(char)
        if point < 0x21 or 0x7F <= point <= 0x9F:
            raise KeyPathError(f"character U+{point:04X} is not allowed in a key ({key!r})")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise KeyPathError(
                f"key {key!r}: segments are non-empty and not '.' or '..' "
                "(no leading, trailing or doubled '/')"
            )
    return key
