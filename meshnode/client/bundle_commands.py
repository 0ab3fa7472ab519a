"""``meshnode export`` and ``meshnode import``: records in a bundle file (protocol/bundle.md).

Both work with the daemon running or stopped. Running, they go through its
control socket: ``export`` reads the store a page at a time, ``import`` sends
chunks of records that the daemon verifies and stores as it does a peer's
(quotas included), relays to its peers and shows to watchers. Stopped, they
open the data dir under its lock (``meshnode.system.offline``, imported only
then: the CLI starts without a store or a crypto backend).

An export is written beside its file and renamed into place, so a failed one
leaves no half bundle under that name. An import reads the header before it
touches any node, so a file that is no bundle changes nothing (exit 2); it
reports what became of every record (new, already known, superseded, rejected
and why, with the first offsets), and exits 0 if it read the bundle to its end,
1 if the bundle stopped early (cut short or damaged: what came before was
imported). On a terminal a long import shows its progress on stderr; into a
pipe it says nothing until its report.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time

from meshnode.client import Client, ClientError, DaemonNotRunning, RemoteError
from meshnode.client.exits import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_NO_DAEMON, EXIT_OK
from meshnode.client.words import counted
from meshnode.core.jsonview import dumps
from meshnode.core.nodeid import NodeIdError, decode_node_id
from meshnode.system import paths

# ``typing`` is for the type checker only: importing it costs the CLI ~5 ms of start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from pathlib import Path
    from typing import IO, Any

    from meshnode.client.progress import Progress
    from meshnode.core.bundle import BundleError, BundleHeader, BundleReader, BundleWriter, Entry
    from meshnode.store.base import StoreLimits
    from meshnode.system.offline import OfflineNode

EXPORT_PAGE = 5000  # records per ``export`` call
# Per ``import`` call: the daemon takes requests of at most 1 MiB.
IMPORT_RECORDS = 2048
IMPORT_BYTES = 960 * 1024
READ_CHUNK = 256 * 1024
EXAMPLES = 3  # rejected records shown per reason
PROGRESS_AFTER = 0.5  # seconds an import runs before it shows progress
_ACCEPTED = ("new", "known", "superseded")
_WORDS = {"new": "new", "known": "already known", "superseded": "superseded"}


class _Failed(Exception):
    """A command that cannot go on; ``code`` is its exit status."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser],
    formatter_class: type[argparse.HelpFormatter],
) -> None:
    p = sub.add_parser(
        "export",
        parents=list(parents),
        help="write signed records to a bundle file, for a USB stick",
        formatter_class=formatter_class,
    )
    p.add_argument("file", metavar="FILE", help="the bundle to write; - for stdout")
    p.add_argument("--prefix", default="", help="only keys starting with this")
    p.add_argument("--author", metavar="ID", help="only this node's records")
    p.set_defaults(handler=None, offline=cmd_export)
    p = sub.add_parser(
        "import",
        parents=list(parents),
        help="verify and store the records of a bundle file; report what was rejected",
        formatter_class=formatter_class,
    )
    p.add_argument("file", metavar="FILE", help="the bundle to read; - for stdin")
    p.add_argument(
        "--config",
        metavar="FILE",
        help="with no daemon running: the configuration whose store quotas apply"
        " (default: the one meshnode run would read)",
    )
    p.set_defaults(handler=None, offline=cmd_import)


def _run(command: Callable[[], int]) -> int:
    try:
        return command()
    except _Failed as exc:
        sys.stderr.write(f"meshnode: {exc}\n")
        return exc.code
    except paths.PathError as exc:
        sys.stderr.write(f"meshnode: {exc}\n")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130


def _home(args: argparse.Namespace) -> tuple[Path, Path]:
    home = paths.data_dir(args.data_dir, os.environ)
    return home, paths.client_socket(args.data_dir, args.socket, os.environ)


def _offline_error(exc: Exception) -> _Failed:
    """A failure of the offline node: no daemon could be reached, and the data dir is of no use."""
    from meshnode.system.offline import Busy

    return _Failed(EXIT_NO_DAEMON if isinstance(exc, Busy) else EXIT_FAILED, str(exc))


# -- export ---------------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    return _run(lambda: _export(args))


