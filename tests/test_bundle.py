"""Sneakernet bundles (protocol/bundle.md): the codec, the import path, and the commands.

The codec is total and bounded: any bytes give entries, a cut-short ending, or a
``BundleError`` naming the offset, and it holds at most one entry at a time. An
import takes the path of a peer's records, and says what became of each one.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import random
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from meshnode.client import RemoteError
from meshnode.core import bundle, canonical
from meshnode.core.bundle import (
    MAGIC,
    BundleError,
    BundleHeader,
    BundleReader,
    BundleWriter,
    Fault,
    encode_bundle,
)
from meshnode.core.record import MAX_RECORD_BYTES, Record
from meshnode.engine.actions import Imported, Ingested
from meshnode.engine.events import Ingest
from meshnode.engine.mesh import Mesh
from meshnode.engine.node import Node
from meshnode.engine.settings import Settings
from meshnode.store import MemoryStore, StoreLimits
from meshnode.system import datadir
from meshnode.system.offline import Busy, OfflineError, OfflineNode
from tests.helpers import T0, Daemon, MakeStore, identity, record
from tests.meshnet import at, engine

VECTORS = Path(__file__).parents[1] / "protocol" / "vectors"
ADA, BOB = identity(1), identity(2)
MB = 1024 * 1024


def some_records(n: int = 5, author: Any = ADA) -> list[Record]:
    return [record(author, f"offer/{i}", f"value {i}", seq=i + 1) for i in range(n)]


def read_all(data: bytes, piece: int | None = None) -> tuple[list[bytes], bool, BundleReader]:
    """Feed ``data`` whole (or ``piece`` bytes at a time): the records and whether it was whole."""
    reader = BundleReader()
    step = piece or max(len(data), 1)
    raws = [raw for i in range(0, len(data), step) for _, raw in reader.feed(data[i : i + step])]
    return raws, reader.finish(), reader


def error_of(data: bytes) -> BundleError:
    with pytest.raises(BundleError) as caught:
        read_all(data)
    return caught.value


# -- the codec --------------------------------------------------------------------------


@pytest.mark.parametrize("piece", [None, 1, 7, 4096])
def test_a_bundle_reads_back_its_header_and_exact_records_whole_or_in_pieces(
    piece: int | None,
) -> None:
    records = [*some_records(), record(BOB, "offer/big", "x" * 5000), record(BOB, "gone", None)]
    header = BundleHeader(T0, count=len(records), prefix="offer/", author=ADA.public_key)
    raws, complete, reader = read_all(encode_bundle(header, [r.raw for r in records]), piece)
    assert raws == [r.raw for r in records]
    assert complete and reader.header == header and reader.entries == len(records)


def test_the_writer_frames_each_record_as_the_shortest_bin_and_counts_what_it_wrote() -> None:
    small, large = record(ADA, "a", "x"), record(ADA, "b", "x" * 1000)
    writer = BundleWriter(BundleHeader(T0))
    parts = [writer.start(), writer.add(small.raw), writer.add(large.raw), writer.end()]
    assert parts[0].startswith(MAGIC) and parts[3] == b"\xc0"
    assert parts[1][:2] == bytes([0xC4, len(small.raw)])
    assert parts[2][:3] == b"\xc5" + len(large.raw).to_bytes(2, "big")
    assert (writer.count, writer.size) == (2, sum(map(len, parts)))


def test_the_writer_refuses_what_no_record_can_be() -> None:
    writer = BundleWriter(BundleHeader(T0))
    with pytest.raises(ValueError, match="1 to 17408 bytes"):
        writer.add(b"")
    with pytest.raises(ValueError, match="1 to 17408 bytes"):
        writer.add(bytes(MAX_RECORD_BYTES + 1))


def test_the_codec_knows_the_record_size_limit_without_importing_the_record_module() -> None:
    assert bundle.MAX_RECORD_BYTES == MAX_RECORD_BYTES


def test_a_bundle_cut_at_any_byte_yields_every_record_before_the_cut_and_says_so() -> None:
    raws = [r.raw for r in some_records(3)]
    data = encode_bundle(BundleHeader(T0), raws)
    ends = [data.index(raw) + len(raw) for raw in raws]
    for cut in range(1, len(data)):
        got, complete, _ = read_all(data[:cut])
        assert got == raws[: sum(1 for end in ends if end <= cut)], cut
        assert not complete, cut
    assert read_all(data)[1]


def test_the_end_marker_and_nothing_after_it() -> None:
    data = encode_bundle(BundleHeader(T0), [record(ADA).raw])
    reader = BundleReader()
    reader.feed(data)
    with pytest.raises(BundleError) as caught:
        reader.feed(b"\x00")
    assert caught.value.reason is Fault.TRAILING and caught.value.offset == len(data)
    assert error_of(data + b"more").reason is Fault.TRAILING


def test_an_empty_bundle_is_whole_and_holds_nothing() -> None:
    raws, complete, reader = read_all(encode_bundle(BundleHeader(T0), []))
    assert (raws, complete, reader.header) == ([], True, BundleHeader(T0))


def test_an_empty_file_is_not_a_bundle() -> None:
    exc = error_of(b"")
    assert exc.reason is Fault.EMPTY and "empty" in str(exc)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("text", b"offer/tea hot\nofffer/cake none\n"),
        ("a PNG image", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(100)),
        ("random bytes", random.Random(1).randbytes(4096)),
        ("a JSON export", b'{"records": []}'),
    ],
)
def test_a_foreign_file_is_refused_at_its_first_bytes(name: str, data: bytes) -> None:
    reader = BundleReader()
    with pytest.raises(BundleError) as caught:
        reader.feed(data[:8])
    assert caught.value.reason is Fault.NOT_A_BUNDLE and caught.value.offset == 0
    assert "not a meshnode bundle" in str(caught.value) and data[:4].hex(" ") in str(caught.value)


def test_a_bundle_damaged_by_a_text_mode_transfer_is_named_as_such() -> None:
    data = encode_bundle(BundleHeader(T0), [record(ADA).raw])
    for damaged in (data.replace(b"\r\n", b"\n", 1), data.replace(b"\n", b"\r\n", 1)):
        exc = error_of(damaged)
        assert exc.reason is Fault.NOT_A_BUNDLE and "binary mode" in str(exc)


def test_another_major_version_is_refused_with_a_clear_error() -> None:
    exc = error_of(MAGIC + canonical.pack({"v": 2, "created_ms": T0}) + b"\xc0")
    assert exc.reason is Fault.VERSION and exc.offset == len(MAGIC)
    assert "format version 2" in str(exc) and "reads version 1" in str(exc)


def test_unknown_header_keys_are_ignored() -> None:
    header = canonical.pack({"v": 1, "created_ms": T0, "count": None, "later": {"x": [1]}})
    raws, complete, reader = read_all(
        MAGIC + header + bundle.encode_entry(record(ADA).raw) + b"\xc0"
    )
    assert raws == [record(ADA).raw] and complete and reader.header == BundleHeader(T0)


@pytest.mark.parametrize(
    "header",
    [
        b"\x92\x01\x02",  # an array
        canonical.pack({"created_ms": T0}),  # no v
        canonical.pack({"v": "1", "created_ms": T0}),
        canonical.pack({"v": 1}),  # no created_ms
        canonical.pack({"v": 1, "created_ms": -1}),
        canonical.pack({"v": 1, "created_ms": T0, "count": "many"}),
        canonical.pack({"v": 1, "created_ms": T0, "author": b"short"}),
        canonical.pack({"v": 1, "created_ms": T0, "prefix": 7}),
        canonical.pack({"v": 1, "created_ms": T0, "note": "x" * 5000}),  # over 4,096 bytes
        b"\x81\x01\x02",  # an int key
        b"\xd4\x01\x00",  # an ext type
        b"\xa2\xff\xfe",  # not UTF-8
    ],
)
def test_a_malformed_header_is_refused_at_the_header(header: bytes) -> None:
    exc = error_of(MAGIC + header + b"\xc0")
    assert exc.reason is Fault.BAD_HEADER and exc.offset == len(MAGIC)


def test_an_entry_that_is_not_a_bin_is_refused_after_the_records_before_it() -> None:
    good = record(ADA).raw
    start = MAGIC + BundleHeader(T0).encode() + bundle.encode_entry(good)
    reader = BundleReader()
    assert [raw for _, raw in reader.feed(start)] == [good]
    with pytest.raises(BundleError) as caught:
        reader.feed(b"\xa3tea\xc0")
    assert caught.value.reason is Fault.BAD_ENTRY and caught.value.offset == len(start)
    assert "0xa3" in str(caught.value) and f"at byte {len(start)}" in str(caught.value)


def test_an_oversized_entry_is_refused_from_its_length_alone() -> None:
    start = MAGIC + BundleHeader(T0).encode()
    for length in (b"\xc5\x44\x01", b"\xc6\xff\xff\xff\xff"):
        with pytest.raises(BundleError) as caught:
            BundleReader().feed(start + length)  # no payload at all: it is never waited for
        assert caught.value.reason is Fault.TOO_LARGE and caught.value.offset == len(start)


def outcome(data: bytes, piece: int | None) -> tuple[list[tuple[int, bytes]], object]:
    """Every entry a reader hands on, then how it ended: whole, cut short, or its fault."""
    reader = BundleReader()
    step = piece or max(len(data), 1)
    found: list[tuple[int, bytes]] = []
    try:
        for i in range(0, len(data), step):
            found += reader.feed(data[i : i + step])
        return found, reader.finish()
    except BundleError as exc:
        return found, (exc.reason, exc.offset)


GOOD = encode_bundle(BundleHeader(T0), [r.raw for r in some_records(3)])


@given(st.binary(max_size=600))
@example(b"")
@example(MAGIC)
@example(MAGIC + b"\x80")
@example(MAGIC + BundleHeader(T0).encode() + b"\xc4")
@example(GOOD + b"\x00")
def test_any_bytes_read_the_same_whole_or_in_pieces_and_fail_only_with_bundle_error(
    data: bytes,
) -> None:
    whole = outcome(data, None)
    assert outcome(data, 1) == whole
    assert outcome(data, 3) == whole


@given(st.integers(0, len(GOOD)), st.binary(max_size=300))
def test_a_good_start_with_any_bytes_after_it_reads_the_same_whole_or_in_pieces(
    cut: int, tail: bytes
) -> None:
    data = GOOD[:cut] + tail
    assert outcome(data, 5) == outcome(data, None)


def test_entries_before_a_fault_in_the_same_piece_are_handed_on_first() -> None:
    data = GOOD[:-1] + b"\xa3tea"
    reader = BundleReader()
    assert [raw for _, raw in reader.feed(data)] == [r.raw for r in some_records(3)]
    with pytest.raises(BundleError) as caught:
        reader.finish()
    assert caught.value.reason is Fault.BAD_ENTRY and caught.value.offset == len(GOOD) - 1
    with pytest.raises(BundleError):
        reader.feed(b"")  # the fault stays


def test_the_reader_takes_a_stream_and_finishes_at_its_end(tmp_path: Path) -> None:
    raws = [r.raw for r in some_records(50)]
    path = tmp_path / "b.mnb"
    path.write_bytes(encode_bundle(BundleHeader(T0), raws))
    reader = BundleReader()
    with path.open("rb") as stream:
        assert [raw for _, raw in reader.read(stream, chunk_size=100)] == raws
    assert reader.complete and reader.offset == path.stat().st_size


# -- 100 MB of garbage ------------------------------------------------------------------


def write_garbage(path: Path, size: int, prefix: bytes = b"", seed: int = 0) -> None:
    rng = random.Random(seed)
    with path.open("wb") as out:
        out.write(prefix)
        for _ in range(size // MB):
            out.write(rng.randbytes(MB))


def peak_while(read: Callable[[], object]) -> tuple[int, float]:
    """Peak bytes Python allocated while ``read`` ran, and seconds it took."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        read()
    finally:
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak, elapsed


