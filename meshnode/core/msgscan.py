"""Finding where one msgpack value ends, without decoding it, under hard bounds.

msgpack's streaming ``Unpacker`` bounds only the bytes it has not consumed
yet: a value that arrives in pieces is decoded as it comes, so a peer can
stream one huge or deeply nested value and make us allocate without limit,
and 1 MiB of empty arrays becomes ~70 MiB of Python lists. ``Scanner`` walks
only the headers of a value as bytes arrive (``str``/``bin`` payloads are
skipped, not read), so it knows the value's exact length and shape before
anything is allocated, and refuses it as soon as it breaks a bound: total
bytes, nesting depth, or the number of array/map elements. Decoders then
hand exactly one complete, bounded value to ``msgpack.unpackb``.
"""

from __future__ import annotations

import msgpack

# ``typing`` is for the type checker only: importing it costs the CLI ~5 ms of start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


class ScanError(ValueError):
    """The value breaks a bound or is not msgpack; the stream cannot go on.

    ``kind`` names the fault in a word (``type``, ``size``, ``elements``, ``depth``,
    ``malformed``), for messages that must not carry the details.
    """

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


# type byte -> size of a fixed-size value, header included
_FIXED = {
    0xC0: 1, 0xC2: 1, 0xC3: 1,  # nil, false, true
    0xCA: 5, 0xCB: 9,  # float32, float64
    0xCC: 2, 0xCD: 3, 0xCE: 5, 0xCF: 9,  # uint8..64
    0xD0: 2, 0xD1: 3, 0xD2: 5, 0xD3: 9,  # int8..64
}  # fmt: skip
_BLOB_LENGTH = {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xD9: 1, 0xDA: 2, 0xDB: 4}  # bin8..32, str8..32
_CONTAINER_LENGTH = {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}  # (width, per item)

Header = tuple[int, int, int, int]  # step, elements, width of a length that follows, per item


def _header(kind: int) -> Header | None:
    """What the type byte ``kind`` says of its value; None: not allowed.

    ``step`` is the header's size (with the payload, when the byte alone fixes
    it); a length of ``width`` bytes may follow: a payload's (``per_item`` 0) or
    a container's element count (times ``per_item``: maps have two per entry).
    """
    if kind <= 0x7F or kind >= 0xE0:  # positive and negative fixint
        return 1, 0, 0, 0
    if kind <= 0x8F:  # fixmap
        return 1, 2 * (kind & 0x0F), 0, 0
    if kind <= 0x9F:  # fixarray
        return 1, kind & 0x0F, 0, 0
    if kind <= 0xBF:  # fixstr
        return 1 + (kind & 0x1F), 0, 0, 0
    if kind in _FIXED:
        return _FIXED[kind], 0, 0, 0
    if kind in _BLOB_LENGTH:
        return 1 + _BLOB_LENGTH[kind], 0, _BLOB_LENGTH[kind], 0
    if kind in _CONTAINER_LENGTH:
        width, per_item = _CONTAINER_LENGTH[kind]
        return 1 + width, 0, width, per_item
    return None  # ext types, 0xc1


_HEADERS = tuple(_header(kind) for kind in range(256))
# Arrays and maps: each opens a level of nesting, even with nothing in it.
_CONTAINERS = frozenset((*range(0x80, 0xA0), *_CONTAINER_LENGTH))


class Scanner:
    """Resumable: call ``advance`` with the growing buffer until it returns the end."""

    def __init__(self, *, max_bytes: int, max_depth: int, max_items: int) -> None:
        self.max_bytes = max_bytes
        self.max_depth = max_depth
        self.max_items = max_items
        self.reset()

    def reset(self) -> None:
        """Forget the value scanned so far; the next one starts at offset 0."""
        self._pos = 0
        self._remaining = [1]  # values still to read at each open nesting level
        self._items = 0

    def advance(self, buf: bytes | bytearray) -> int | None:
        """The end offset of the value starting at 0 in ``buf``, or None if not all there."""
        size = len(buf)
        remaining = self._remaining
        headers = _HEADERS
        while remaining:
            pos = self._pos
            if pos >= size:
                return self._incomplete(size)
            kind = buf[pos]
            header = headers[kind]
            if header is None:
                raise ScanError(f"type byte 0x{kind:02x} is not allowed (ext types, 0xc1)", "type")
            step, count, width, per_item = header
            if width:
                if pos + 1 + width > size:
                    return self._incomplete(size)
                length = int.from_bytes(buf[pos + 1 : pos + 1 + width], "big")
                if per_item:
                    count = per_item * length
                else:
                    step += length
            if pos + step > self.max_bytes:
                raise ScanError(f"a message is larger than {self.max_bytes} bytes", "size")
            remaining[-1] -= 1
            if count:
                self._items += count
                if self._items > self.max_items:
                    raise ScanError(
                        f"a message holds more than {self.max_items} elements", "elements"
                    )
                self._open_level()
                remaining.append(count)
            elif kind in _CONTAINERS:
                self._open_level()
            self._pos = pos + step
            while remaining and remaining[-1] == 0:
                remaining.pop()
        if self._pos > size:
            return self._incomplete(size)
        return self._pos

    def _open_level(self) -> None:
        if len(self._remaining) > self.max_depth:
            raise ScanError(f"a message nests deeper than {self.max_depth} levels", "depth")

    def _incomplete(self, size: int) -> int | None:
        """None (the value is not all there yet), unless the buffer already says too much."""
        if size > self.max_bytes:
            raise ScanError(f"a message is larger than {self.max_bytes} bytes", "size")
        return None


class ValueStream:
    """Bytes in, whole msgpack values out, each within the scanner's bounds."""

    def __init__(
        self,
        *,
        max_bytes: int,
        max_depth: int,
        max_items: int,
        strict_map_key: bool = True,
        object_pairs_hook: Callable[[list[tuple[Any, Any]]], Any] | None = None,
    ) -> None:
        """``strict_map_key`` and ``object_pairs_hook`` are msgpack's; an exception the hook
        raises makes the value malformed."""
        self._scanner = Scanner(max_bytes=max_bytes, max_depth=max_depth, max_items=max_items)
        self._buffer = bytearray()
        self._strict_map_key = strict_map_key
        self._object_pairs_hook = object_pairs_hook

    def feed(self, data: bytes) -> list[Any]:
        """Every value completed by ``data``; ``ScanError`` if the stream is bad."""
        if not self._buffer:
            # The usual case, one whole value in one piece: scanned where it lies, no copy.
            # The scanner resumes over the same offsets if the value goes on past ``data``.
            end = self._scanner.advance(data)
            if end is not None and end == len(data):
                self._scanner.reset()
                return [self._unpack(bytes(data))]
        self._buffer += data
        values: list[Any] = []
        while self._buffer:
            end = self._scanner.advance(self._buffer)
            if end is None:
                break
            chunk = bytes(self._buffer[:end])
            del self._buffer[:end]
            self._scanner.reset()
            values.append(self._unpack(chunk))
        return values

    def _unpack(self, chunk: bytes) -> Any:
        try:
            return msgpack.unpackb(
                chunk,
                raw=False,
                use_list=True,
                strict_map_key=self._strict_map_key,
                object_pairs_hook=self._object_pairs_hook,
            )
        except Exception as exc:  # msgpack reports bad bytes with many types
            raise ScanError(f"malformed msgpack: {exc}", "malformed") from None