def _export(args: argparse.Namespace) -> int:
    from meshnode.core.bundle import BundleWriter

    author = _author(args.author)
    home, socket_path = _home(args)
    started = time.monotonic()
    with Client(socket_path) as client:
        pages, where = _daemon_pages(client, args.prefix, args.author), "the running node"
        try:
            first = next(pages)
        except DaemonNotRunning:
            from meshnode.system.offline import OfflineError, OfflineNode

            try:
                with OfflineNode(home) as node:
                    _warn(node.warnings)
                    pages = node.export_pages(prefix=args.prefix, author=author)
                    writer = BundleWriter(_header(args.prefix, author))
                    _write(args.file, writer, pages)
            except OfflineError as exc:
                raise _offline_error(exc) from None
            where = f"{home} (no daemon running)"
        else:
            writer = BundleWriter(_header(args.prefix, author))
            _write(args.file, writer, itertools.chain([first], pages))
    elapsed = time.monotonic() - started
    target = "stdout" if args.file == "-" else args.file
    summary = {
        "records": writer.count,
        "bytes": writer.size,
        "file": target,
        "from": where,
        "seconds": round(elapsed, 3),
    }
    if args.json:
        sys.stderr.write(dumps(summary) + "\n")
    else:
        sys.stderr.write(
            f"exported {counted(writer.count, 'record')} ({writer.size:,} bytes) from {where}"
            f" to {target}\n"
        )
    return EXIT_OK


def _author(text: str | None) -> bytes | None:
    if text is None:
        return None
    try:
        return decode_node_id(text)
    except NodeIdError as exc:
        raise _Failed(EXIT_BAD_INPUT, str(exc)) from None


def _header(prefix: str, author: bytes | None) -> BundleHeader:
    from meshnode.core.bundle import BundleHeader

    return BundleHeader(time.time_ns() // 1_000_000, prefix=prefix or None, author=author)


def _daemon_pages(client: Client, prefix: str, author: str | None) -> Iterator[list[bytes]]:
    params: dict[str, Any] = {"prefix": prefix, "limit": EXPORT_PAGE}
    if author is not None:
        params["author"] = author
    after = None
    while True:
        try:
            page = client.call("export", **params, after=after)
        except RemoteError as exc:
            raise _Failed(EXIT_FAILED, f"the daemon could not export: {exc.message}") from None
        except DaemonNotRunning:
            raise
        except ClientError as exc:
            raise _Failed(EXIT_FAILED, str(exc)) from None
        yield page["records"]
        after = page["next"]
        if after is None:
            return


def _write(name: str, writer: BundleWriter, pages: Iterator[list[bytes]]) -> None:
    """The bundle to ``name`` (``-``: stdout); a file appears whole or not at all."""
    if name == "-":
        if sys.stdout.isatty():
            raise _Failed(EXIT_BAD_INPUT, "a bundle is binary: redirect stdout, or name a file")
        try:
            _write_to(sys.stdout.buffer, writer, pages)
            sys.stdout.buffer.flush()
        except BrokenPipeError:
            raise _Failed(EXIT_FAILED, "the reader of stdout went away") from None
        return
    if os.path.exists(name) and not os.path.isfile(name):  # a pipe, a device: as it is
        with _open_output(name, name) as out:
            _write_to(out, writer, pages)
        return
    partial = os.path.join(os.path.dirname(name) or ".", f".{os.path.basename(name)}.partial")
    try:
        with _open_output(partial, name) as out:
            _write_to(out, writer, pages)
        os.replace(partial, name)
    except BaseException:
        if os.path.exists(partial):
            os.unlink(partial)
        raise


def _open_output(path: str, name: str) -> IO[bytes]:
    try:
        return open(path, "wb")
    except OSError as exc:
        raise _Failed(EXIT_BAD_INPUT, f"cannot write {name}: {exc.strerror}") from None


def _write_to(out: IO[bytes], writer: BundleWriter, pages: Iterator[list[bytes]]) -> None:
    try:
        out.write(writer.start())
        for page in pages:
            out.write(b"".join([writer.add(raw) for raw in page]))
        out.write(writer.end())
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):
            raise
        raise _Failed(EXIT_FAILED, f"cannot write the bundle: {exc.strerror}") from None


# -- import ---------------------------------------------------------------------


def cmd_import(args: argparse.Namespace) -> int:
    return _run(lambda: _import(args))


def _import(args: argparse.Namespace) -> int:
    from meshnode.core.bundle import BundleError, BundleReader

    home, socket_path = _home(args)
    source, size = _open_input(args.file)
    name = "stdin" if args.file == "-" else args.file
    reader = BundleReader()
    tally = _Tally(name)
    progress = _ImportProgress(reader, size)
    with source:
        rest = _batches(reader.read(source, READ_CHUNK))
        try:
            first = next(rest, [])
        except BundleError as exc:
            return _unreadable(args, tally, exc)
        except _Unread as exc:
            raise _Failed(EXIT_FAILED, f"{name}: {exc}") from None
        batches = itertools.chain([first], rest)
        with Client(socket_path, timeout=120) as client:
            try:
                client.call("ping")
            except DaemonNotRunning:
                from meshnode.system.offline import OfflineError, OfflineNode

                tally.into = f"{home} (no daemon running)"
                try:
                    with OfflineNode(home, limits=_store_limits(home, args)) as node:
                        _warn(node.warnings)
                        _feed(tally, batches, _offline_sink(node), progress)
                except OfflineError as exc:
                    raise _offline_error(exc) from None
            except ClientError as exc:
                raise _Failed(EXIT_FAILED, str(exc)) from None
            else:
                tally.into = "the running node"
                _feed(tally, batches, _daemon_sink(client), progress)
    return _report(args, tally, reader)


