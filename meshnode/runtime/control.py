"""The control socket: a Unix stream socket speaking msgpack-RPC.

One task per connection reads requests and answers them in order; ``watch``
adds a forwarding task that sends notifications. The socket file is created
with mode 0600 (only the daemon's user may drive the node). Anything a client
sends that is not a request we accept gets an ``error`` notification and the
connection is closed; the daemon itself never fails because of a client.

No client can hold the daemon's attention forever (protocol/control.md,
Transport). There are ``MAX_CLIENTS`` regular slots and one reserved slot, so
that ``meshnode status`` gets in however many clients sit idle or watch:

- a connection with no request in progress and no watch for ``IDLE_TIMEOUT``
  (``RESERVED_IDLE_TIMEOUT`` on the reserved slot) is sent an ``idle-timeout``
  error and closed; so is one whose watch overflowed with nothing left to do;
- a newcomer finding every slot taken takes the slot of the longest-idle
  connection, which is closed the same way; with none idle it is told ``busy``;
- the reserved connection may not ``watch`` unless it can move to a regular
  slot (evicting an idle one if need be): watchers are what fill the slots;
- every send has a timeout: a client that takes nothing for ``SEND_TIMEOUT``
  is dropped, so a client that stopped reading cannot keep its slot.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import socket as stdlib_socket
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import trio
from msgspec import Struct

from meshnode.core.rpc import (
    Message,
    Request,
    RpcDecoder,
    RpcProtocolError,
    encode_notification,
    encode_response,
    error_map,
)
from meshnode.runtime.api import Api, ApiError, Args, record_view
from meshnode.runtime.publisher import Ticket
from meshnode.runtime.watch import Subscription

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 1024 * 1024
MAX_CLIENTS = 64
RECEIVE_CHUNK = 65536
SEND_CHUNK = 65536
IDLE_TIMEOUT = 60.0
RESERVED_IDLE_TIMEOUT = 3.0
SEND_TIMEOUT = 10.0
FAREWELL_TIMEOUT = 1.0
EVICTION_GRACE = 1.0  # the reserved connection is not evicted sooner after its last answer


class Limits(Struct, frozen=True):
    """How many clients may connect, and how long one may idle or take nothing."""

    max_clients: int = MAX_CLIENTS
    idle_timeout: float = IDLE_TIMEOUT
    reserved_idle_timeout: float = RESERVED_IDLE_TIMEOUT
    send_timeout: float = SEND_TIMEOUT


class ControlSocketError(Exception):
    """The control socket cannot be created; the message says why."""


class ClientStalled(Exception):
    """A client took nothing we sent for the send timeout; its connection is dropped."""


async def bind(path: Path) -> trio.SocketListener:
    """Bind the control socket at ``path``, replacing a stale one.

    Its mode is 0600, or 0660 in the directory systemd made for the service
    (``$RUNTIME_DIRECTORY``, the system unit's ``RuntimeDirectory=``, 0750, group
    ``meshnode``) when that lets the group in: that is how members of the group
    query the system node without sudo. Anywhere else (a 0755 home, /tmp) the
    group of the node's user is no one the node chose to trust.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        if await _in_use(path):
            raise ControlSocketError(
                f"the control socket {path} is in use by another daemon; give this one"
                " its own --socket"
            )
        path.unlink()
    sock = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        await sock.bind(os.fspath(path))
    except OSError as exc:
        sock.close()
        raise ControlSocketError(f"cannot create the control socket {path}: {exc}") from exc
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o660 if _group_may_connect(path) else 0o600)
    sock.listen(64)
    return trio.SocketListener(sock)


def _group_may_connect(path: Path) -> bool:
    service_dirs = os.environ.get("RUNTIME_DIRECTORY", "").split(":")
    return str(path.parent) in service_dirs and bool(path.parent.stat().st_mode & stat.S_IXGRP)


async def _in_use(path: Path) -> bool:
    probe = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    try:
        with trio.move_on_after(1):
            await probe.connect(os.fspath(path))
            return True
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK):
            raise ControlSocketError(f"cannot use the control socket {path}: {exc}") from exc
    finally:
        probe.close()
    return False


