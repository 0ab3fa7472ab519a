"""Sneakernet bundles: signed records in a file, for a USB stick (``protocol/bundle.md``).

A bundle is a stream, written and read front to back without seeking, so
``meshnode export - | ssh pi meshnode import -`` works and a cut-off copy still
gives back every record before the cut::

    magic (8 bytes)  header (one msgpack map)  entry ...  end (msgpack nil)

Each entry is one msgpack ``bin`` holding one record's exact signed bytes
(``protocol/records.md``). This module frames and unframes them and nothing
more: it verifies no record (the store path does, as for records from peers),
reads no file and no clock (the caller passes the time and the bytes).

``BundleWriter`` gives the bytes of each part. ``BundleReader`` is fed bytes as
they come (or reads a binary stream the caller passes) and hands back each
entry with its offset; it never holds more than one entry and the piece being
fed, so a 100 MB file of garbage costs no more memory than a good one. Every
fault is a ``BundleError`` with a ``reason`` and the byte ``offset`` where it
was found.
"""

from __future__ import annotations

import enum

import msgpack

from meshnode.core import canonical
from meshnode.core.msgscan import ScanError, Scanner

# ``typing`` is for the type checker only: the CLI imports this module.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any, Protocol, TypeAlias

    class Readable(Protocol):
        def read(self, size: int, /) -> bytes: ...

    Entry: TypeAlias = tuple[int, bytes]  # (offset of the entry, the record's bytes)

MAGIC = b"\x89MNB\r\n\x1a\n"
FORMAT_VERSION = 1
MAX_HEADER_BYTES = 4096
# protocol/records.md §4: a record is at most 17,408 bytes. Not imported from
# ``core.record``, which loads a crypto backend the CLI must start without;
# tests/test_bundle.py checks the two agree.
MAX_RECORD_BYTES = 17 * 1024
READ_CHUNK = 64 * 1024
END = b"\xc0"
_BIN8, _BIN16, _BIN32 = 0xC4, 0xC5, 0xC6
_NIL = 0xC0
_HEADER_DEPTH = 8
_HEADER_ITEMS = 1024
_AUTHOR_BYTES = 32


class Fault(enum.StrEnum):
    """Why bytes are not a bundle one can read on; the codes ``--json`` shows."""

    EMPTY = "empty"  # no bytes at all
    NOT_A_BUNDLE = "not-a-bundle"  # the magic is wrong: some other file
    VERSION = "version"  # a bundle of another major version
    BAD_HEADER = "bad-header"  # the header is not a map of the documented fields
    BAD_ENTRY = "bad-entry"  # an entry that is neither a bin nor the end
    TOO_LARGE = "too-large"  # an entry larger than any record may be
    TRAILING = "trailing"  # bytes after the end marker


class BundleError(ValueError):
    """The bytes are not (or stop being) a bundle; ``offset`` is where that showed."""

    def __init__(self, reason: Fault, offset: int, message: str) -> None:
        super().__init__(f"{message} (at byte {offset})")
        self.reason = reason
        self.offset = offset


class BundleHeader:
    """What a bundle says of itself: when it was made and what it holds.

    ``count`` is the number of records, if the writer knew it when it began
    (None otherwise): for progress only, never trusted. ``prefix`` and
    ``author`` record the export's filter, if it had one.
    """

    __slots__ = ("author", "count", "created_ms", "prefix")

    def __init__(
        self,
        created_ms: int,
        *,
        count: int | None = None,
        prefix: str | None = None,
        author: bytes | None = None,
    ) -> None:
        self.created_ms = created_ms
        self.count = count
        self.prefix = prefix
        self.author = author

    def encode(self) -> bytes:
        fields: dict[str, Any] = {
            "v": FORMAT_VERSION,
            "created_ms": self.created_ms,
            "count": self.count,
        }
        if self.prefix is not None:
            fields["prefix"] = self.prefix
        if self.author is not None:
            fields["author"] = self.author
        return canonical.pack(fields)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BundleHeader) and all(
            getattr(self, name) == getattr(other, name) for name in self.__slots__
        )

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, name) for name in self.__slots__))

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"BundleHeader({fields})"


