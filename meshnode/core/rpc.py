"""msgpack-RPC framing for the control socket, as a sans-IO codec.

The messages are those of the public msgpack-RPC spec
(github.com/msgpack-rpc/msgpack-rpc/blob/master/spec.md)::

    request       [0, msgid, method, params]
    response      [1, msgid, error, result]
    notification  [2, method, params]

sent back to back on a byte stream with no other framing. meshnode's methods
take ``params`` as an empty array or an array holding one map of named
arguments, and errors are maps ``{"code": str, "message": str}``; see
``protocol/control.md``.

``RpcDecoder`` turns received bytes into messages and never buffers more than
``max_message_bytes`` of one: a message that does not fit raises
``RpcProtocolError``.
"""

from __future__ import annotations

import msgpack

from meshnode.core.msgscan import ScanError, ValueStream

# ``typing`` is for the type checker only: importing it costs the CLI ~5 ms of start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

REQUEST = 0
RESPONSE = 1
NOTIFICATION = 2
MAX_MSGID = 2**32 - 1


class RpcProtocolError(Exception):
    """The peer sent bytes that are not a msgpack-RPC message we accept."""


class _Message:
    """A small immutable value with equality and a repr.

    Plain classes rather than dataclasses or NamedTuples: the CLI imports this
    module, and ``dataclasses`` or ``typing`` alone would add 5-15 ms to its start.
    """

    __slots__: tuple[str, ...] = ()
    _names: tuple[str, ...] = ()  # the fields, in the constructor's order

    def _fields(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._names)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, _Message)
            and type(other) is type(self)
            and (self._fields() == other._fields())
        )

    def __hash__(self) -> int:
        return hash((type(self).__name__, repr(self._fields())))

    def __repr__(self) -> str:
        args = ", ".join(f"{n}={v!r}" for n, v in zip(self._names, self._fields(), strict=True))
        return f"{type(self).__name__}({args})"


class Request(_Message):
    __slots__ = ("method", "msgid", "params")
    _names = ("msgid", "method", "params")

    def __init__(self, msgid: int, method: str, params: list[Any]) -> None:
        self.msgid = msgid
        self.method = method
        self.params = params


class Response(_Message):
    __slots__ = ("error", "msgid", "result")
    _names = ("msgid", "error", "result")

    def __init__(self, msgid: int, error: Any, result: Any) -> None:
        self.msgid = msgid
        self.error = error
        self.result = result


class Notification(_Message):
    __slots__ = ("method", "params")
    _names = ("method", "params")

    def __init__(self, method: str, params: list[Any]) -> None:
        self.method = method
        self.params = params


Message = Request | Response | Notification


def _pack(message: list[Any]) -> bytes:
    return msgpack.packb(message, use_bin_type=True)  # type: ignore[no-any-return]


def encode_request(msgid: int, method: str, params: list[Any]) -> bytes:
    return _pack([REQUEST, msgid, method, params])


def encode_response(msgid: int, error: Any, result: Any) -> bytes:
    return _pack([RESPONSE, msgid, error, result])


def encode_notification(method: str, params: list[Any]) -> bytes:
    return _pack([NOTIFICATION, method, params])


def error_map(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


class RpcDecoder:
    """Bytes in, messages out, each within hard bounds (see ``msgscan``).

    ``max_message_bytes`` bounds one message however it arrives; depth and
    element counts bound what decoding it may allocate. This is the daemon's
    decoder for what clients send.
    """

    def __init__(
        self, max_message_bytes: int, *, max_depth: int = 24, max_items: int = 65536
    ) -> None:
        self._values = ValueStream(
            max_bytes=max_message_bytes,
            max_depth=max_depth,
            max_items=max_items,
            strict_map_key=False,
        )

    def feed(self, data: bytes) -> list[Message]:
        """Take received bytes; return every message now complete."""
        try:
            values = self._values.feed(data)
        except ScanError as exc:
            raise RpcProtocolError(str(exc)) from None
        return [_classify(value) for value in values]


class TrustingRpcDecoder:
    """A client's decoder for its own daemon's answers: msgpack's C unpacker, no scan.

    A client trusts the daemon it drives; scanning every answer in Python would
    cost it more CPU than the daemon spends producing it. Its buffer is still
    capped.
    """

    def __init__(self, max_buffer_bytes: int) -> None:
        self._unpacker = msgpack.Unpacker(
            raw=False, strict_map_key=False, max_buffer_size=max_buffer_bytes
        )

    def feed(self, data: bytes) -> list[Message]:
        try:
            self._unpacker.feed(data)
            return [_classify(value) for value in self._unpacker]
        except RpcProtocolError:
            raise
        except Exception as exc:  # msgpack reports bad bytes with many types
            raise RpcProtocolError(f"malformed msgpack: {exc}") from None


def _classify(obj: Any) -> Message:
    if type(obj) is not list or not obj or type(obj[0]) is not int:
        raise RpcProtocolError("a message is an array starting with its type 0, 1 or 2")
    kind = obj[0]
    if kind == REQUEST and len(obj) == 4:
        _, msgid, method, params = obj
        if type(msgid) is int and 0 <= msgid <= MAX_MSGID and type(method) is str:
            if type(params) is not list:
                raise RpcProtocolError("request params must be an array")
            return Request(msgid, method, params)
    elif kind == RESPONSE and len(obj) == 4:
        _, msgid, error, result = obj
        if type(msgid) is int:
            return Response(msgid, error, result)
    elif kind == NOTIFICATION and len(obj) == 3:
        _, method, params = obj
        if type(method) is str and type(params) is list:
            return Notification(method, params)
    raise RpcProtocolError("not a well-formed request, response or notification")
