"""The control API's methods, independent of the socket that carries them.

Every method takes named arguments (one msgpack map) and returns a msgpack
value, or raises ``ApiError`` with a stable code. ``protocol/control.md`` is
the reference for each method and code.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from msgspec import Struct

from meshnode import __version__
from meshnode.core.nodeid import NodeIdError, decode_node_id, encode_node_id
from meshnode.core.record import CLOCK_FLOOR_MS, Record, RecordError
from meshnode.engine.actions import Imported, Published
from meshnode.engine.events import Delete, Ingest, SyncNow
from meshnode.engine.node import (
    ClockUnset,
    InvalidArgument,
    Node,
    NodeError,
    NotFound,
    Publication,
    QuotaExceeded,
)
from meshnode.runtime.clock import WallClock
from meshnode.runtime.mdns import DiscoveryState
from meshnode.runtime.peers import PeerService
from meshnode.runtime.publisher import Publisher, Ticket
from meshnode.runtime.reload import Reloader, ReloadError
from meshnode.store.base import StoreError
from meshnode.store.sqlite import SQLiteStore
from meshnode.system.config import describe

DEFAULT_QUERY_LIMIT = 1000
MAX_QUERY_LIMIT = 10_000
# ``export`` pages: records, and bytes past the first record (an answer stays small).
DEFAULT_EXPORT_LIMIT = 1000
MAX_EXPORT_LIMIT = 10_000
EXPORT_PAGE_BYTES = 2 * 1024 * 1024
MAX_IMPORT_RECORDS = 10_000  # per ``import`` request (itself at most 1 MiB)
AUTHOR_BYTES = 32  # the end of an ``export`` cursor


class ApiError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def record_view(record: Record) -> dict[str, Any]:
    """A record as the API and ``--json`` show it; the field names are stable."""
    return {
        "id": record.id.hex(),
        "author": encode_node_id(record.author),
        "seq": record.seq,
        "key": record.key,
        "value": record.value,
        "created_ms": record.created_ms,
        "expires_ms": record.expires_ms,
        "deleted": record.is_tombstone,
    }


def sync_summary(peers: list[dict[str, Any]], refused: int = 0) -> dict[str, Any]:
    """The catch-up over all open sessions (``peer_list`` entries), for ``status`` and ``sync``.

    ``refused``: valid records from peers the store did not take since the start (quotas),
    which the node will not hold however long it syncs.
    """
    open_ = [p for p in peers if p["state"] == "open"]
    to_fetch = sum(p["to_fetch"] for p in open_)
    rate = round(sum(p["rate"] for p in open_), 1)
    reconciling = sum(1 for p in open_ if p["reconciling"])
    if not to_fetch:
        eta: float | None = 0.0
    else:  # while a round runs, more may be found: the time left is not known
        eta = round(to_fetch / rate, 1) if rate and not reconciling else None
    return {
        "to_fetch": to_fetch,
        "fetched": sum(p["fetched"] for p in open_),
        "rate": rate,
        "eta_s": eta,
        "peers_reconciling": reconciling,
        "peers_fetching": sum(1 for p in open_ if p["to_fetch"]),
        "peers_synced": sum(1 for p in open_ if p["synced"]),
        "peers": len(open_),
        "refused": refused,
    }


class Paths(Struct, frozen=True):
    data_dir: str
    socket: str


def _api_error(exc: Exception) -> ApiError:
    """The wire code for an error a node operation raised; anything else is a bug."""
    if isinstance(exc, ApiError):
        return exc
    for kinds, code in _ERROR_CODES:
        if isinstance(exc, kinds):
            return ApiError(code, str(exc))
    raise exc


_ERROR_CODES: tuple[tuple[type[Exception] | tuple[type[Exception], ...], str], ...] = (
    ((RecordError, InvalidArgument), "invalid-params"),
    (NotFound, "not-found"),
    (QuotaExceeded, "quota-exceeded"),
    (ClockUnset, "clock-unset"),
    (StoreError, "store-error"),
)


class Args:
    """Named arguments of one call, checked as they are taken."""

    def __init__(self, params: list[Any]) -> None:
        if not params:
            self._named: dict[Any, Any] = {}
        elif len(params) == 1 and type(params[0]) is dict:
            self._named = dict(params[0])
        else:
            raise ApiError("invalid-params", "params is [] or [{name: value, ...}]")

    def take(self, name: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        if name not in self._named:
            if default is ...:
                raise ApiError("invalid-params", f"missing argument {name!r}")
            return default
        value = self._named.pop(name)
        if value is None and default is None:
            return None
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
            raise ApiError("invalid-params", f"argument {name!r} has the wrong type")
        return value

    def take_author(self) -> bytes | None:
        return None if self._named.get("author") is None else self.take_node_id("author")

    def take_node_id(self, name: str) -> bytes:
        try:
            return decode_node_id(self.take(name, str))
        except NodeIdError as exc:
            raise ApiError("invalid-params", str(exc)) from None

    def done(self) -> None:
        if self._named:
            names = ", ".join(sorted(map(str, self._named)))
            raise ApiError("invalid-params", f"unknown argument(s): {names}")


class Api:
    def __init__(
        self,
        node: Node,
        peers: PeerService,
        *,
        publisher: Publisher,
        paths: Paths,
        wall_clock_ms: WallClock,
    ) -> None:
        """``node`` is read for its identity and store (on the store thread, between events)."""
        self.peers = peers
        self.publisher = publisher
        self.node = node
        self.store_thread = peers.store_thread
        self.hub = peers.hub
        self.paths = paths
        self.wall_clock_ms = wall_clock_ms
        self.started_ms = wall_clock_ms()
        self.started_monotonic = trio.current_time()
        self.clients = 0
        self.discovery: DiscoveryState | None = None  # None: mDNS is off
        self.reloader: Reloader | None = None  # None: started without a configuration
        self._methods: dict[str, Callable[[Args], Awaitable[Any]]] = {
            "ping": self.ping,
            "id": self.id,
            "status": self.status,
            "get": self.get,
            "query": self.query,
            "delete": self.delete,
            "peers": self.peer_list,
            "addresses": self.address_list,
            "bans": self.ban_list,
            "unban": self.unban,
            "export": self.export,
            "import": self.import_records,
            "sync": self.sync,
            "config": self.config,
            "reload": self.reload,
        }

    async def call(self, method: str, params: list[Any]) -> Any:
        handler = self._methods.get(method)
        if handler is None:
            raise ApiError("unknown-method", f"no method {method!r}")
        try:
            return await handler(Args(params))
        except (RecordError, NodeError, StoreError) as exc:
            raise _api_error(exc) from None

    async def ping(self, args: Args) -> str:
        args.done()
        return "pong"

    async def id(self, args: Args) -> dict[str, Any]:
        args.done()
        return self.node.identity.public_names()

    async def status(self, args: Args) -> dict[str, Any]:
        args.done()
        store = self.node.store
        stats = await self.store_thread.run(store.stats, self.wall_clock_ms())
        file_bytes = store.file_bytes() if isinstance(store, SQLiteStore) else 0
        return {
            **await self.id(Args([])),
            "version": __version__,
            "pid": os.getpid(),
            "started_ms": self.started_ms,
            "uptime_s": round(trio.current_time() - self.started_monotonic, 3),
            "records": stats.records,
            "tombstones": stats.tombstones,
            "authors": stats.authors,
            "own_records": stats.own_records,
            "record_bytes": stats.record_bytes,
            "store_bytes": file_bytes,
            "store_limit_bytes": store.limits.max_total_bytes,
            "store_warnings": list(store.warnings),
            "data_dir": self.paths.data_dir,
            "socket": self.paths.socket,
            "clients": self.clients,
            "watches": len(self.hub),
            "peers": self.peers.sessions,
            "records_refused": self.peers.refused,
            "wrong_key_from": self.peers.wrong_key_from,
            "listening": list(self.peers.listening),
            "discovery": self._discovery_view(),
            "overlay": await self.peers.overlay(),
            "clock_set": self.wall_clock_ms() >= CLOCK_FLOOR_MS,
            "sync": sync_summary(await self.peers.peer_list(), self.peers.refused),
        }

    def _discovery_view(self) -> dict[str, Any]:
        state = self.discovery
        if state is None:
            return {"mdns": False}
        return {
            "mdns": True,
            "running": state.running,
            "instance": state.instance,
            "interfaces": list(state.interfaces),
            "addresses": list(state.addresses),
            "skipped_interfaces": dict(state.skipped),
            "services": len(state.services),
            "ignored_services": dict(state.ignored),
            "error": state.error,
        }

    def submit_publish(self, params: list[Any]) -> Ticket:
        """Queue a publish now, in request order; its result comes with the next batch."""
        args = Args(params)
        key = args.take("key", str)
        value = args.take("value", object)
        ttl_ms = args.take("ttl_ms", int, None)
        args.done()
        return self.publisher.submit(Publication(key, value, ttl_ms))

    async def finish_publish(self, ticket: Ticket) -> dict[str, Any]:
        try:
            return record_view(await ticket.wait())
        except Exception as exc:
            raise _api_error(exc) from None

    async def delete(self, args: Args) -> dict[str, Any]:
        key = args.take("key", str)
        args.done()
        actions = await self.peers.step(Delete(key))
        [(result,)] = [a.results for a in actions if isinstance(a, Published)]
        if isinstance(result, Exception):
            raise result
        return record_view(result)

    async def peer_list(self, args: Args) -> list[dict[str, Any]]:
        args.done()
        return await self.peers.peer_list()

    async def sync(self, args: Args) -> dict[str, Any]:
        """How far this node is from holding what its peers offer; ``start``: reconcile now."""
        start = args.take("start", bool, False)
        args.done()
        if start:
            await self.peers.step(SyncNow())
        sessions = [p for p in await self.peers.peer_list() if p["state"] == "open"]
        return {**sync_summary(sessions, self.peers.refused), "sessions": sessions}

    async def address_list(self, args: Args) -> list[dict[str, Any]]:
        args.done()
        return await self.peers.address_list()

    async def ban_list(self, args: Args) -> list[dict[str, Any]]:
        args.done()
        return await self.peers.ban_list()

    async def unban(self, args: Args) -> bool:
        node = args.take_node_id("node_id")
        args.done()
        if not await self.peers.unban(node):
            raise ApiError("not-found", "that node is not banned")
        return True

    async def config(self, args: Args) -> dict[str, Any]:
        args.done()
        reloader = self._reloader()
        effective = reloader.effective
        rows = describe(effective)
        for row in rows:
            if (waiting := reloader.at_restart.get(row["key"])) is not None:
                row["at_restart"] = waiting
        answer: dict[str, Any] = {
            "file": str(effective.config_file),
            "files": [str(path) for path in effective.files],
            "settings": rows,
        }
        if (problem := await reloader.check()) is not None:
            answer["load_error"] = problem
        return answer

    async def reload(self, args: Args) -> dict[str, Any]:
        args.done()
        try:
            reloaded = await self._reloader().reload()
        except ReloadError as exc:
            raise ApiError("config-error", str(exc)) from None
        return {"changed": list(reloaded.changed), "restart_needed": list(reloaded.restart_needed)}

    def _reloader(self) -> Reloader:
        if self.reloader is None:
            raise ApiError("unavailable", "this node was started without a configuration to read")
        return self.reloader

    async def get(self, args: Args) -> dict[str, Any]:
        key = args.take("key", str)
        author = args.take_author() or self.node.identity.public_key
        args.done()
        record = await self.store_thread.run(self._get, author, key)
        if record is None or record.is_tombstone:
            whose = (
                "" if author == self.node.identity.public_key else f" by {encode_node_id(author)}"
            )
            state = "was deleted" if record is not None else "not found"
            raise ApiError("not-found", f"{key}{whose}: {state}")
        return record_view(record)

    def _get(self, author: bytes, key: str) -> Record | None:
        return self.node.store.get(author, key, self.wall_clock_ms())

    async def query(self, args: Args) -> dict[str, Any]:
        prefix = args.take("prefix", str, "")
        author = args.take_author()
        limit = args.take("limit", int, DEFAULT_QUERY_LIMIT)
        min_seq = args.take("min_seq", int, 0)
        deleted = args.take("include_deleted", bool, False)
        args.done()
        if not 1 <= limit <= MAX_QUERY_LIMIT:
            raise ApiError("invalid-params", f"limit is 1 to {MAX_QUERY_LIMIT}")
        records = await self.store_thread.run(
            self._query, prefix, author, min_seq, limit + 1, deleted
        )
        return {
            "records": [record_view(r) for r in records[:limit]],
            "more": len(records) > limit,
        }

    def _query(
        self, prefix: str, author: bytes | None, min_seq: int, limit: int, deleted: bool
    ) -> list[Record]:
        return self.node.store.query(
            now_ms=self.wall_clock_ms(),
            author=author,
            prefix=prefix,
            min_seq=min_seq,
            limit=limit,
            include_tombstones=deleted,
        )

    async def export(self, args: Args) -> dict[str, Any]:
        """A page of the served set's exact bytes, tombstones too, for ``meshnode export``."""
        prefix = args.take("prefix", str, "")
        author = args.take_author()
        after = args.take("after", bytes, None)
        limit = args.take("limit", int, DEFAULT_EXPORT_LIMIT)
        args.done()
        if not 1 <= limit <= MAX_EXPORT_LIMIT:
            raise ApiError("invalid-params", f"limit is 1 to {MAX_EXPORT_LIMIT}")
        start = None if after is None else _export_cursor(after)
        raws, following = await self.store_thread.run(
            self._export_page, prefix, author, start, limit
        )
        cursor = None if following is None else following[0].encode() + following[1]
        return {"records": raws, "next": cursor}

    def _export_page(
        self, prefix: str, author: bytes | None, after: tuple[str, bytes] | None, limit: int
    ) -> tuple[list[bytes], tuple[str, bytes] | None]:
        return self.node.store.served_page(
            now_ms=self.wall_clock_ms(),
            prefix=prefix,
            author=author,
            after=after,
            limit=limit,
            max_bytes=EXPORT_PAGE_BYTES,
        )

    async def import_records(self, args: Args) -> dict[str, Any]:
        """Verify and store records as if a peer sent them; one verdict per record, in order."""
        raws = args.take("records", list)
        args.done()
        if len(raws) > MAX_IMPORT_RECORDS:
            raise ApiError("invalid-params", f"at most {MAX_IMPORT_RECORDS} records per import")
        if not all(type(raw) is bytes for raw in raws):
            raise ApiError("invalid-params", "records is an array of bin, one record each")
        if not raws:
            return {"verdicts": []}
        actions = await self.peers.step(Ingest(raws))
        [verdicts] = [a.verdicts for a in actions if isinstance(a, Imported)]
        return {"verdicts": list(verdicts)}


def _export_cursor(after: bytes) -> tuple[str, bytes]:
    """The (key, author) an ``export`` cursor names: the key's UTF-8, then the author."""
    try:
        key = after[:-AUTHOR_BYTES].decode()
    except UnicodeDecodeError:
        key = ""
    if not key:
        raise ApiError("invalid-params", "after is not a cursor an export page gave")
    return key, after[-AUTHOR_BYTES:]