def encode_entry(raw: bytes) -> bytes:
    """One record as an entry: a msgpack bin in its shortest form."""
    size = len(raw)
    if not 0 < size <= MAX_RECORD_BYTES:
        raise ValueError(f"a record is 1 to {MAX_RECORD_BYTES} bytes, not {size}")
    if size < 256:
        return bytes((_BIN8, size)) + raw
    return b"\xc5" + size.to_bytes(2, "big") + raw


class BundleWriter:
    """The bytes of a bundle, part by part: ``start``, ``add`` for each record, ``end``.

    Counts what it framed (``count`` records, ``size`` bytes in all), for the
    export's summary.
    """

    def __init__(self, header: BundleHeader) -> None:
        self.header = header
        self.count = 0
        self.size = 0

    def start(self) -> bytes:
        data = MAGIC + self.header.encode()
        self.size += len(data)
        return data

    def add(self, raw: bytes) -> bytes:
        data = encode_entry(raw)
        self.count += 1
        self.size += len(data)
        return data

    def end(self) -> bytes:
        self.size += len(END)
        return END


def encode_bundle(header: BundleHeader, raws: list[bytes]) -> bytes:
    """A whole bundle in memory (tests, vectors)."""
    writer = BundleWriter(header)
    return writer.start() + b"".join(writer.add(raw) for raw in raws) + writer.end()


class BundleReader:
    """Bytes in, entries out: ``feed`` as bytes arrive, ``finish`` at the end of the input.

    ``header`` is set once the header is read; ``offset`` counts the bytes
    taken in; after ``finish``, ``complete`` says whether the end marker came
    (False: the input was cut short, and every entry before the cut was given).
    """

    def __init__(self) -> None:
        self.header: BundleHeader | None = None
        self.offset = 0  # bytes fed so far
        self.entries = 0
        self.complete = False
        self._buffer = bytearray()
        self._base = 0  # the offset of the buffer's first byte
        self._scanner: Scanner | None = None
        self._ended = False  # the end marker was read
        self._fault: BundleError | None = None  # raised again by every later call

    def feed(self, data: bytes) -> list[Entry]:
        """The entries ``data`` completes, each with its offset; ``BundleError`` at a fault.

        Entries that come before a fault in the same ``data`` are returned first,
        and the next call (``feed`` or ``finish``) raises the fault: nothing before
        a fault is lost.
        """
        if self._fault is not None:
            raise self._fault
        self.offset += len(data)
        found: list[Entry] = []
        try:
            if self._ended:
                if data:
                    raise _trailing(self._base)
                return found
            self._buffer += data
            if self.header is None and not self._read_header():
                return found
            self._scan(found)
        except BundleError as exc:
            self._fault = exc
            if not found:
                raise
        finally:
            self.entries += len(found)
        return found

    def _scan(self, found: list[Entry]) -> None:
        """Move every whole entry from the buffer to ``found``, up to a fault or the end."""
        buffer = self._buffer
        pos, size, base = 0, len(buffer), self._base
        try:
            while pos < size:
                kind = buffer[pos]
                if kind == _BIN8:
                    if pos + 2 > size:
                        break
                    start, length = pos + 2, buffer[pos + 1]
                elif kind == _BIN16:
                    if pos + 3 > size:
                        break
                    start, length = pos + 3, int.from_bytes(buffer[pos + 1 : pos + 3], "big")
                elif kind == _NIL:
                    self._ended = True
                    pos += 1
                    if pos < size:
                        raise _trailing(base + pos)
                    break
                elif kind == _BIN32:
                    if pos + 5 > size:
                        break
                    start, length = pos + 5, int.from_bytes(buffer[pos + 1 : pos + 5], "big")
                else:
                    raise BundleError(
                        Fault.BAD_ENTRY,
                        base + pos,
                        f"an entry is not a record (a msgpack bin) but type byte 0x{kind:02x}",
                    )
                if length > MAX_RECORD_BYTES:
                    raise BundleError(
                        Fault.TOO_LARGE,
                        base + pos,
                        f"an entry of {length:,} bytes, larger than any record"
                        f" ({MAX_RECORD_BYTES:,} bytes at most)",
                    )
                end = start + length
                if end > size:
                    break
                found.append((base + pos, bytes(buffer[start:end])))
                pos = end
        finally:
            del buffer[:pos]
            self._base = base + pos

    def _read_header(self) -> bool:
        """Check the magic, then read the header; False until it is all there."""
        buffer = self._buffer
        if self._scanner is None:
            seen = bytes(buffer[: len(MAGIC)])
            if not MAGIC.startswith(seen):
                raise BundleError(Fault.NOT_A_BUNDLE, 0, _not_a_bundle(seen))
            if len(seen) < len(MAGIC):
                return False
            del buffer[: len(MAGIC)]
            self._base = len(MAGIC)
            self._scanner = Scanner(
                max_bytes=MAX_HEADER_BYTES, max_depth=_HEADER_DEPTH, max_items=_HEADER_ITEMS
            )
        try:
            end = self._scanner.advance(buffer)
        except ScanError as exc:
            raise BundleError(
                Fault.BAD_HEADER, len(MAGIC), f"the header is unreadable: {exc}"
            ) from None
        if end is None:
            return False
        self.header = _decode_header(bytes(buffer[:end]))
        del buffer[:end]
        self._base += end
        return True

    def finish(self) -> bool:
        """The input has ended: True if the bundle was whole, False if it was cut short.

        ``BundleError`` if there was no input at all (an empty file is no bundle),
        or for the fault that stopped the reading.
        """
        if self._fault is not None:
            raise self._fault
        if self.offset == 0:
            raise BundleError(Fault.EMPTY, 0, "the file is empty, not a bundle")
        self.complete = self._ended
        return self.complete

    def read(self, stream: Readable, chunk_size: int = READ_CHUNK) -> Iterator[Entry]:
        """Every entry of ``stream``, read in chunks to its end, then ``finish``."""
        while chunk := stream.read(chunk_size):
            yield from self.feed(chunk)
        self.finish()


