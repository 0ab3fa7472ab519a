"""The control socket: a Unix stream socket speaking msgpack-RPC.

One task per connection reads requests and answers them in order; ``watch``
adds a forwarding task that sends notifications. The socket file is created
with mode 0600 (only the daemon's user may drive the node). Anything a client
sends that is not a request we accept gets an ``error`` notification and the
connection is closed; the daemon itself never fails because of a client.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket as stdlib_socket
from pathlib import Path
from typing import Any

import trio

from meshnode.core.rpc import (
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


class ControlSocketError(Exception):
    """The control socket cannot be created; the message says why."""


async def bind(path: Path) -> trio.SocketListener:
    """Bind the control socket at ``path`` with mode 0600, replacing a stale one."""
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
    os.chmod(path, 0o600)
    sock.listen(64)
    return trio.SocketListener(sock)


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
    def __init__(self, api: Api, listener: trio.SocketListener) -> None:
        self.api = api
        self.listener = listener

    async def serve(self) -> None:
        async with self.listener, trio.open_nursery() as nursery:
            while True:
                try:
                    stream = await self.listener.accept()
                except OSError as exc:
                    log.warning("cannot accept a control connection: %s", exc.strerror or exc)
                    await trio.sleep(0.1)
                    continue
                nursery.start_soon(self._connection, stream)

    async def _connection(self, stream: trio.SocketStream) -> None:
        async with stream:
            if self.api.clients >= MAX_CLIENTS:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await stream.send_all(
                        encode_notification("error", [error_map("busy", "too many clients")])
                    )
                return
            self.api.clients += 1
            try:
                await Connection(self.api, stream).run()
            except* (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the client went away; nothing to tell it
            except* Exception:
                log.exception("a control connection failed; the daemon carries on")
            finally:
                self.api.clients -= 1


class Connection:
    def __init__(self, api: Api, stream: trio.SocketStream) -> None:
        self.api = api
        self.stream = stream
        self.send_lock = trio.Lock()
        self.watches: dict[int, Subscription] = {}

    async def send(self, data: bytes) -> None:
        async with self.send_lock:
            await self.stream.send_all(data)

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
        while True:
            data = await self.stream.receive_some(RECEIVE_CHUNK)
            if not data:
                return
            requests: list[Request] = []
            try:
                for message in decoder.feed(data):
                    if not isinstance(message, Request):
                        raise RpcProtocolError("clients send requests only")
                    requests.append(message)
            except RpcProtocolError as exc:
                log.info("closing a control connection: %s", exc)
                await self.send(encode_notification("error", [error_map("bad-request", str(exc))]))
                return
            await self._answer_all(requests, nursery)

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
