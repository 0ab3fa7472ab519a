"""The daemon's durable store: one SQLite file in WAL mode in the data dir.

Why SQLite: it ships with Python, survives ``kill -9`` (a committed
transaction is in the WAL), and needs no server. Foreign records are
committed with ``synchronous=NORMAL``: a power cut can lose the last of them,
never a process crash, and peers send them again. The node's own records are
committed with ``synchronous=FULL`` (the WAL is flushed to the disk before the
publish is acknowledged), since nobody may hold them yet; group commit
(``meshnode.runtime.publisher``) pays that flush once per batch.

SQLite quietly discards what it cannot use: a write-ahead log with a damaged
header, or the whole log beside an empty database file. ``damage`` checks
both before SQLite opens the files, moves the damaged ones aside (nothing is
deleted) and reports them in ``warnings`` for the daemon to say loudly.

The connection is not thread-safe by itself: the runtime calls a store from
one thread at a time (``meshnode.runtime.storethread``).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

from meshnode.core.record import Record, decode_record
from meshnode.store import damage
from meshnode.store.base import (
    MAX_RECONCILE_TIMESTAMP,
    Current,
    Store,
    StoreError,
    StoreLimits,
    StoreStats,
)
from meshnode.store.standing import Standing

SCHEMA_VERSION = 2
_IN_CHUNK = 500  # ids per "IN (...)" query, well below SQLite's variable limit
_SCHEMA = """
CREATE TABLE records (
    author      BLOB    NOT NULL,
    key         TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    id          BLOB    NOT NULL UNIQUE,
    created_ms  INTEGER NOT NULL,
    dead_at     INTEGER,
    tombstone   INTEGER NOT NULL,
    size        INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    raw         BLOB    NOT NULL,
    UNIQUE (author, key)
);
CREATE INDEX records_key ON records (key);
CREATE INDEX records_dead_at ON records (dead_at) WHERE dead_at IS NOT NULL;
CREATE TABLE authors (
    author        BLOB PRIMARY KEY,
    high_seq      INTEGER NOT NULL,
    first_seen_ms INTEGER,
    sources       BLOB
) WITHOUT ROWID;
"""
# Version 1 kept only the owner's high seq; its foreign authors count as established.
_MIGRATIONS = {
    1: "ALTER TABLE authors ADD COLUMN first_seen_ms INTEGER;"
    " ALTER TABLE authors ADD COLUMN sources BLOB;",
}
_DAMAGE_ADVICE = (
    "; move it aside to start with an empty store (the node's identity is kept"
    " separately, and peers send back what they hold)"
)


class SQLiteStore(Store):
    def __init__(
        self, path: str | os.PathLike[str], owner: bytes, limits: StoreLimits | None = None
    ) -> None:
        super().__init__(owner, limits or StoreLimits())
        self.path = Path(path)
        self.warnings = damage.set_aside(self.path)
        self._db = _open(self.path)
        try:
            with self._errors("read"):
                self._rebuild_usage()
        except BaseException:
            self._db.close()
            raise

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.DatabaseError as exc:
            advice = _DAMAGE_ADVICE if _is_damage(exc) else ""
            raise StoreError(f"cannot {doing} the store {self.path}: {exc}{advice}") from exc
        except sqlite3.Error as exc:
            raise StoreError(f"cannot {doing} the store {self.path}: {exc}") from exc

    # -- reads ---------------------------------------------------------------

    def get(self, author: bytes, key: str, now_ms: int) -> Record | None:
        with self._errors("read"):
            row = self._db.execute(
                "SELECT raw FROM records WHERE author = ? AND key = ?"
                " AND (dead_at IS NULL OR dead_at > ?)",
                (author, key, now_ms),
            ).fetchone()
        return None if row is None else decode_record(row[0], verify=False)

    def query(
        self,
        *,
        now_ms: int,
        author: bytes | None = None,
        prefix: str = "",
        min_seq: int = 0,
        limit: int | None = None,
        include_tombstones: bool = False,
    ) -> list[Record]:
        where = ["(dead_at IS NULL OR dead_at > ?)"]
        args: list[object] = [now_ms]
        if min_seq > 0:
            where.append("seq >= ?")
            args.append(min_seq)
        if author is not None:
            where.append("author = ?")
            args.append(author)
        if prefix:
            where.append("key >= ?")
            args.append(prefix)
            upper = _prefix_end(prefix)
            if upper is not None:
                where.append("key < ?")
                args.append(upper)
        if not include_tombstones:
            where.append("tombstone = 0")
        sql = f"SELECT raw FROM records WHERE {' AND '.join(where)} ORDER BY key, author"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        with self._errors("read"):
            rows = self._db.execute(sql, args).fetchall()
        records = [decode_record(raw, verify=False) for (raw,) in rows]
        return [r for r in records if r.key.startswith(prefix)]

    def items(self, now_ms: int) -> list[tuple[int, bytes]]:
        with self._errors("read"):
            return self._db.execute(
                "SELECT min(created_ms / 1000, ?) AS t, id FROM records"
                " WHERE dead_at IS NULL OR dead_at > ? ORDER BY t, id",
                (MAX_RECONCILE_TIMESTAMP, now_ms),
            ).fetchall()

    def raw_by_ids(
        self, ids: Sequence[bytes], now_ms: int, *, max_bytes: int | None = None
    ) -> list[bytes]:
        found: list[bytes] = []
        total = 0
        with self._errors("read"):
            for chunk, marks in _id_chunks(ids):
                for (raw,) in self._db.execute(
                    f"SELECT raw FROM records WHERE id IN ({marks})"
                    " AND (dead_at IS NULL OR dead_at > ?)",
                    (*chunk, now_ms),
                ):
                    total += len(raw)
                    if max_bytes is not None and total > max_bytes:
                        return found
                    found.append(raw)
        return found

    def served_page(
        self,
        *,
        now_ms: int,
        prefix: str = "",
        author: bytes | None = None,
        after: tuple[str, bytes] | None = None,
        limit: int,
        max_bytes: int,
    ) -> tuple[list[bytes], tuple[str, bytes] | None]:
        where = ["(dead_at IS NULL OR dead_at > ?)"]
        args: list[object] = [now_ms]
        if after is not None:
            where.append("key >= ? AND (key > ? OR author > ?)")
            args += [after[0], after[0], after[1]]
        if prefix:
            where.append("key >= ?")
            args.append(prefix)
            upper = _prefix_end(prefix)
            if upper is not None:
                where.append("key < ?")
                args.append(upper)
        if author is not None:
            where.append("author = ?")
            args.append(author)
        sql = (
            f"SELECT key, author, raw FROM records WHERE {' AND '.join(where)}"
            " ORDER BY key, author LIMIT ?"
        )
        raws: list[bytes] = []
        total = 0
        last: tuple[str, bytes] | None = None
        with self._errors("read"):
            for key, record_author, raw in self._db.execute(sql, (*args, limit + 1)):
                if not key.startswith(prefix):
                    break  # past the prefix (``_prefix_end`` found no bound): none follows
                if len(raws) == limit or (raws and total + len(raw) > max_bytes):
                    return raws, last
                raws.append(raw)
                total += len(raw)
                last = key, record_author
        return raws, None

    def missing(self, ids: Sequence[bytes]) -> list[bytes]:
        present: set[bytes] = set()
        with self._errors("read"):
            for chunk, marks in _id_chunks(ids):
                present.update(
                    row[0]
                    for row in self._db.execute(
                        f"SELECT id FROM records WHERE id IN ({marks})", chunk
                    )
                )
        return [record_id for record_id in ids if record_id not in present]

    def high_seq(self, author: bytes) -> int:
        with self._errors("read"):
            row = self._db.execute(
                "SELECT high_seq FROM authors WHERE author = ?", (author,)
            ).fetchone()
        return 0 if row is None else int(row[0])

    def stats(self, now_ms: int) -> StoreStats:
        with self._errors("read"):
            records, tombstones, authors, own = self._db.execute(
                "SELECT count(*), coalesce(sum(tombstone), 0), count(DISTINCT author),"
                " coalesce(sum(author = ?), 0)"
                " FROM records WHERE dead_at IS NULL OR dead_at > ?",
                (self.owner, now_ms),
            ).fetchone()
        return StoreStats(
            records=records,
            tombstones=tombstones,
            authors=authors,
            own_records=own,
            record_bytes=self.total_bytes,
        )

    def file_bytes(self) -> int:
        """Bytes on disk: the database and its write-ahead log."""
        total = 0
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                total += os.stat(f"{self.path}{suffix}").st_size
        return total

    def close(self) -> None:
        with self._errors("close"):
            self._db.close()

    # -- primitives ----------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self, durable: bool) -> Iterator[None]:
        """One transaction; whatever fails (the COMMIT too), the connection ends outside it."""
        with self._errors("write"):
            if durable:
                self._db.execute("PRAGMA synchronous = FULL")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                yield
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            finally:
                if durable and not self._db.in_transaction:
                    self._db.execute("PRAGMA synchronous = NORMAL")

    def _current(self, author: bytes, key: str) -> Current | None:
        row = self._db.execute(
            "SELECT id, seq, size FROM records WHERE author = ? AND key = ?", (author, key)
        ).fetchone()
        return None if row is None else Current(*row)

    def _insert(self, record: Record, dead_at: int | None, now_ms: int) -> None:
        self._db.execute(
            "INSERT INTO records (author, key, seq, id, created_ms, dead_at, tombstone,"
            " size, received_ms, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.author,
                record.key,
                record.seq,
                record.id,
                record.created_ms,
                dead_at,
                record.is_tombstone,
                len(record.raw),
                now_ms,
                record.raw,
            ),
        )

    def _remove(self, author: bytes, key: str) -> None:
        self._db.execute("DELETE FROM records WHERE author = ? AND key = ?", (author, key))

    def _evict_lowest(self, author: bytes, spare_key: str | None) -> int | None:
        row = self._db.execute(
            "DELETE FROM records WHERE rowid = (SELECT rowid FROM records"
            " WHERE author = ? AND key IS NOT ? ORDER BY seq LIMIT 1) RETURNING size",
            (author, spare_key),
        ).fetchone()
        return None if row is None else int(row[0])

    def _delete_dead(self, now_ms: int) -> Iterator[tuple[bytes, int]]:
        rows = self._db.execute(
            "DELETE FROM records WHERE dead_at <= ? RETURNING author, size", (now_ms,)
        ).fetchall()
        yield from rows

    def _raise_high_seq(self, author: bytes, seq: int) -> None:
        self._db.execute(
            "INSERT INTO authors (author, high_seq) VALUES (?, ?) ON CONFLICT (author)"
            " DO UPDATE SET high_seq = max(high_seq, excluded.high_seq)",
            (author, seq),
        )

    def _scan_usage(self) -> Iterator[tuple[bytes, int, int]]:
        with self._errors("read"):
            rows = self._db.execute(
                "SELECT author, count(*), sum(size) FROM records GROUP BY author"
            ).fetchall()
        yield from rows

    def _save_standing(self, author: bytes, standing: Standing) -> None:
        self._db.execute(
            "INSERT INTO authors (author, high_seq, first_seen_ms, sources) VALUES (?, 0, ?, ?)"
            " ON CONFLICT (author) DO UPDATE SET first_seen_ms = excluded.first_seen_ms,"
            " sources = excluded.sources",
            (author, standing.first_seen_ms, b"".join(standing.sources)),
        )

    def _drop_standing(self, author: bytes) -> None:
        # A row with a high seq is a former owner's (the data dir changed identity): kept.
        self._db.execute(
            "UPDATE authors SET first_seen_ms = NULL, sources = NULL WHERE author = ?", (author,)
        )
        self._db.execute("DELETE FROM authors WHERE author = ? AND high_seq = 0", (author,))

    def _scan_standings(self) -> Iterator[tuple[bytes, Standing]]:
        with self._errors("read"):
            rows = self._db.execute(
                "SELECT author, first_seen_ms, sources FROM authors WHERE first_seen_ms IS NOT NULL"
            ).fetchall()
        for author, first_seen_ms, kept in rows:
            # Damaged: the author counts as established, as before standings were kept.
            sources = kept if isinstance(kept, bytes) and len(kept) % 32 == 0 else b""
            ids = tuple(sources[i : i + 32] for i in range(0, len(sources), 32))
            yield author, Standing(int(first_seen_ms), ids)


def _is_damage(exc: sqlite3.DatabaseError) -> bool:
    """Whether SQLite says the file itself is broken (not busy, full or read-only)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB) or "malformed" in str(exc)