def _store_limits(home: Path, args: argparse.Namespace) -> StoreLimits:
    """The quotas a daemon on ``home`` would keep: an offline import is held to them too."""
    from meshnode.system import config

    inputs = config.Inputs(data_dir=home, config_file=args.config, env=os.environ)
    try:
        return config.load(inputs).settings.store
    except config.ConfigError as exc:
        raise _Failed(EXIT_BAD_INPUT, str(exc)) from None


def _open_input(name: str) -> tuple[IO[bytes], int | None]:
    """The bundle's stream and its size in bytes, if it has one (for progress)."""
    if name == "-":
        try:
            stream = os.fdopen(os.dup(sys.stdin.fileno()), "rb")
        except OSError as exc:
            raise _Failed(EXIT_BAD_INPUT, f"cannot read stdin: {exc.strerror}") from None
    else:
        try:
            stream = open(name, "rb")  # noqa: SIM115 - the caller closes it
        except OSError as exc:
            raise _Failed(EXIT_BAD_INPUT, f"cannot read {name}: {exc.strerror}") from None
    import stat

    info = os.fstat(stream.fileno())
    return stream, info.st_size if stat.S_ISREG(info.st_mode) and info.st_size else None


def _batches(entries: Iterator[Entry]) -> Iterator[list[Entry]]:
    """Entries in chunks that fit one ``import`` request; a chunk cut short by a fault first."""
    from meshnode.core.bundle import BundleError

    batch: list[Entry] = []
    size = 0
    try:
        for entry in entries:
            if len(batch) == IMPORT_RECORDS or size + len(entry[1]) > IMPORT_BYTES:
                yield batch
                batch, size = [], 0
            batch.append(entry)
            size += len(entry[1]) + 5  # the bin header
    except BundleError:
        if batch:
            yield batch  # what came before the fault is imported; then the fault
        raise
    except OSError as exc:  # the medium failed (a USB stick pulled, a bad sector)
        if batch:
            yield batch
        raise _Unread(f"cannot read on: {exc.strerror or exc}") from None
    if batch:
        yield batch


def _daemon_sink(client: Client) -> Callable[[Sequence[bytes]], Sequence[str]]:
    def send(raws: Sequence[bytes]) -> Sequence[str]:
        try:
            verdicts: list[str] = client.call("import", records=list(raws))["verdicts"]
        except ClientError as exc:
            raise _Stopped(f"the daemon stopped the import: {exc}") from None
        return verdicts

    return send


def _offline_sink(node: OfflineNode) -> Callable[[Sequence[bytes]], Sequence[str]]:
    from meshnode.system.offline import OfflineError

    def store(raws: Sequence[bytes]) -> Sequence[str]:
        try:
            return node.import_records(raws)
        except OfflineError as exc:
            raise _Stopped(str(exc)) from None

    return store


class _Stopped(Exception):
    """The node stopped taking records part-way (the daemon went away, the disk is full)."""


class _Unread(Exception):
    """The bundle's file could not be read on; what came before it was read whole."""


def _feed(
    tally: _Tally,
    batches: Iterator[list[Entry]],
    sink: Callable[[Sequence[bytes]], Sequence[str]],
    progress: _ImportProgress,
) -> None:
    """Hand each chunk to the node and count its verdicts, until the bundle or the node stops."""
    from meshnode.core.bundle import BundleError

    try:
        for batch in batches:
            if not batch:
                continue
            found = sink([raw for _, raw in batch])
            if len(found) != len(batch):
                raise _Stopped(f"the node gave {len(found)} verdicts for {len(batch)} records")
            tally.add(batch, found)
            progress.show(tally.records)
    except BundleError as exc:
        tally.fault = exc
    except _Stopped as exc:
        tally.stopped = str(exc)
    except _Unread as exc:
        tally.stopped = f"{exc}; the records before were imported"
    except KeyboardInterrupt:
        tally.stopped = "interrupted; what the last chunk sent to a daemon became is not known"
    finally:
        progress.close()