@pytest.mark.slow
def test_100_mb_of_garbage_is_refused_at_once_in_little_memory(tmp_path: Path) -> None:
    path = tmp_path / "garbage"
    write_garbage(path, 100 * MB)
    caught: list[BundleError] = []

    def read() -> None:
        with path.open("rb") as stream:
            try:
                for _ in BundleReader().read(stream):
                    pass
            except BundleError as exc:
                caught.append(exc)

    peak, elapsed = peak_while(read)
    assert caught[0].reason is Fault.NOT_A_BUNDLE and caught[0].offset == 0
    assert peak < 20 * MB and elapsed < 1.0


@pytest.mark.slow
def test_100_mb_of_garbage_records_stream_through_holding_one_at_a_time(tmp_path: Path) -> None:
    # Good framing around random payloads of the largest size: the reader must hand on
    # every one (verification is not its job) without ever holding the file.
    path = tmp_path / "garbage.mnb"
    rng = random.Random(2)
    entry_header = b"\xc5" + MAX_RECORD_BYTES.to_bytes(2, "big")
    count = 100 * MB // (MAX_RECORD_BYTES + 3)
    with path.open("wb") as out:
        out.write(MAGIC + BundleHeader(T0).encode())
        for _ in range(count):
            out.write(entry_header + rng.randbytes(MAX_RECORD_BYTES))
        out.write(b"\xc0")
    seen = [0]
    reader = BundleReader()

    def read() -> None:
        with path.open("rb") as stream:
            for _ in reader.read(stream):
                seen[0] += 1

    peak, _ = peak_while(read)
    assert seen[0] == count and reader.complete
    assert peak < 20 * MB