def _trailing(offset: int) -> BundleError:
    return BundleError(Fault.TRAILING, offset, "bytes after the bundle's end marker")


def _decode_header(data: bytes) -> BundleHeader:
    at = len(MAGIC)
    try:
        fields = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack reports bad bytes with many types
        raise BundleError(Fault.BAD_HEADER, at, f"the header is unreadable: {exc}") from None
    if type(fields) is not dict or not all(type(key) is str for key in fields):
        raise BundleError(Fault.BAD_HEADER, at, "the header is not a map with string keys")
    version = fields.get("v")
    if type(version) is not int:
        raise BundleError(Fault.BAD_HEADER, at, "the header has no format version 'v'")
    if version != FORMAT_VERSION:
        raise BundleError(
            Fault.VERSION,
            at,
            f"a bundle of format version {version}; this meshnode reads version"
            f" {FORMAT_VERSION} (was it written by a newer meshnode?)",
        )
    created_ms, count = fields.get("created_ms"), fields.get("count")
    prefix, author = fields.get("prefix"), fields.get("author")
    if type(created_ms) is not int or created_ms < 0:
        raise BundleError(Fault.BAD_HEADER, at, "the header's created_ms is not a time")
    if count is not None and (type(count) is not int or count < 0):
        raise BundleError(Fault.BAD_HEADER, at, "the header's count is not a number")
    if prefix is not None and type(prefix) is not str:
        raise BundleError(Fault.BAD_HEADER, at, "the header's prefix is not a string")
    if author is not None and (type(author) is not bytes or len(author) != _AUTHOR_BYTES):
        raise BundleError(Fault.BAD_HEADER, at, "the header's author is not a public key")
    return BundleHeader(created_ms, count=count, prefix=prefix, author=author)


def _not_a_bundle(seen: bytes) -> str:
    """Why a file is no bundle, in words a person can act on."""
    if seen.startswith(MAGIC[:4]):
        return (
            "a damaged bundle: its first bytes were changed as text (line endings"
            " or ^Z converted); copy it again in binary mode"
        )
    return f"not a meshnode bundle (it begins with {seen.hex(' ')}, not {MAGIC.hex(' ')})"