class ControlServer:
    def __init__(
        self,
        api: Api,
        listener: trio.abc.Listener[trio.SocketStream],
        limits: Limits | None = None,
    ) -> None:
        self.api = api
        self.listener = listener
        self.limits = limits or Limits()
        self.slots = Slots(self.limits.max_clients)

    async def serve(self) -> None:
        async with self.listener, trio.open_nursery() as nursery:
            while True:
                try:
                    stream = await self.listener.accept()
                except OSError as exc:
                    log.warning("event=control_accept_failed error=%r", exc.strerror or str(exc))
                    await trio.sleep(0.1)
                    continue
                nursery.start_soon(self.handle, stream)

    async def handle(self, stream: trio.abc.Stream) -> None:
        """Serve one client connection until it ends, or tell it there is no room."""
        async with stream:
            connection = Connection(self.api, stream, self.limits, self.slots)
            if not self.slots.admit(connection):
                await connection.farewell(
                    "busy",
                    f"the daemon has too many control clients ({len(self.slots)}), all of them"
                    " watching or in a request; stop a watcher or try again shortly",
                )
                return
            self.api.clients = len(self.slots)
            try:
                await connection.run()
            except* (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the client went away; nothing to tell it
            except* ClientStalled as group:
                log.info("event=control_client_dropped error=%r", str(group.exceptions[0]))
            except* Exception:
                log.exception("a control connection failed; the daemon carries on")
            finally:
                self.slots.release(connection)
                self.api.clients = len(self.slots)


class Slots:
    """Which connections hold the regular slots and which one the reserved slot.

    A newcomer gets a free regular slot, else the reserved one, else the slot
    of the longest-idle connection, which is evicted (it closes at once, see
    ``Connection.evict``). With every connection watching or in a request
    there is no room, and the newcomer is refused.
    """

    def __init__(self, max_regular: int) -> None:
        self.max_regular = max_regular
        self.regular: set[Connection] = set()
        self.reserved: Connection | None = None

    def __len__(self) -> int:
        return len(self.regular) + (self.reserved is not None)

    def admit(self, newcomer: Connection) -> bool:
        if len(self.regular) < self.max_regular:
            self.regular.add(newcomer)
        elif self.reserved is None:
            self._reserve(newcomer)
        else:
            victim = _longest_idle([*self.regular, self.reserved])
            if victim is None:
                return False
            if victim is self.reserved:
                self._reserve(newcomer)
            else:
                self.regular.remove(victim)
                self.regular.add(newcomer)
            victim.evict()
        return True

    def promote(self, connection: Connection) -> bool:
        """Give the reserved connection a regular slot, evicting an idle one if need be."""
        if connection is not self.reserved:
            return True
        if len(self.regular) >= self.max_regular:
            victim = _longest_idle(self.regular)
            if victim is None:
                return False
            self.regular.remove(victim)
            victim.evict()
        self.reserved = None
        connection.reserved = False
        self.regular.add(connection)
        return True

    def release(self, connection: Connection) -> None:
        self.regular.discard(connection)
        if self.reserved is connection:
            self.reserved = None

    def _reserve(self, connection: Connection) -> None:
        self.reserved = connection
        connection.reserved = True


def _longest_idle(connections: Iterable[Connection]) -> Connection | None:
    """The connection idle longest; the reserved one only once idle for ``EVICTION_GRACE``.

    The grace keeps the reserved slot's newcomer (the CLI's ``status``) from
    being evicted before its first request arrives, by another client that
    connects meanwhile.
    """
    since = trio.current_time() - EVICTION_GRACE
    idle = (c for c in connections if c.idle and (not c.reserved or c.idle_since <= since))
    return min(idle, key=lambda c: c.idle_since, default=None)


class Connection:
    def __init__(self, api: Api, stream: trio.abc.Stream, limits: Limits, slots: Slots) -> None:
        self.api = api
        self.stream = stream
        self.limits = limits
        self.slots = slots
        self.send_lock = trio.Lock()
        self.watches: dict[int, Subscription] = {}
        self.reserved = False
        self.idle_since = trio.current_time()  # when the last answers went out
        self._evicted = False
        self._watch_overflowed = False  # and left nothing to do: close at once
        self._waiting: trio.CancelScope | None = None  # set while waiting for a request

    @property
    def idle(self) -> bool:
        """Waiting for a request with no watch: what times out, and what may be evicted."""
        return self._waiting is not None and not self.watches and not self._evicted

    @property
    def idle_timeout(self) -> float:
        return self.limits.reserved_idle_timeout if self.reserved else self.limits.idle_timeout

    def evict(self) -> None:
        """Close this connection when it next waits for a request (now, if it is): its slot
        was given to a newcomer. A request that arrived meanwhile is still answered."""
        self._evicted = True
        if self._waiting is not None:
            self._waiting.cancel()

    async def send(self, data: bytes, timeout: float | None = None) -> None:
        """Send ``data``, or raise ``ClientStalled`` if the client takes nothing for ``timeout``.

        Each chunk has the timeout, and so has waiting for the lock, so a client
        that stopped reading is dropped even while another task's send is stuck.
        """
        limit = self.limits.send_timeout if timeout is None else timeout
        with _stalls_after(limit):
            await self.send_lock.acquire()
        try:
            view = memoryview(data)
            for start in range(0, len(view), SEND_CHUNK):
                with _stalls_after(limit):
                    await self.stream.send_all(view[start : start + SEND_CHUNK])
        finally:
            self.send_lock.release()

    async def farewell(self, code: str, message: str) -> None:
        """Tell the client why its connection closes, if it takes the notice at once."""
        notice = encode_notification("error", [error_map(code, message)])
        with contextlib.suppress(ClientStalled, trio.BrokenResourceError, trio.ClosedResourceError):
            await self.send(notice, FAREWELL_TIMEOUT)

    async def run(self) -> None:
        decoder = RpcDecoder(MAX_REQUEST_BYTES)
        async with trio.open_nursery() as nursery:
            try:
                await self._requests(decoder, nursery)
            finally:
                for sub in self.watches.values():
                    self.api.hub.unsubscribe(sub)
                nursery.cancel_scope.cancel()

    async def _requests(self, decoder: RpcDecoder, nursery: trio.Nursery) -> None:
        while (data := await self._receive()) is not None:
            try:
                requests = _requests_in(decoder.feed(data))
            except RpcProtocolError as exc:
                log.info("event=control_closed why=%r", str(exc))
                await self.farewell("bad-request", str(exc))
                return
            if requests:
                await self._answer_all(requests, nursery)
                self.idle_since = trio.current_time()
                self._watch_overflowed = False

    async def _receive(self) -> bytes | None:
        """The client's next bytes; None once it closed, or once this connection must
        close for idling (the client is told why).

        Bytes that do not complete a request do not reset the idle clock, so a
        client trickling a request byte by byte cannot hold its slot either.
        """
        while (reason := self._idle_reason()) is None:
            deadline = math.inf if self.watches else self.idle_since + self.idle_timeout
            with trio.CancelScope(deadline=deadline) as scope:
                self._waiting = scope
                try:
                    return bytes(await self.stream.receive_some(RECEIVE_CHUNK)) or None
                finally:
                    self._waiting = None
        await self.farewell("idle-timeout", reason)
        return None

    def _idle_reason(self) -> str | None:
        """Why this connection, between requests, must close now; None if it may stay."""
        if self._evicted:
            return "closed this idle connection to make room for another client; connect again"
        if self._watch_overflowed:
            return "closed: the watch fell behind and no other watch or request was left"
        if not self.watches and trio.current_time() >= self.idle_since + self.idle_timeout:
            return f"closed after {self.idle_timeout:g} s with no request and no watch"
        return None

    async def _answer_all(self, requests: list[Request], nursery: trio.Nursery) -> None:
        """Answer pipelined requests in order; their publishes are queued at once, in order.

        So a client that sends many publishes without waiting gets them stored in
        a few group commits, and still sees every answer in request order.
        """
        tickets: list[Ticket | ApiError | None] = []
        for request in requests:
            ticket: Ticket | ApiError | None = None
            if request.method == "publish":
                try:
                    ticket = self.api.submit_publish(request.params)
                except ApiError as exc:
                    ticket = exc
            tickets.append(ticket)
        out = bytearray()
        for request, ticket in zip(requests, tickets, strict=True):
            if out and not (isinstance(ticket, Ticket) and ticket.done.is_set()):
                await self.send(bytes(out))  # don't hold answers back while waiting
                out.clear()
            out += await self._response(request, ticket, nursery)
        await self.send(bytes(out))

    async def _response(
        self, request: Request, ticket: Ticket | ApiError | None, nursery: trio.Nursery
    ) -> bytes:
        try:
            if isinstance(ticket, ApiError):
                raise ticket
            if ticket is not None:
                result: Any = await self.api.finish_publish(ticket)
            elif request.method == "watch":
                result = self._watch(Args(request.params), nursery)
            elif request.method == "unwatch":
                result = self._unwatch(Args(request.params))
            else:
                result = await self.api.call(request.method, request.params)
        except ApiError as exc:
            return encode_response(request.msgid, error_map(exc.code, exc.message), None)
        except Exception:
            log.exception("internal error in control method %r", request.method)
            error = error_map("internal", "internal error; see the daemon's log")
            return encode_response(request.msgid, error, None)
        return encode_response(request.msgid, None, result)

    def _watch(self, args: Args, nursery: trio.Nursery) -> dict[str, int]:
        prefix = args.take("prefix", str, "")
        author = args.take_author()
        args.done()
        if not self.slots.promote(self):
            raise ApiError(
                "busy",
                f"the daemon has too many control clients ({len(self.slots)}) to start a"
                " watch; this connection has the reserved slot, which may not watch",
            )
        sub = self.api.hub.subscribe(prefix, author)
        self.watches[sub.id] = sub
        nursery.start_soon(self._forward, sub)
        return {"watch": sub.id}

    def _unwatch(self, args: Args) -> bool:
        watch_id = args.take("watch", int)
        args.done()
        sub = self.watches.pop(watch_id, None)
        if sub is None:
            raise ApiError("not-found", f"no watch {watch_id} on this connection")
        self.api.hub.unsubscribe(sub)
        return True

    async def _forward(self, sub: Subscription) -> None:
        async with sub.receive:  # closing it drops whatever is still buffered
            async for record in sub.receive:
                if sub.overflowed:
                    break
                event = "delete" if record.is_tombstone else "put"
                params = [{"watch": sub.id, "event": event, "record": record_view(record)}]
                await self.send(encode_notification("watch", params))
        self.watches.pop(sub.id, None)
        if sub.overflowed:
            end = {"watch": sub.id, **error_map("overflow", "the watcher fell behind; watch again")}
            await self.send(encode_notification("watch-end", [end]))
            self._close_if_nothing_left()

    def _close_if_nothing_left(self) -> None:
        """After an overflow, free the slot of a connection with no other watch and no
        request in progress: a watcher that fell behind has usually stopped reading."""
        if self._waiting is not None and not self.watches:
            self._watch_overflowed = True
            self._waiting.cancel()


def _requests_in(messages: list[Message]) -> list[Request]:
    """The decoded messages, which must all be requests: anything else is a protocol error."""
    requests = [message for message in messages if isinstance(message, Request)]
    if len(requests) != len(messages):
        raise RpcProtocolError("clients send requests only")
    return requests


@contextlib.contextmanager
def _stalls_after(seconds: float) -> Iterator[None]:
    """Raise ``ClientStalled`` if the block takes longer than ``seconds``."""
    with trio.move_on_after(seconds) as scope:
        yield
    if scope.cancelled_caught:
        raise ClientStalled(f"it took nothing we sent for {seconds:g} s")