def _open(path: Path) -> sqlite3.Connection:
    """Open or create the database; any sign of damage becomes a ``StoreError``."""
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the store {path}: {exc}") from exc
    try:
        db.execute("PRAGMA busy_timeout = 2000")
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise StoreError(f"the store {path} cannot use WAL mode (got {mode!r})")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA cache_size = -16384")  # 16 MiB: the indexes of ~40,000 records
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            db.executescript(f"BEGIN; {_SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
        elif version in _MIGRATIONS:
            db.executescript(
                f"BEGIN; {_MIGRATIONS[version]} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            )
        elif version != SCHEMA_VERSION:
            raise StoreError(
                f"the store {path} has schema version {version}; this meshnode reads"
                f" version {SCHEMA_VERSION} (was it written by a newer meshnode?)"
            )
        db.execute("SELECT count(*) FROM authors").fetchone()
    except sqlite3.Error as exc:
        db.close()
        raise StoreError(f"the store {path} is unreadable ({exc}){_DAMAGE_ADVICE}") from exc
    except BaseException:
        db.close()
        raise
    return db


def _id_chunks(ids: Sequence[bytes]) -> Iterator[tuple[list[bytes], str]]:
    """``ids`` in chunks that fit one ``IN (...)``, each with its ``?`` placeholders."""
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = list(ids[start : start + _IN_CHUNK])
        yield chunk, ",".join("?" * len(chunk))


def _prefix_end(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix``."""
    while prefix:
        last = ord(prefix[-1])
        if last < 0x10FFFF and not 0xD7FF <= last < 0xDFFF:
            return prefix[:-1] + chr(last + 1)
        prefix = prefix[:-1]
    return None
