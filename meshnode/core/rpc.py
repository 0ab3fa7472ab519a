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

from typing import Any, NamedTuple

import msgpack

from meshnode.core.msgscan import ScanError, ValueStream

REQUEST = 0
RESPONSE = 1
NOTIFICATION = 2
MAX_MSGID = 2**32 - 1


class RpcProtocolError(Exception):
    """The peer sent bytes that are not a msgpack-RPC message we accept."""


# NamedTuples rather than dataclasses: the CLI imports this module, and
# ``dataclasses`` alone costs it 10-15 ms of start-up.
class Request(NamedTuple):
    msgid: int
    method: str
    params: list[Any]


class Response(NamedTuple):
    msgid: int
    error: Any
    result: Any


class Notification(NamedTuple):
    method: str
    params: list[Any]


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
