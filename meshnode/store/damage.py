"""Damage SQLite would hide: found before it opens the store, moved aside, reported.

Two cases lose records without a word if SQLite opens the files as they are:

* a write-ahead log whose header is damaged (bad magic, version or checksum):
  SQLite ignores the log and overwrites it, with every transaction since the
  last checkpoint;
* an empty (zero-length) database file beside a log: SQLite starts a new
  database and deletes the log (an empty file alone is a store created but
  never written, and loses nothing).

In both cases the damaged files are renamed with a ``.damaged-<n>`` suffix,
so nothing is destroyed and someone can inspect them; the node then starts
from what is left (the database without its log, or an empty store) and the
warnings returned here say what happened and what it cost.
"""

from __future__ import annotations

import contextlib
import os
import struct
from pathlib import Path

from meshnode.store.base import StoreError

WAL_HEADER = struct.Struct(">IIIIIIII")  # magic, version, page size, checkpoint, salts, sums
WAL_MAGIC = (0x377F0682, 0x377F0683)  # the low bit: checksums in big-endian words
WAL_VERSION = 3007000


def set_aside(path: Path) -> list[str]:
    """Check the store at ``path`` and its log; move damaged files aside; say what was done."""
    try:
        return _set_aside(path, Path(f"{path}-wal"))
    except OSError as exc:
        raise StoreError(f"cannot check the store {path} for damage: {exc}") from exc


def _set_aside(path: Path, wal: Path) -> list[str]:
    if not path.exists():
        return []
    if path.stat().st_size == 0:
        if not _size(wal):
            return []  # a store created but never written: nothing to lose
        moved = [_move_aside(path), _move_aside(wal)]
        _remove_index(path)
        return [
            f"the store {path} was empty (0 bytes) beside a write-ahead log, so the"
            f" records it held are gone from this node; started an empty store; peers"
            f" send back what they hold (kept for inspection: {', '.join(map(str, moved))})"
        ]
    lost = _size(wal) - WAL_HEADER.size
    if lost <= 0:
        return []  # no frame was ever written after the header
    problem = _header_problem(_read_header(wal))
    if problem is None:
        return []
    moved_wal = _move_aside(wal)
    _remove_index(path)
    return [
        f"the store's write-ahead log {wal} was damaged ({problem}): the records"
        f" written since the last checkpoint (up to {lost} bytes of log) are gone from"
        f" this node; started from the store without them; peers send back what they"
        f" hold (kept for inspection: {moved_wal})"
    ]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _read_header(wal: Path) -> bytes:
    with wal.open("rb") as handle:
        return handle.read(WAL_HEADER.size)


def _header_problem(header: bytes) -> str | None:
    magic, version, page_size, _, _, _, sum1, sum2 = WAL_HEADER.unpack(header)
    if magic not in WAL_MAGIC:
        return "bad magic number"
    if version != WAL_VERSION:
        return None  # not damage SQLite hides: it refuses to open such a log, loudly
    if page_size < 512 or page_size > 65536 or page_size & (page_size - 1):
        return f"impossible page size {page_size}"
    if _checksum(header[:24], big_endian=bool(magic & 1)) != (sum1, sum2):
        return "bad checksum"
    return None


def _checksum(data: bytes, *, big_endian: bool) -> tuple[int, int]:
    """SQLite's WAL checksum over 8-byte chunks (walChecksumBytes in wal.c)."""
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    s0 = s1 = 0
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def _move_aside(path: Path) -> Path:
    """Rename ``path`` to the first free ``<name>.damaged-<n>``: earlier ones are kept too."""
    n = 1
    while (target := path.with_name(f"{path.name}.damaged-{n}")).exists():
        n += 1
    try:
        os.replace(path, target)
    except OSError as exc:
        raise StoreError(
            f"{path} is damaged and cannot be moved aside ({exc.strerror}); move it away by hand"
        ) from exc
    return target


def _remove_index(path: Path) -> None:
    """The shared-memory index describes the log that was moved: SQLite rebuilds it."""
    with contextlib.suppress(FileNotFoundError):
        Path(f"{path}-shm").unlink()