class _ImportProgress:
    """A ``\\r`` line on a terminal once an import has run a while; nothing elsewhere."""

    def __init__(self, reader: BundleReader, size: int | None) -> None:
        self._reader = reader
        self._size = size
        self._started = time.monotonic()
        self._line: Progress | None = None
        self._tty = sys.stderr.isatty()

    def show(self, records: int) -> None:
        elapsed = time.monotonic() - self._started
        if not self._tty or elapsed < PROGRESS_AFTER:
            return
        if self._line is None:
            from meshnode.client.progress import Progress

            self._line = Progress(sys.stderr, tty=True)
        size = self._size
        share = f"{min(self._reader.offset / size, 1.0):.0%} of the file, " if size else ""
        self._line.say(f"importing: {share}{records:,} records, {records / elapsed:,.0f}/s")

    def close(self) -> None:
        if self._line is not None:
            self._line.close()


class _Tally:
    """What became of the records of one import, with the first few rejected of each reason."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.into = ""
        self.records = 0
        self.counts: dict[str, int] = {}
        self.examples: dict[str, list[tuple[int, str]]] = {}
        self.fault: BundleError | None = None  # the bundle stopped being one
        self.stopped: str | None = None  # the node stopped taking records

    def add(self, batch: Sequence[Entry], verdicts: Sequence[str]) -> None:
        self.records += len(batch)
        counts = self.counts
        for index, verdict in enumerate(verdicts):
            counts[verdict] = counts.get(verdict, 0) + 1
            if verdict not in _ACCEPTED:
                shown = self.examples.setdefault(verdict, [])
                if len(shown) < EXAMPLES:
                    offset, raw = batch[index]
                    shown.append((offset, _record_id(raw)))

    @property
    def rejected(self) -> int:
        return sum(n for verdict, n in self.counts.items() if verdict not in _ACCEPTED)

    def view(self, complete: bool) -> dict[str, Any]:
        fault = self.fault
        return {
            "file": self.name,
            "into": self.into,
            "records": self.records,
            "new": self.counts.get("new", 0),
            "known": self.counts.get("known", 0),
            "superseded": self.counts.get("superseded", 0),
            "rejected": self.rejected,
            "reasons": {
                reason: {
                    "count": self.counts[reason],
                    "first": [{"offset": o, "id": i} for o, i in self.examples[reason]],
                }
                for reason in sorted(self.examples)
            },
            "complete": complete,
            "error": None
            if fault is None
            else {"reason": str(fault.reason), "offset": fault.offset, "message": str(fault)},
            "stopped": self.stopped,
        }


def _record_id(raw: bytes) -> str:
    """The id a record of these bytes has (SHA-256, records.md §6), to find it again."""
    import hashlib

    return hashlib.sha256(raw).hexdigest()


def _unreadable(args: argparse.Namespace, tally: _Tally, exc: BundleError) -> int:
    """The file is no bundle this meshnode reads: nothing was done."""
    tally.fault = exc
    if args.json:
        sys.stdout.write(dumps(tally.view(complete=False)) + "\n")
    sys.stderr.write(f"meshnode: {tally.name}: {exc}\n")
    return EXIT_BAD_INPUT


def _report(args: argparse.Namespace, tally: _Tally, reader: BundleReader) -> int:
    complete = reader.complete and tally.fault is None and tally.stopped is None
    if args.json:
        sys.stdout.write(dumps(tally.view(complete)) + "\n")
    else:
        counts = ", ".join(f"{_WORDS[v]} {tally.counts.get(v, 0):,}" for v in _ACCEPTED)
        sys.stdout.write(
            f"imported {tally.name} into {tally.into}: {counted(tally.records, 'record')},"
            f" {counts}, rejected {tally.rejected:,}\n"
        )
        for reason in sorted(tally.examples):
            shown = ", ".join(f"byte {o} id {i[:16]}" for o, i in tally.examples[reason])
            more = ", ..." if tally.counts[reason] > EXAMPLES else ""
            sys.stdout.write(f"  {reason}: {tally.counts[reason]:,} ({shown}{more})\n")
    if complete:
        return EXIT_OK
    if tally.stopped is not None:
        why = tally.stopped
    elif tally.fault is not None:
        why = f"the bundle is damaged: {tally.fault}; the records before it were imported"
    else:
        why = (
            f"the bundle is cut short after {reader.offset:,} bytes (no end marker);"
            " the records before the cut were imported"
        )
    sys.stderr.write(f"meshnode: {tally.name}: {why}\n")
    return EXIT_FAILED


def _warn(warnings: list[str]) -> None:
    for warning in warnings:
        sys.stderr.write(f"meshnode: {warning}\n")