# -- the vectors ------------------------------------------------------------------------


def vector_module() -> Any:
    spec = importlib.util.spec_from_file_location("generate_bundle", VECTORS / "generate_bundle.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


VECTOR = json.loads((VECTORS / "bundle.json").read_text(encoding="utf-8"))


def test_the_committed_vectors_are_what_the_generator_produces() -> None:
    assert (VECTORS / "bundle.json").read_text(encoding="utf-8") == vector_module().render()


@pytest.mark.parametrize("case", VECTOR["valid"] + VECTOR["truncated"], ids=lambda c: c["name"])
def test_every_readable_vector_reads_as_it_says(case: dict[str, Any]) -> None:
    data = bytes.fromhex(case["bundle"])
    for piece in (None, 1):
        reader = BundleReader()
        step = piece or max(len(data), 1)
        found = [e for i in range(0, len(data), step) for e in reader.feed(data[i : i + step])]
        assert [{"offset": o, "record": raw.hex()} for o, raw in found] == case["entries"]
        assert reader.finish() is case["complete"]


@pytest.mark.parametrize("case", VECTOR["invalid"], ids=lambda c: c["name"])
def test_every_invalid_vector_fails_as_it_says(case: dict[str, Any]) -> None:
    data = bytes.fromhex(case["bundle"])
    reader = BundleReader()
    handed_on = 0
    with pytest.raises(BundleError) as caught:
        for i in range(len(data)):
            handed_on += len(reader.feed(data[i : i + 1]))
        reader.finish()
    assert (caught.value.reason, caught.value.offset) == (case["reason"], case["offset"])
    assert handed_on == case["entries_before"]


def test_the_import_vector_gives_its_verdicts() -> None:
    case = VECTOR["import"]
    raws, _, _ = read_all(bytes.fromhex(case["bundle"]))
    mesh = engine()
    actions = mesh.handle(Ingest(raws), at((case["now_ms"] - T0) / 1000))
    [imported] = [x for x in actions if isinstance(x, Imported)]
    assert list(imported.verdicts) == case["verdicts"]


# -- the import path: verdicts ----------------------------------------------------------


def tampered(raw: bytes, at_byte: int) -> bytes:
    return raw[:at_byte] + bytes([raw[at_byte] ^ 0x01]) + raw[at_byte + 1 :]


def test_an_ingest_answers_each_record_with_its_verdict_in_order() -> None:
    mesh = engine(Settings(store=StoreLimits(max_author_records=2)))
    old, new = record(ADA, "k", "old", seq=1), record(ADA, "k", "new", seq=2)
    mesh.handle(Ingest([new.raw]), at(0))
    stale_tombstone = record(BOB, "gone", None, seq=1, created_ms=T0 - 40 * 86_400_000)
    expired = record(BOB, "short", "x", created_ms=T0 - 2000, expires_ms=T0 - 1000)
    ahead = record(BOB, "ahead", "x", created_ms=T0 + 31 * 86_400_000)
    signed = record(ADA, "value", "signed")
    raws = [
        record(ADA, "fresh").raw,
        new.raw,
        old.raw,
        stale_tombstone.raw,
        expired.raw,
        ahead.raw,
        record(ADA, "third", "over the quota of 2").raw,
        tampered(signed.raw, len(signed.raw) - 1),  # the signature
        tampered(signed.raw, signed.raw.index(b"signed")),  # the value
        b"\x93\x01\x02\x03",
        b"not a record",
        b"",
    ]
    actions = mesh.handle(Ingest(raws), at(0))
    [imported] = [x for x in actions if isinstance(x, Imported)]
    assert imported.verdicts == (
        "new",
        "known",
        "superseded",
        "expired",
        "expired",
        "future",
        "quota",
        "bad-signature",
        "bad-signature",
        "not-a-record",
        "malformed",
        "malformed",
    )
    [ingested] = [x for x in actions if isinstance(x, Ingested)]
    assert ingested.conn is None and [r.key for r in ingested.stored] == ["fresh"]


def test_verdicts_keep_their_order_when_verification_runs_in_parallel_chunks() -> None:
    raws, expected = [], []
    for i in range(600):
        raw = record(identity(10 + i % 7), f"k/{i}").raw
        bad = i % 13 == 0
        raws.append(tampered(raw, len(raw) - 2) if bad else raw)
        expected.append("bad-signature" if bad else "new")
    raws.append(raws[1])  # the same record twice in one batch
    expected.append("known")
    node = Node(ADA, MemoryStore(ADA.public_key), parallel_map=map)  # chunks of 128
    mesh = Mesh(node, agent="test", rng=random.Random(0))
    [imported] = [x for x in mesh.handle(Ingest(raws), at(0)) if isinstance(x, Imported)]
    assert list(imported.verdicts) == expected


# -- the store's pages ------------------------------------------------------------------


def test_pages_cover_the_served_set_in_key_then_author_order(make_store: MakeStore) -> None:
    store = make_store()
    live = [record(a, f"offer/{i}", i) for a in (ADA, BOB) for i in range(7)]
    tombstone = record(ADA, "offer/x", None)
    expired = record(BOB, "offer/old", "x", created_ms=T0 - 2000, expires_ms=T0 - 1000)
    other = record(ADA, "profile/name", "Ada")
    store.ingest([*live, tombstone, expired, other], T0 - 1500)
    expected = sorted([*live, tombstone], key=lambda r: (r.key.encode(), r.author))

    pages, after = [], None
    while True:
        raws, after = store.served_page(
            now_ms=T0, prefix="offer/", after=after, limit=4, max_bytes=10_000
        )
        pages.append(raws)
        if after is None:
            break
    assert [len(p) for p in pages] == [4, 4, 4, 3]
    assert [raw for page in pages for raw in page] == [r.raw for r in expected]


def test_a_page_stops_at_its_byte_bound_but_always_holds_a_record(make_store: MakeStore) -> None:
    store = make_store()
    big = [record(ADA, f"big/{i}", "x" * 3000) for i in range(3)]
    store.ingest(big, T0)
    raws, after = store.served_page(now_ms=T0, limit=10, max_bytes=7000)
    assert raws == [big[0].raw, big[1].raw] and after == ("big/1", ADA.public_key)
    raws, after = store.served_page(now_ms=T0, after=after, limit=10, max_bytes=10)
    assert raws == [big[2].raw] and after is None


def test_a_page_of_one_author(make_store: MakeStore) -> None:
    store = make_store()
    store.ingest([record(a, f"k/{i}") for a in (ADA, BOB) for i in range(3)], T0)
    raws, after = store.served_page(now_ms=T0, author=BOB.public_key, limit=10, max_bytes=MB)
    assert raws == [record(BOB, f"k/{i}").raw for i in range(3)] and after is None


def test_paging_goes_on_past_records_replaced_meanwhile(make_store: MakeStore) -> None:
    store = make_store()
    store.ingest([record(ADA, f"k/{i}", seq=1) for i in range(4)], T0)
    first, after = store.served_page(now_ms=T0, limit=2, max_bytes=MB)
    store.ingest([record(ADA, "k/0", "newer", seq=2), record(ADA, "k/3", "newer", seq=2)], T0)
    rest, end = store.served_page(now_ms=T0, after=after, limit=10, max_bytes=MB)
    assert first == [record(ADA, f"k/{i}", seq=1).raw for i in (0, 1)]
    assert rest == [record(ADA, "k/2", seq=1).raw, record(ADA, "k/3", "newer", seq=2).raw]
    assert end is None


# -- offline --------------------------------------------------------------------------


def prepared_home(path: Path) -> Path:
    datadir.prepare(path)
    datadir.load_or_create_identity(path, bytes(32))
    return path


def test_offline_import_and_export_through_the_data_dir(tmp_path: Path) -> None:
    home = prepared_home(tmp_path / "node")
    records = some_records(300)
    with OfflineNode(home) as node:
        raws = [r.raw for r in records] + [tampered(records[0].raw, len(records[0].raw) - 1)]
        assert node.import_records(raws) == ("new",) * 300 + ("bad-signature",)
        assert node.import_records([records[1].raw]) == ("known",)
        pages = list(node.export_pages(prefix="offer/"))
    exported = [raw for page in pages for raw in page]
    assert sorted(exported) == sorted(r.raw for r in records)
    assert not (home / datadir.LOCK_FILE).read_text()  # the lock was released


def test_offline_use_is_refused_while_a_daemon_holds_the_lock(tmp_path: Path) -> None:
    home = prepared_home(tmp_path / "node")
    lock = datadir.DataDirLock(home)
    lock.acquire()
    try:
        with pytest.raises(Busy, match="already using"), OfflineNode(home):
            pass
    finally:
        lock.release()


def test_offline_use_needs_a_node_and_never_creates_one(tmp_path: Path) -> None:
    with pytest.raises(OfflineError, match="no node lives in"), OfflineNode(tmp_path / "none"):
        pass
    assert not (tmp_path / "none").exists()


# -- the commands, with and without a daemon --------------------------------------------


def cli(
    daemon: Daemon, *args: str, stdin: bytes | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    command = [sys.executable, "-m", "meshnode", args[0], *daemon.cli_args, *args[1:]]
    return subprocess.run(command, capture_output=True, input=stdin, timeout=timeout, check=False)


def report(done: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
    assert done.stdout, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def publish(daemon: Daemon, count: int, prefix: str = "offer/") -> None:
    with daemon.client() as client:
        client.publish_many([(f"{prefix}{i}", f"value {i}", None) for i in range(count)])


def stopped(daemon: Daemon) -> Daemon:
    """A node that ran once (it has an identity) and is stopped now."""
    daemon.start()
    daemon.stop()
    return daemon


def status(daemon: Daemon) -> dict[str, Any]:
    with daemon.client() as client:
        return client.status()


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.slow
def test_export_from_a_daemon_and_import_into_another_reports_new_then_known(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    source, target = daemon_factory("source").start(), daemon_factory("target").start()
    publish(source, 30)
    publish(source, 5, prefix="profile/")
    source.cli("delete", "offer/0")
    path = tmp_path / "offers.mnb"
    exported = cli(source, "export", "--prefix", "offer/", str(path))
    assert exported.returncode == 0, exported.stderr
    assert b"exported 30 records" in exported.stderr and b"the running node" in exported.stderr

    first = report(cli(target, "import", str(path), "--json"))
    assert (first["new"], first["known"], first["rejected"], first["complete"]) == (30, 0, 0, True)
    again = cli(target, "import", str(path))
    assert again.returncode == 0
    assert b"new 0, already known 30, superseded 0, rejected 0" in again.stdout
    with target.client() as client:
        held = client.query(prefix="offer/", include_deleted=True)["records"]
    assert len(held) == 30 and [r["deleted"] for r in held if r["key"] == "offer/0"] == [True]


@pytest.mark.slow
def test_imported_records_reach_watchers_and_are_relayed_to_peers(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    peer = daemon_factory("peer").start()
    node = daemon_factory("node").start("--peer", peer.peer_address)
    wait_for(lambda: status(node)["peers"] == 1)
    path = tmp_path / "b.mnb"
    path.write_bytes(encode_bundle(BundleHeader(T0), [r.raw for r in some_records(20)]))
    with node.client() as watcher:
        events = watcher.watch(prefix="offer/")
        assert cli(node, "import", str(path)).returncode == 0
        seen = [next(events)["record"]["key"] for _ in range(20)]
    assert sorted(seen) == sorted(f"offer/{i}" for i in range(20))

    def relayed() -> bool:
        with peer.client() as client:
            return len(client.query(prefix="offer/")["records"]) == 20

    wait_for(relayed)


@pytest.mark.slow
def test_a_tampered_record_is_rejected_and_reported_while_the_rest_import(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    target = daemon_factory().start()
    records = some_records(10)
    raws = [r.raw for r in records]
    raws[3] = tampered(raws[3], len(raws[3]) - 5)
    raws[7] = b"\x92\x01\x02"  # a foreign entry: a bin that is no record
    data = encode_bundle(BundleHeader(T0), raws)
    path = tmp_path / "b.mnb"
    path.write_bytes(data)
    done = cli(target, "import", str(path))
    assert done.returncode == 0, done.stderr
    text = done.stdout.decode()
    assert "new 8, already known 0, superseded 0, rejected 2" in text
    assert f"bad-signature: 1 (byte {data.index(raws[3]) - 2} id" in text
    assert "not-a-record: 1" in text
    with target.client() as client:
        assert len(client.query(prefix="offer/")["records"]) == 8


@pytest.mark.slow
def test_export_and_import_offline_under_the_lock(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    source = daemon_factory("source").start()
    publish(source, 40)
    source.stop()
    target = stopped(daemon_factory("target"))
    path = tmp_path / "o.mnb"
    exported = cli(source, "export", str(path))
    assert exported.returncode == 0, exported.stderr
    assert b"exported 40 records" in exported.stderr and b"no daemon running" in exported.stderr
    imported = report(cli(target, "import", str(path), "--json"))
    assert (imported["new"], imported["complete"]) == (40, True)
    assert "no daemon running" in imported["into"]
    target.start()
    with target.client() as client:
        assert len(client.query(prefix="offer/")["records"]) == 40


@pytest.mark.slow
def test_export_to_stdout_and_import_from_stdin(
    daemon_factory: Callable[..., Daemon],
) -> None:
    source, target = daemon_factory("source").start(), daemon_factory("target").start()
    publish(source, 12)
    exported = cli(source, "export", "-")
    assert exported.returncode == 0 and exported.stdout.startswith(MAGIC)
    imported = report(cli(target, "import", "-", "--json", stdin=exported.stdout))
    assert (imported["new"], imported["file"]) == (12, "stdin")


@pytest.mark.slow
def test_a_truncated_bundle_imports_what_came_before_the_cut_and_exits_1(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    target = daemon_factory().start()
    raws = [r.raw for r in some_records(10)]
    data = encode_bundle(BundleHeader(T0), raws)
    path = tmp_path / "cut.mnb"
    path.write_bytes(data[: data.index(raws[6]) + 10])
    done = cli(target, "import", str(path))
    assert done.returncode == 1
    assert b"new 6" in done.stdout and b"cut short" in done.stderr


def test_a_medium_that_fails_part_way_gives_what_was_read_then_says_so() -> None:
    from meshnode.client.bundle_commands import _batches, _Unread

    def failing() -> Iterator[tuple[int, bytes]]:
        yield 10, b"a record"
        raise OSError(errno.EIO, "Input/output error")

    batches = _batches(failing())
    assert next(batches) == [(10, b"a record")]
    with pytest.raises(_Unread, match="cannot read on: Input/output error"):
        next(batches)


@pytest.mark.slow
def test_a_file_that_cannot_be_read_is_one_line_and_exit_1(
    daemon_factory: Callable[..., Daemon],
) -> None:
    target = stopped(daemon_factory())
    done = cli(target, "import", "/proc/self/mem")  # opens, then fails to read: EIO
    assert done.returncode == 1
    assert done.stderr == b"meshnode: /proc/self/mem: cannot read on: Input/output error\n"


@pytest.mark.slow
def test_files_that_are_no_bundle_change_nothing_and_exit_2(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    target = stopped(daemon_factory())
    cases = {
        "text.txt": b"hello\n",
        "empty.mnb": b"",
        "v2.mnb": MAGIC + canonical.pack({"v": 2, "created_ms": T0}) + b"\xc0",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        done = cli(target, "import", str(tmp_path / name))
        assert done.returncode == 2, (name, done.stderr)
        assert done.stderr.startswith(f"meshnode: {tmp_path / name}: ".encode())
    assert b"version 2" in cli(target, "import", str(tmp_path / "v2.mnb")).stderr
    assert cli(target, "import", str(tmp_path / "missing.mnb")).returncode == 2
    assert not (target.data_dir / datadir.LOCK_FILE).read_text()


@pytest.mark.slow
def test_offline_commands_say_so_when_a_daemon_holds_the_data_dir_elsewhere(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    node = daemon_factory().start()
    path = tmp_path / "b.mnb"
    path.write_bytes(encode_bundle(BundleHeader(T0), [record(ADA).raw]))
    elsewhere = ["--socket", str(tmp_path / "nothing.sock")]
    done = cli(node, "import", str(path), *elsewhere)
    assert done.returncode == 3 and b"already using" in done.stderr
    done = cli(node, "export", str(tmp_path / "out.mnb"), *elsewhere)
    assert done.returncode == 3 and not (tmp_path / "out.mnb").exists()


@pytest.mark.slow
def test_100_mb_of_garbage_is_refused_fast_with_a_clear_error(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    target = stopped(daemon_factory())
    path = tmp_path / "garbage.bin"
    write_garbage(path, 100 * MB, seed=3)
    started = time.monotonic()
    done = cli(target, "import", str(path))
    assert time.monotonic() - started < 5.0
    assert done.returncode == 2 and b"not a meshnode bundle" in done.stderr


def peak_rss(pid: int) -> int:
    """A process's peak resident memory so far, in KiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    [line] = [x for x in status.splitlines() if x.startswith("VmHWM:")]
    return int(line.split()[1])


def peak_rss_of_import(target: Daemon, path: Path) -> int:
    """The peak resident memory (KiB) of one ``meshnode import`` process.

    ``VmHWM``, not ``getrusage``: Linux carries a process's peak over ``exec``, so
    the child would report the larger test process that started it.
    """
    code = (
        "import sys; from meshnode.client.cli import main; code = main(sys.argv[1:]);"
        " print(open('/proc/self/status').read(), file=sys.stderr); sys.exit(code)"
    )
    command = [sys.executable, "-c", code, "import", *target.cli_args, str(path)]
    done = subprocess.run(command, capture_output=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    [line] = [x for x in done.stderr.decode().splitlines() if x.startswith("VmHWM:")]
    return int(line.split()[1])


@pytest.mark.slow
def test_importing_100_mb_of_garbage_records_stays_within_bounded_memory(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    target = stopped(daemon_factory())
    small = tmp_path / "small.mnb"
    small.write_bytes(encode_bundle(BundleHeader(T0), [record(ADA).raw]))
    big = tmp_path / "big.mnb"
    rng = random.Random(4)
    entry_header = b"\xc5" + MAX_RECORD_BYTES.to_bytes(2, "big")
    with big.open("wb") as out:
        out.write(MAGIC + BundleHeader(T0).encode())
        for _ in range(100 * MB // (MAX_RECORD_BYTES + 3)):
            out.write(entry_header + b"\x98" + rng.randbytes(MAX_RECORD_BYTES - 1))
        out.write(b"\xc0")
    assert os.path.getsize(big) > 100 * MB - MAX_RECORD_BYTES
    # Offline: the command verifies every record itself.
    baseline = peak_rss_of_import(target, small)
    assert peak_rss_of_import(target, big) - baseline < 20 * 1024
    # Through a daemon: neither the command nor the daemon holds more than a few chunks.
    target.start()
    assert target.process is not None
    daemon_before = peak_rss(target.process.pid)
    assert peak_rss_of_import(target, big) - baseline < 20 * 1024
    assert peak_rss(target.process.pid) - daemon_before < 20 * 1024


def run_on_a_terminal(command: list[str]) -> tuple[int, str]:
    """Run ``command`` with its stderr on a pseudo-terminal; its exit code and what it drew."""
    import pty

    master, slave = pty.openpty()
    try:
        done = subprocess.run(
            command, stdout=subprocess.DEVNULL, stderr=slave, timeout=120, check=False
        )
    finally:
        os.close(slave)
    drawn = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the terminal's other end is closed and drained
            break
        if not chunk:
            break
        drawn += chunk
    os.close(master)
    return done.returncode, drawn.decode()


@pytest.mark.slow
def test_a_long_import_shows_its_progress_on_a_terminal_and_nothing_into_a_pipe(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    target = stopped(daemon_factory())
    authors = [identity(200 + i) for i in range(50)]
    raws = [record(a, f"bulk/{i}", i).raw for a in authors for i in range(200)]
    path = tmp_path / "bulk.mnb"
    path.write_bytes(encode_bundle(BundleHeader(T0), raws))
    # A fast machine imports these in less than PROGRESS_AFTER, so the child starts at once.
    at_once = (
        "import sys, meshnode.client.bundle_commands as b; b.PROGRESS_AFTER = 0.0; "
        "from meshnode.client.cli import main; sys.exit(main())"
    )
    command = [sys.executable, "-c", at_once, "import", *target.cli_args, str(path)]
    code, drawn = run_on_a_terminal(command)
    assert code == 0
    assert "\rimporting: " in drawn and "% of the file, " in drawn and "records, " in drawn
    again = cli(target, "import", str(path))  # stderr is a pipe here
    assert again.returncode == 0 and again.stderr == b""
    assert b"already known 10,000" in again.stdout


@pytest.mark.slow
def test_the_control_methods_refuse_bad_arguments_and_the_daemon_carries_on(
    daemon: Daemon,
) -> None:
    publish(daemon, 3)
    with daemon.client() as client:
        page = client.call("export", limit=2)
        assert len(page["records"]) == 2 and isinstance(page["next"], bytes)
        rest = client.call("export", limit=2, after=page["next"])
        assert len(rest["records"]) == 1 and rest["next"] is None
        bad_calls: list[dict[str, Any]] = [
            {"method": "export", "limit": 0},
            {"method": "export", "limit": 10_001},
            {"method": "export", "after": b"\xff" * 40},
            {"method": "export", "after": b"short"},
            {"method": "export", "author": "node1nope"},
            {"method": "export", "surprise": 1},
            {"method": "import", "records": "not a list"},
            {"method": "import", "records": [b"ok", "a str"]},
            {"method": "import", "records": [b"x"] * 10_001},
            {"method": "import"},
        ]
        for call in bad_calls:
            method = call.pop("method")
            with pytest.raises(RemoteError) as caught:
                client.call(method, **call)
            assert caught.value.code == "invalid-params", (method, call)
        assert client.call("import", records=[]) == {"verdicts": []}
        assert client.call("import", records=[b"\x00"]) == {"verdicts": ["not-a-record"]}
        assert client.call("ping") == "pong"
