"""A damaged store is said out loud, and what can be kept is kept (meshnode.store.damage).

The campaign's cases: a write-ahead log with a damaged header made the node start
without the log's records, an empty store file started an empty store, both
without a word; a store damaged past its header said "malformed" without the
advice the other damage messages give. And an acknowledged publish must survive
a power cut: its transaction is flushed (``synchronous=FULL``).
"""

from __future__ import annotations

import shutil
from contextlib import closing
from pathlib import Path

import pytest

from meshnode.store import StoreError
from meshnode.store.sqlite import SQLiteStore
from tests.helpers import T0, identity, record

OWNER = identity(0)
ALICE = identity(1)


def crashed_copy(tmp_path: Path, records: int) -> Path:
    """A store as ``kill -9`` leaves it: ``records`` records, all still in the log."""
    live = tmp_path / "live" / "store.sqlite3"
    live.parent.mkdir()
    with closing(SQLiteStore(live, OWNER.public_key)) as store:
        store.ingest([record(ALICE, "early")], T0)
        store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # "early" is in the main file
        store.ingest([record(ALICE, f"k{n}") for n in range(records)], T0)
        crashed = tmp_path / "crashed"
        crashed.mkdir()
        for suffix in ("", "-wal"):
            shutil.copy(f"{live}{suffix}", crashed / f"store.sqlite3{suffix}")
    return crashed / "store.sqlite3"


def test_an_intact_log_after_a_crash_keeps_every_record(tmp_path: Path) -> None:
    path = crashed_copy(tmp_path, 50)
    with closing(SQLiteStore(path, OWNER.public_key)) as store:
        assert store.warnings == []
        assert store.stats(T0).records == 51


@pytest.mark.parametrize(
    ("offset", "problem"), [(0, "bad magic number"), (16, "bad checksum"), (27, "bad checksum")]
)
def test_a_log_with_a_damaged_header_is_moved_aside_and_said_loudly(
    tmp_path: Path, offset: int, problem: str
) -> None:
    path = crashed_copy(tmp_path, 50)
    wal = Path(f"{path}-wal")
    damaged = bytearray(wal.read_bytes())
    damaged[offset] ^= 0x40
    wal.write_bytes(damaged)
    with closing(SQLiteStore(path, OWNER.public_key)) as store:
        [warning] = store.warnings
        assert problem in warning and "write-ahead log" in warning and "peers send back" in warning
        [kept] = path.parent.glob("store.sqlite3-wal.damaged-*")
        assert kept.read_bytes() == damaged
        assert [r.key for r in store.query(now_ms=T0)] == ["early"]


def test_an_empty_store_file_is_moved_aside_with_its_log_and_said_loudly(tmp_path: Path) -> None:
    path = crashed_copy(tmp_path, 5)
    log = Path(f"{path}-wal").read_bytes()
    path.write_bytes(b"")
    with closing(SQLiteStore(path, OWNER.public_key)) as store:
        [warning] = store.warnings
        assert "was empty (0 bytes)" in warning
        assert [p.read_bytes() for p in path.parent.glob("store.sqlite3-wal.damaged-*")] == [log]
        assert len(list(path.parent.glob("store.sqlite3.damaged-*"))) == 1
        assert store.stats(T0).records == 0
        store.ingest([record(ALICE, "again")], T0)


def test_an_empty_store_file_alone_loses_nothing_and_starts_quietly(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    path.write_bytes(b"")  # as a crash between creating the file and its first write leaves it
    with closing(SQLiteStore(path, OWNER.public_key)) as store:
        assert store.warnings == []
        store.ingest([record(ALICE, "first")], T0)


def test_a_log_with_a_header_and_no_frame_loses_nothing(tmp_path: Path) -> None:
    path = crashed_copy(tmp_path, 5)
    Path(f"{path}-wal").write_bytes(b"\xff" * 32)
    with closing(SQLiteStore(path, OWNER.public_key)) as store:
        assert store.warnings == []
        assert [r.key for r in store.query(now_ms=T0)] == ["early"]


def test_a_log_that_cannot_be_read_is_an_error_not_damage(tmp_path: Path) -> None:
    path = crashed_copy(tmp_path, 5)
    wal = Path(f"{path}-wal")
    wal.unlink()
    wal.mkdir()  # reading it fails as a file it cannot open would, even as root
    with pytest.raises(StoreError, match="cannot check the store"):
        SQLiteStore(path, OWNER.public_key)
    assert wal.is_dir() and not list(path.parent.glob("*.damaged-*"))


def test_a_store_damaged_past_its_header_says_to_move_it_aside(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    with closing(SQLiteStore(path, OWNER.public_key)) as store:
        store.ingest([record(ALICE, f"k{n}", value="x" * 500) for n in range(200)], T0)
    damaged = bytearray(path.read_bytes())
    pages = len(damaged) // 4096
    for page in range(pages // 2, pages):  # the records' pages; the schema reads fine
        damaged[page * 4096 : page * 4096 + 100] = b"\xff" * 100
    path.write_bytes(damaged)
    with pytest.raises(StoreError, match=r"cannot read .*malformed; move it aside"):
        SQLiteStore(path, OWNER.public_key)


def test_only_the_nodes_own_records_are_flushed_before_the_answer(tmp_path: Path) -> None:
    with closing(SQLiteStore(tmp_path / "store.sqlite3", OWNER.public_key)) as store:
        statements: list[str] = []
        store._db.set_trace_callback(statements.append)
        store.ingest([record(ALICE, "foreign")], T0)
        foreign, statements[:] = list(statements), []
        store.ingest([record(OWNER, "mine")], T0, durable=True)
        own = list(statements)
        assert "PRAGMA synchronous = FULL" not in foreign
        assert own.index("PRAGMA synchronous = FULL") < own.index("COMMIT")
        assert own[-1] == "PRAGMA synchronous = NORMAL"
